#!/usr/bin/env bash
# Times bench/fused_micro.py at two commits, each in its own process, alternating over rounds, so that a
# change to the layer code can be shown to cost nothing (or what it costs) on a shared, noisy machine.
#
#   bash bench/ab_micro.sh BASE_REV [NEW_REV=HEAD] [ROUNDS=3]      e.g. bash bench/ab_micro.sh c4ce8dd
#
# Each round runs `fused_micro.py --configs S M --mode train` and `--mode fwd` at BASE, then at NEW, and the
# summary gives each (config, mode, impl)'s median over the rounds and NEW / BASE (below 1: NEW is faster).
set -euo pipefail
base=$1; new=${2:-HEAD}; rounds=${3:-3}
py=${PYTHON:-python}
top=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$work/base" >/dev/null 2>&1 || true;
      git -C "$top" worktree remove --force "$work/new" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$top" worktree add -q --detach "$work/base" "$base"
git -C "$top" worktree add -q --detach "$work/new" "$new"
log=$work/log
for r in $(seq "$rounds"); do
  for side in base new; do
    for mode in train fwd; do
      # PYTHONPATH puts that side's jaxlstm ahead of any installed one; run from $work so the cwd adds nothing.
      line=$(cd "$work" && PYTHONPATH="$work/$side" "$py" "$work/$side/bench/fused_micro.py" --configs S M \
             --mode "$mode" --steps 10 | tr '\n' '|')
      echo "round $r $side $mode: $line" | tee -a "$log"
    done
  done
done
"$py" - "$log" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
  m = re.match(r"round \d+ (base|new) (\w+): (.*)", line)
  for part in m.group(3).split("|"):
    p = re.match(r"(\w+) \w+ unroll=\d+: fused\s+([\d.]+) ms\s+reference\s+([\d.]+) ms", part)
    if p:
      for impl, ms in (("fused", p.group(2)), ("reference", p.group(3))):
        runs.setdefault((p.group(1), m.group(2), impl), {}).setdefault(m.group(1), []).append(float(ms))
print("| config | mode | impl | base median (ms) | new median (ms) | new / base |")
print("|---|---|---|---:|---:|---:|")
for (cfg, mode, impl), sides in sorted(runs.items()):
  b, n = statistics.median(sides["base"]), statistics.median(sides["new"])
  print(f"| {cfg} | {mode} | {impl} | {b:.1f} | {n:.1f} | {n / b:.3f} |")
PY
