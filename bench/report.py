"""The report: statistics of the pooled step times (median, IQR, ratios to the reference peer, GFLOP/s), the
machine's description, and the Markdown report with the raw run beside it as JSON."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess

from configs import (
  CEILING_N,
  GPU_CEILING_N,
  NUM_CLASSES,
  Config,
  param_count,
  step_flops,
)
from peers import REFERENCE_PEER


def quartiles(xs: list) -> tuple:
  """(q1, median, q3) of a sample."""
  if len(xs) < 2:
    return xs[0], xs[0], xs[0]
  q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
  return q1, q2, q3


def fmt_ms(seconds: float) -> str:
  ms = seconds * 1e3
  return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def job_table(
  name: str, cfg: Config, mode: str, pooled: dict, peers: list, rounds: int, device: str = "cpu", cell: str = "lstm"
) -> list:
  """Markdown lines of one config's table for one mode."""
  ceiling = statistics.median(pooled["ceiling"]["jax"] or [float("nan")])
  torch_ceiling = pooled["ceiling"]["torch"]
  expected = param_count(cfg, cell)
  flops = step_flops(cfg, mode, cell)
  ref = pooled.get(REFERENCE_PEER, {})
  ref_times = ref[mode]["times_s"] if ref.get("status") == "ok" else []
  ref_median = statistics.median(ref_times) if ref_times else None
  title = "training step (fwd + bwd + Adam)" if mode == "train" else "inference (forward only)"
  lines = [
    f"### {name} {mode}: {title} — B={cfg.B}, T={cfg.T}, in={cfg.I}, H={cfg.H}, layers={cfg.layers}, "
    f"Dense({NUM_CLASSES})",
    "",
    f"Model: {expected:,d} parameters; {flops / 1e9:.2f} GFLOP per step; {rounds} round(s). "
    f"Matmul ceiling (jitted JAX {GPU_CEILING_N if device == 'gpu' else CEILING_N}² f32): "
    f"**{ceiling:.1f} GFLOP/s**"
    + (f" (PyTorch: {statistics.median(torch_ceiling):.1f} GFLOP/s)" if torch_ceiling else "")
    + ".",
    "",
    (
      "| peer | params | first step (s) | median (ms) | IQR (ms) | min–max (ms) | n | GFLOP/s | % of ceiling "
      f"| page faults / step | × {REFERENCE_PEER} time |"
    ),
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for peer in peers:
    if pooled[peer]["status"] != "ok":
      word = "skipped" if pooled[peer]["status"] == "missing" else "FAILED"
      lines.append(f"| {peer} | {word}: {pooled[peer]['error']} | | | | | | | | | |")
      continue
    e = pooled[peer][mode]
    q1, med, q3 = quartiles(e["times_s"])
    gflops = flops / med / 1e9
    diff = e["params"] - expected
    params = f"{e['params']:,d}" + (" ✓" if diff == 0 else f" ({diff:+,d})")
    firsts = "/".join(f"{f:.2f}" for f in e["first_s"])
    ratio = f"{med / ref_median:.2f}" if ref_median else "—"
    faults = f"{statistics.median(e['faults']):,.0f}" if e.get("faults") else "—"  # runs saved before the column
    lines.append(
      f"| {peer} | {params} | {firsts} | {fmt_ms(med)} | {fmt_ms(q1)}–{fmt_ms(q3)} | "
      f"{fmt_ms(min(e['times_s']))}–{fmt_ms(max(e['times_s']))} | {len(e['times_s'])} | "
      f"{gflops:.1f} | {100 * gflops / ceiling:.1f}% | {faults} | {ratio} |"
    )
  return lines + [""]


def gpu_name() -> str:
  """The GPU's name, memory and driver from ``nvidia-smi``, or why they are unknown."""
  try:
    out = subprocess.run(
      ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=60,
      check=False,
    ).stdout.strip()
  except (OSError, subprocess.TimeoutExpired) as e:
    return f"unknown ({e})"
  return out.replace("\n", "; ") or "unknown (nvidia-smi printed nothing)"


def git_commit() -> str:
  """The checkout's short commit, with ``+changes`` if the tree differs from it; ``unknown`` outside git."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    run = lambda *a: subprocess.run(["git", *a], cwd=here, capture_output=True, text=True, check=True).stdout  # noqa: E731
    return run("rev-parse", "--short", "HEAD").strip() + (
      " +changes" if run("status", "--porcelain", "-uno").strip() else ""
    )
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def machine_lines(device: str = "cpu") -> list:
  """Date, CPU (and GPU), cores, load and library versions."""
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  versions = []
  for dist in ("jax", "jaxlib", "optax", "flax", "keras", "torch", "numpy"):
    try:
      versions.append(f"{dist} {importlib.metadata.version(dist)}")
    except importlib.metadata.PackageNotFoundError:
      versions.append(f"{dist} (not installed)")
  load = " ".join(f"{x:.2f}" for x in os.getloadavg())
  return [
    f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
    *([f"- GPU: {gpu_name()}"] if device == "gpu" else []),
    (
      f"- Machine: {cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, "
      f"load average at start {load}"
    ),
    f"- Versions: {', '.join(versions)}",
    f"- Commit: {git_commit()}",
  ]


def median_of(pooled: dict, peer: str, mode: str) -> float | None:
  """A peer's pooled median step time, or None if it did not run."""
  e = pooled.get(peer)
  times = e[mode]["times_s"] if e and e["status"] == "ok" else []
  return statistics.median(times) if times else None


def summary_table(jobs: list) -> list:
  """Markdown lines: every peer's median time over the reference peer's, one column per config and mode."""
  cols = [(job, mode) for job in jobs for mode in job["modes"]]
  lines = [
    f"## Summary: median step time relative to {REFERENCE_PEER} (> 1: {REFERENCE_PEER} is faster)",
    "",
    "| peer | " + " | ".join(f"{job['name']} {mode}" for job, mode in cols) + " |",
    "|---|" + "---:|" * len(cols),
  ]
  for peer in jobs[0]["peers"]:
    cells = []
    for job, mode in cols:
      ref, med = median_of(job["pooled"], REFERENCE_PEER, mode), median_of(job["pooled"], peer, mode)
      if peer == REFERENCE_PEER and med is not None:
        cells.append(f"1 ({fmt_ms(med)} ms)")
      elif med is None:
        cells.append(job["pooled"][peer]["status"])
      else:
        cells.append(f"{med / ref:.2f}" if ref else "—")
    lines.append(f"| {peer} | " + " | ".join(cells) + " |")
  return lines + [""]


GPU_NOTE = (
  "GPU run: every peer on the one GPU, each framework at its default float32 matmul precision "
  "(JAX's default lets XLA and cuDNN use TF32 on Ampere and newer cards; PyTorch's default keeps "
  'full float32 in matmuls). `jaxlstm-cudnn` is `jaxlstm.stack(..., impl="cudnn")`, one cuDNN call '
  "per layer; `jax-cudnn` is `jax.experimental.rnn.lstm` with all layers in one call; both, like "
  "PyTorch, carry a second bias vector per layer in cuDNN's layout (zero and frozen in jaxlstm's "
  "case, trained in the others). Timed calls wait for the GPU (`block_until_ready`, "
  "`torch.cuda.synchronize`)."
)


def report(run: dict) -> str:
  """The whole Markdown report of a run (see ``bench.main`` for its fields)."""
  lines = [
    "# jaxlstm side-by-side benchmark",
    "",
    *run["header"],
    f"- Command: `{run['command']}`",
    f"- Wall time: {run['wall_min']:.1f} min; load average at end: {run['load_end']}",
    "",
    (
      "How to read: each peer ran in its own subprocess, peers alternating (order rotated) over "
      "the rounds given per config; **median** and **IQR** pool the timed steps of all rounds "
      f"(`n` of them, after the first step and {run['warmup']} more warm-up step(s) of each round). "
      "**first step** is each round's first call: tracing and XLA compilation for the JAX peers. "
      + FLOPS_NOTE[run.get("cell", "lstm")]
      + "training = 3× forward), and **% of ceiling** compares it with the jitted JAX matmul measured "
      "in the same rounds. **page faults / step** is the worker process's minor page faults per timed "
      "step (median over rounds): memory touched for the first time in that step. "
      f"**× {REFERENCE_PEER} time** is a peer's median over {REFERENCE_PEER}'s (jaxlstm's default path, "
      f'`impl="auto"`): above 1 means {REFERENCE_PEER} is faster. '
      "`params` ✓ means the peer's parameter count equals the "
      + (
        "shared model's; PyTorch's GRU has two full bias vectors (`b_ih`, `b_hh`) where jaxlstm has `b` and `b_hn`, "
        "hence its +2H per layer."
        if run.get("cell") == "gru"
        else "shared model's; PyTorch's LSTM has two bias vectors (`b_ih`, `b_hh`) where the others have one, "
        "hence its +4H per layer."
      )
    ),
    "",
    (
      GPU_NOTE
      if run.get("device") == "gpu"
      else "Every peer runs at its own defaults: PyTorch with its default thread count (the machine's cores) "
      "and `OMP_WAIT_POLICY` unset (its OpenMP threads spin at barriers), JAX with XLA's default CPU thread pool. "
      + (
        "The `torch-passive` row is a tuned variant, not a default: `OMP_WAIT_POLICY=PASSIVE`."
        if any("torch-passive" in job["peers"] for job in run["jobs"])
        else ""
      )
      + (
        " The `jaxlstm-malloc` and `torch-malloc` rows are tuned variants, not defaults: glibc's malloc with "
        "`MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483648`, so that a "
        "step's large buffers are reused instead of faulting in fresh pages."
        if any(p.endswith("-malloc") for job in run["jobs"] for p in job["peers"])
        else ""
      )
      + " "
      + (
        "PyTorch keeps its default denormal handling (`--torch-denormals`)."
        if run.get("torch_denormals")
        else "PyTorch runs with `torch.set_flush_denormal(True)`, as XLA flushes denormals on CPU: without it, "
        "the gradients that decay through M's 256 steps turn denormal and its training step is ~15× "
        "slower (`--torch-denormals` keeps PyTorch's default)."
      )
    ),
    "",
    (
      "Keras peer: `model.train_on_batch` / `model.predict_on_batch`, which Keras 3 compiles with "
      "`jax.jit` (the train function donates its state). `keras-jit`, if listed, is the same model "
      "through a hand-written jitted `stateless_call` + `optimizer.stateless_apply` step."
    ),
    "",
  ]
  lines += summary_table(run["jobs"])
  for job in run["jobs"]:
    for mode in job["modes"]:
      lines += job_table(
        job["name"],
        Config(*job["config"]),
        mode,
        job["pooled"],
        job["peers"],
        job["rounds"],
        run.get("device", "cpu"),
        run.get("cell", "lstm"),
      )
  return "\n".join(lines)


# How each cell's GFLOP/s are counted (configs.forward_flops).
FLOPS_NOTE = {
  "lstm": "GFLOP/s counts the LSTM work (gate GEMMs `2·B·T·(I+H)·4H` per layer plus elementwise; ",
  "gru": "GFLOP/s counts the GRU work (gate GEMMs `2·B·T·(I+H)·3H` per layer plus elementwise; ",
  "layernorm": "GFLOP/s counts the LayerNorm LSTM's work (gate GEMMs `2·B·T·(I+H)·4H` per layer plus "
  "elementwise, `90·B·H` per step with the three normalizations; ",
  "proj": "GFLOP/s counts the projected LSTM's work (gate GEMMs `2·B·T·(I+P)·4H` and the projection "
  "`2·B·T·H·P` per layer, `P = H/2`, plus elementwise; ",
}


def write_report(run: dict, out: str) -> None:
  """Prints the report and writes it to ``out`` (Markdown) and the raw run next to it (``.json``)."""
  text = report(run)
  print("\n" + text)
  if not out:
    return
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    f.write(text + "\n")
  with open(os.path.splitext(out)[0] + ".json", "w") as f:
    json.dump(run, f, indent=1)
  print(f"\nwrote {out} and {os.path.splitext(out)[0]}.json")
