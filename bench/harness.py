"""The subprocess harness, both sides of it.

Worker side: in its own process (``bench.py --worker SPEC``), time one peer's
steps, with the page faults they cost, or the matmul ceiling, and print the
result as one ``RESULT_TAG`` line of JSON. Separate processes keep the thread
pools and allocators of JAX and PyTorch apart.

Driver side: one worker per peer and round, the peers in an order rotated
every round, their results pooled per config.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

from configs import Config
from peers import PEERS, bf16, build_matmul, cudnn_available, set_cell, set_precision

RESULT_TAG = "BENCH_RESULT "
# Workers run the entry point as a script, as the driver does: Python then puts bench/ first on sys.path,
# where these modules import each other by their plain names.
BENCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")

# --------------------------------------------------------------------------------------------------
# Worker side: runs in the subprocess.


def time_calls(call, steps: int, warmup: int) -> dict:
  """Times ``call()`` (which must block until its result is ready).

  Returns the first call's time (compile + first step), the times of
  ``steps`` calls after ``warmup`` further untimed ones, and the process's
  minor page faults per timed call: each page of memory that a step touches
  for the first time costs one, a large part of a CPU step (see README).
  """
  t0 = time.perf_counter()
  call()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    call()
  times = []
  faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
  return {"first_s": first, "times_s": times, "faults": faults}


def measure_ceiling(kind: str, steps: int, device: str = "cpu") -> list:
  """GFLOP/s samples of the square matmul of :func:`peers.build_matmul`."""
  call, flops = build_matmul(kind, device)
  timing = time_calls(call, steps, warmup=2)
  return [flops / t / 1e9 for t in timing["times_s"]]


def run_worker(spec: dict) -> dict:
  """Runs the measurements described by ``spec`` in this process and returns their results.

  A peer's worker times each of ``spec["modes"]`` ("train", "infer") on one
  config; the ``ceiling`` worker times the JAX matmul, then the PyTorch one.
  """
  set_precision(spec.get("precision", "native"))  # the ceiling's matmul too
  set_cell(spec.get("cell", "lstm"))
  if spec["peer"] == "ceiling":
    device = spec.get("device", "cpu")
    out = {"status": "ok", "jax": measure_ceiling("jax", spec["steps"], device)}
    try:
      out["torch"] = measure_ceiling("torch", spec["steps"], device)
    except ImportError:
      pass
    return out
  cfg = Config(*spec["config"])
  peer = PEERS[spec["peer"]]
  if spec.get("cell", "lstm") not in peer.cells:
    return {"status": "missing", "error": f"it runs {', '.join(peer.cells)} layers only"}
  try:
    __import__(peer.library)
    if peer.needs_cuda and not cudnn_available():
      return {"status": "missing", "error": "needs a CUDA GPU (run with --device gpu)"}
  except ImportError as e:
    return {"status": "missing", "error": f"{peer.library} not installed ({e})"}
  if spec["peer"] in ("jaxlstm-cudnn", "jax-cudnn") and bf16():
    return {"status": "missing", "error": "cuDNN through JAX runs float32 only"}
  out = {"status": "ok"}
  for mode in spec["modes"]:
    call, n_params = peer.build(cfg, mode, spec.get("device", "cpu"))
    out[mode] = {"params": n_params, **time_calls(call, spec["steps"], spec["warmup"])}
  return out


def worker_main(spec_json: str) -> None:
  """Entry point of ``--worker``: prints the result line; a crash prints its traceback and exits non-zero."""
  result = run_worker(json.loads(spec_json))
  print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# Driver side: subprocesses, rounds, pooling.


def worker_env(peer_env: tuple = (), device: str = "cpu", keep_denormals: bool = False) -> dict:
  """Environment of a worker: Keras on JAX, JAX on CPU (or the GPU), quieter logs; nothing that changes how a
  peer computes, except a tuned variant's own ``peer_env`` (e.g. ``torch-passive``'s ``OMP_WAIT_POLICY``).
  """
  env = dict(os.environ)
  env["KERAS_BACKEND"] = "jax"
  if device == "gpu":
    env.setdefault("JAX_PLATFORMS", "cuda")
    # JAX would take 75% of the GPU's memory up front; workers run one at a time, but stay lean.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  else:
    env.setdefault("JAX_PLATFORMS", "cpu")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env.update(dict(peer_env))
  if keep_denormals:
    env["BENCH_TORCH_DENORMALS"] = "1"
  return env


def spawn(spec: dict, timeout: float, keep_denormals: bool = False) -> dict:
  """Runs one worker subprocess; a crash, a timeout or a missing result line becomes an error result."""
  cmd = [sys.executable, BENCH_SCRIPT, "--worker", json.dumps(spec)]
  peer = spec["peer"]  # "ceiling" is not a peer
  try:
    proc = subprocess.run(
      cmd,
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
      env=worker_env(PEERS[peer].env if peer in PEERS else (), spec.get("device", "cpu"), keep_denormals),
    )
  except subprocess.TimeoutExpired:
    return {"status": "error", "error": f"timed out after {timeout:.0f} s"}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(RESULT_TAG):
      return json.loads(line[len(RESULT_TAG) :])
  lines = [l.strip() for l in proc.stderr.splitlines() if l.strip()]
  # The exception's own line, rather than a framework's closing remark after it.
  errors = [l for l in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", l)]
  tail = (errors or lines or ["no output"])[-1]
  return {"status": "error", "error": f"exit code {proc.returncode}: {tail[:300]}"}


def rotated(items: list, r: int) -> list:
  """``items`` rotated left by ``r``: round ``r`` starts with a different peer."""
  r %= len(items)
  return items[r:] + items[:r]


def run_rounds(name: str, cfg: Config, modes: list, peers: list, args, log) -> dict:
  """Runs every peer, then the matmul ceiling, for ``args.rounds`` rounds on one config; pools the results.

  Returns ``{peer: {"status", "error", mode: {"times_s", "first_s", "params"}}}``
  and ``{"ceiling": {"jax": [GFLOP/s...], "torch": [...]}}``.
  """
  rounds = args.rounds[name]
  steps_per_round = max(1, -(-args.steps[name] // rounds))
  pooled = {
    p: {
      "status": "ok",
      "error": None,
      **{m: {"times_s": [], "first_s": [], "faults": [], "params": None} for m in modes},
    }
    for p in peers
  }
  pooled["ceiling"] = {"status": "ok", "error": None, "jax": [], "torch": []}
  for r in range(rounds):
    for peer in rotated(peers, r) + ["ceiling"]:
      entry = pooled[peer]
      if entry["status"] != "ok":
        continue  # missing or crashed in an earlier round: don't retry
      spec = {
        "peer": peer,
        "config": list(cfg),
        "modes": modes,
        "steps": steps_per_round,
        "warmup": args.warmup,
        "device": args.device,
        "precision": args.precision,
        "cell": args.cell,
      }
      t0 = time.perf_counter()
      res = spawn(spec, args.timeout, keep_denormals=args.torch_denormals)
      tag = f"  [{name} round {r + 1}/{rounds}] {peer:14s}"
      if res["status"] != "ok":
        entry.update(status=res["status"], error=res["error"])
        log(f"{tag} {res['status'].upper()}: {res['error']}")
        continue
      if peer == "ceiling":
        for lib in ("jax", "torch"):
          entry[lib] += res.get(lib, [])
        log(
          f"{tag} matmul "
          + ", ".join(f"{lib} {statistics.median(res[lib]):.1f}" for lib in ("jax", "torch") if res.get(lib))
          + " GFLOP/s"
        )
        continue
      parts = []
      for mode in modes:
        m = res[mode]
        entry[mode]["times_s"] += m["times_s"]
        entry[mode]["first_s"].append(m["first_s"])
        entry[mode]["faults"].append(m["faults"])
        entry[mode]["params"] = m["params"]
        parts.append(f"{mode}: first {m['first_s']:.2f} s, median {1e3 * statistics.median(m['times_s']):.2f} ms")
      log(
        f"{tag} params {res[modes[0]]['params']:>9,d}; "
        + "; ".join(parts)
        + f"  ({time.perf_counter() - t0:.0f} s wall)"
      )
  return pooled
