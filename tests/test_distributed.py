"""Data parallelism on simulated CPU devices, each test in a subprocess so that others keep one device."""

import json
import os
import socket
import subprocess
import sys
import textwrap

COMMON = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    import jaxlstm
    from jaxlstm import distributed
    from jaxlstm.train import fit

    MULTI = distributed.maybe_initialize()  # before any computation, as jax.distributed requires
    rng = np.random.default_rng(0)
    xs = rng.uniform(size=(64, 6, 2)).astype(np.float32)
    data = {"xs": xs, "ys": xs[:, :, :1].sum(1) / 6, "lengths": rng.integers(1, 7, size=64).astype(np.int32)}
    params = {"rnn": jaxlstm.stack_init(jax.random.key(0), 2, 8, 2), "w": jnp.zeros((8, 1)), "b": jnp.zeros((1,))}

    def loss_fn(p, batch, key):
        states, _ = jaxlstm.stack(p["rnn"], batch["xs"], lengths=batch["lengths"], dropout=0.2, key=key)
        return jnp.mean((states[-1].h @ p["w"] + p["b"] - batch["ys"]) ** 2)

    def run(devices, steps=12, **kw):
        out, hist = fit(params, loss_fn, data, batch_size=16, steps=steps, eval_every=4, progress=False,
                        optimizer=optax.adam(1e-2), devices=devices, **kw)
        return out, [r["loss"] for r in hist], hist
""")


def run_script(body, devices=4, env=None, args=()):
  e = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
  proc = subprocess.run(
    [sys.executable, "-c", COMMON + textwrap.dedent(body), *args], capture_output=True, text=True, env=e, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_match_one_and_shard_the_batch(tmp_path):
  out = run_script(f"""
    assert jax.device_count() == 4
    p1, loss1, _ = run(None)
    p4, loss4, hist = run("all")
    mesh = distributed.make_mesh(jax.devices())
    batch = distributed.shard_batch({{"xs": xs[:16], "lengths": data["lengths"][:16]}}, mesh)
    shards = sorted(s.data.shape for s in batch["xs"].addressable_shards)
    # Resume a 4-device run on 2 devices.
    ckpt = {str(tmp_path)!r}
    run(4, steps=8, checkpoint_dir=ckpt, save_every=4)
    p2, _, _ = run(2, steps=12, checkpoint_dir=ckpt, save_every=4, resume=True)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p4)))
    diff_resume = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                      for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)))
    try:
        run(3)
        err = ""
    except ValueError as e:
        err = str(e)
    print(json.dumps({{"loss1": loss1, "loss4": loss4, "spec": list(batch["xs"].sharding.spec),
                      "shards": shards, "diff": diff, "diff_resume": diff_resume, "err": err,
                      "per_device": hist[-1]["examples_per_s_per_device"] > 0}}))
  """)
  assert out["spec"] == ["batch"]
  assert out["shards"] == [[4, 6, 2]] * 4  # 16 rows over 4 devices; time is never split
  for a, b in zip(out["loss1"], out["loss4"]):
    assert abs(a - b) <= 1e-5 * max(1.0, abs(a))
  assert out["diff"] < 1e-4 and out["diff_resume"] < 1e-4
  assert out["err"] == "batch_size=16 must be divisible by the number of devices (3); use a multiple of 3, such as 15"
  assert out["per_device"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_on_loopback_match_one_process(tmp_path):
  """Multi-host: two processes with two simulated CPU devices each, joined by jax.distributed.

  They checkpoint at step 8 into one shared directory, resume from it, and
  must follow the single-process loss trajectory.
  """
  body = """
    assert MULTI
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    _, loss, _ = run("all", steps=8, checkpoint_dir=sys.argv[1], save_every=4)
    _, more, _ = run("all", checkpoint_dir=sys.argv[1], save_every=4, resume=True)
    print(json.dumps({"loss": loss + more}))
  """
  port = _free_port()
  env = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
  e = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", **env}
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", COMMON + textwrap.dedent(body), str(tmp_path)],
      env={**e, "JAX_PROCESS_ID": str(i)},
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    outs.append(json.loads(stdout.strip().splitlines()[-1]))
  single = run_script("""
    _, loss, _ = run("all")
    print(json.dumps({"loss": loss}))
  """)
  assert outs[0]["loss"] == outs[1]["loss"]
  for a, b in zip(outs[0]["loss"], single["loss"]):
    assert abs(a - b) <= 1e-5 * max(1.0, abs(a))
