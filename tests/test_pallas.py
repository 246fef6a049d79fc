"""The Pallas LSTM kernel: its semantics in interpret mode against the reference scan, and its CUDA lowering.

Interpret mode runs the kernel body on the CPU, with the same grid, blocks, padding and in-place aliasing as on
the GPU; the lowering tests run the Pallas-to-Triton lowering of every variant (float32, bfloat16, masked,
padded, forward and backward) through :func:`jax.export`, which catches what a GPU would reject at lowering.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.kernels import pallas
from tests.helpers import normal, random_params, rel_err
from tests.test_fused import LENGTHS, MASK, TIGHT, assert_same, layer, setup, weighted_loss

PALLAS_CASES = {
  "plain": {},
  "lengths": {"lengths": LENGTHS},
  "mask": {"mask": MASK},
  "reverse_lengths_mask": {"reverse": True, "lengths": LENGTHS, "mask": MASK},
  "time_major_mask": {"time_major": True, "mask": MASK.T},
  "remat": {"remat": 2, "lengths": LENGTHS},
}


# float64 only: the float32 arithmetic is the same code, exercised by the bfloat16 and stack tests below.
@pytest.mark.parametrize("dtype", [jnp.float64])
def test_matches_reference(dtype):
  # B=3 and H=4 pad to one 16-row block and 16-unit gates: the padding is exercised in every case.
  params, xs, state = setup(dtype)
  cases = []
  for kw in PALLAS_CASES.values():
    x = jnp.swapaxes(xs, 0, 1) if kw.get("time_major") else xs
    ref = {k: v for k, v in kw.items() if k != "remat"}  # the reference keeps every step; same values
    cases.append((layer("pallas", **kw), layer("reference", **ref), params, x, state))
  _, x1, s1 = setup(dtype, batch=(1,), t=1, seed=3)  # B = 1, T = 1
  cases.append((layer("pallas"), layer("reference"), params, x1, s1))
  # Two blocks, aligned: B = 32, H = 16 (no padding at all).
  p2, x2, s2 = setup(dtype, batch=(32,), t=3, h=16, seed=5)
  cases.append((layer("pallas"), layer("reference"), p2, x2, s2))
  with pallas.interpret():
    assert_same(cases, TIGHT[jnp.dtype(dtype)])


def test_bfloat16_params_float32_carry():
  params, xs, state = setup(jnp.float32)
  p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  x16 = xs.astype(jnp.bfloat16)
  with pallas.interpret():
    got = jax.jit(lambda p, x: jaxlstm.lstm(p, x, lengths=LENGTHS, impl="pallas"))(p16, x16)
  want = jaxlstm.lstm(p16, x16, lengths=LENGTHS, impl="fused")
  assert got[1].dtype == want[1].dtype and got[0].c.dtype == jnp.float32
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(a.astype(jnp.float32), b.astype(jnp.float32)) < 2e-2


def test_forward_mode_and_vmap():
  params, xs, state = setup(jnp.float64)

  def f(impl):
    return lambda x: jaxlstm.lstm(params, x, state, lengths=LENGTHS, impl=impl)[1].sum(axis=(0, 1))

  def g(impl):
    return lambda x: jnp.sum(jaxlstm.lstm(params, x, impl=impl)[1] ** 2)

  t = normal(xs.shape, jnp.float64, seed=9)
  with pallas.interpret():
    got = jax.jit(lambda x: (jax.jvp(f("pallas"), (x,), (t,)), jax.jacfwd(f("pallas"))(x)))(xs)
    hess = jax.jit(jax.hessian(g("pallas")))(xs[:1, :2])
    per_example = jax.jit(jax.vmap(jax.grad(lambda p, x: jaxlstm.lstm(p, x, impl="pallas")[1].sum()), (None, 0)))(
      params, xs[:, None]
    )
  want = (jax.jvp(f("reference"), (xs,), (t,)), jax.jacfwd(f("reference"))(xs))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(a, b) < 1e-11
  assert rel_err(hess, jax.hessian(g("reference"))(xs[:1, :2])) < 1e-10
  per_example_ref = jax.vmap(jax.grad(lambda p, x: jaxlstm.lstm(p, x, impl="reference")[1].sum()), (None, 0))
  for a, b in zip(jax.tree.leaves(per_example), jax.tree.leaves(per_example_ref(params, xs[:, None]))):
    assert rel_err(a, b) < 1e-11


def test_bidirectional_stack():
  params = jaxlstm.stack_init(jax.random.key(0), 3, 16, 1, bidirectional=True)
  xs = normal((5, 6, 3), jnp.float32, seed=1)

  def loss(impl):
    return lambda p: jaxlstm.stack(p, xs, lengths=jnp.array([6, 1, 3, 0, 4]), impl=impl)[1].sum()

  with pallas.interpret():
    got = jax.jit(jax.value_and_grad(loss("pallas")))(params)
  want = jax.value_and_grad(loss("reference"))(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(a, b) < 2e-5


def plain_call(cell, params):
  """The static facts of a call with no options: lengths, mask, resets, reverse, time_major and remat off."""
  return jaxlstm.LayerCall(
    cell=jaxlstm.get_cell(cell),
    params=params,
    lengths=False,
    mask=False,
    resets=False,
    reverse=False,
    time_major=False,
    remat=None,
  )


def test_why_not():
  params = jaxlstm.lstm_init(jax.random.key(0), 3, 8)
  xs = jnp.ones((2, 4, 3), jnp.float32)
  call = plain_call("lstm", params)
  if jax.default_backend() != "gpu":
    assert "it compiles for CUDA GPUs" in pallas.why_not(call)
    assert "interpret()" in pallas.why_not(call)
    # auto passes it over; an explicit request says why it cannot run.
    assert jaxlstm.explain(params, xs).kernel != "pallas"
    with pytest.raises(ValueError, match=r"impl='pallas' cannot run this layer: it compiles for CUDA GPUs"):
      jaxlstm.lstm(params, xs, impl="pallas")
  with pallas.interpret():
    assert pallas.why_not(call) is None
    assert pallas.why_not(call._replace(resets=True)).startswith("it takes lengths and masks but not resets")
    peep = jaxlstm.lstm_init(jax.random.key(0), 3, 8, peephole=True)
    assert pallas.why_not(call._replace(params=peep)).startswith("it runs plain LSTMs only")
    big = jaxlstm.lstm_init(jax.random.key(0), 3, 129)
    assert pallas.why_not(call._replace(params=big)).startswith("its tiles hold hidden sizes up to 128; got 129")
    gru = call._replace(cell=jaxlstm.get_cell("gru"), params=jaxlstm.gru_init(jax.random.key(0), 3, 8))
    assert pallas.why_not(gru) == "it runs LSTM layers only, not gru"
  with pallas.for_gpu():
    p64 = jaxlstm.lstm_init(jax.random.key(0), 3, 8, dtype=jnp.float64)
    assert "not float64" in pallas.why_not(call._replace(params=p64))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lowers_for_cuda(dtype):
  # H = 100 and B = 20 pad to 128 units and two 16-row blocks; lengths give the masked kernels.
  params = random_params(jaxlstm.lstm_init, 3, 100, dtype=dtype)

  def loss(p, x):
    final, hs = jaxlstm.lstm(p, x, lengths=jnp.arange(20) % 9, impl="pallas")
    return jnp.sum(hs.astype(jnp.float32) ** 2) + jnp.sum(final.c)

  with pallas.for_gpu():
    exported = jax.export.export(
      jax.jit(jax.value_and_grad(loss)), platforms=["cuda"], disabled_checks=pallas.EXPORT_CHECKS
    )(params, jax.ShapeDtypeStruct((20, 9, 3), dtype))
  text = exported.mlir_module()
  assert exported.platforms == ("cuda",)
  assert text.count("xla.gpu.triton") == 2
  assert re.findall(r'name = "(jaxlstm_lstm_\w+)"', text) == ["jaxlstm_lstm_forward", "jaxlstm_lstm_backward"]
  # Nothing of the recurrence is left to XLA: no while loop outside the kernels.
  assert "stablehlo.while" not in text


def test_resident_weights_variant_matches():
  # bfloat16 weights at H <= 128 load once per program; float32 at H = 128 stream per step: both paths
  # must compute the same thing.
  assert pallas.resident(64, jnp.float32) and not pallas.resident(128, jnp.float32)
  params, xs, state = setup(jnp.float32, h=16, seed=2)
  old = pallas.RESIDENT_BYTES
  with pallas.interpret():
    f = lambda p: jax.grad(lambda q: weighted_loss(layer("pallas", lengths=LENGTHS))(q, xs, state)[0])(p)  # noqa: E731
    resident = jax.jit(f)(params)
    try:
      pallas.RESIDENT_BYTES = 0
      streamed = jax.jit(f)(params)
    finally:
      pallas.RESIDENT_BYTES = old
  for a, b in zip(jax.tree.leaves(resident), jax.tree.leaves(streamed)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU: the compiled Triton kernels")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_compiled_kernels_match_fused_on_gpu(cell, dtype):
  # The real kernels, compiled by Triton, at S-like shapes (two 16-row blocks, H = 128: the streamed weights in
  # float32, the resident ones in bfloat16); conftest sets full float32 matmuls, so float32 is held tightly.
  init, layer_fn, fast, ref = {
    "lstm": (jaxlstm.lstm_init, jaxlstm.lstm, "pallas", "fused"),
    "gru": (jaxlstm.gru_init, jaxlstm.gru, "pallas_gru", "fused_gru"),
  }[cell]
  params = random_params(init, 10, 128, dtype=dtype)
  xs = normal((32, 50, 10), dtype, seed=1)
  lengths = jnp.arange(32) % 50 + 1

  def loss(impl):
    def f(p, x):
      final, hs = layer_fn(p, x, lengths=lengths, impl=impl)
      w = normal(hs.shape, jnp.float32, seed=4)
      return jnp.sum(hs.astype(jnp.float32) * w) + sum(jnp.sum(leaf) for leaf in final)

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

  got, want = loss(fast)(params, xs), loss(ref)(params, xs)
  tol = 1e-4 if dtype == jnp.float32 else 3e-2
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(a.astype(jnp.float32), b.astype(jnp.float32)) < tol


# -- the GRU kernel ---------------------------------------------------------------------------------------------


def gru_setup(dtype, *, batch=(3,), t=5, h=4, seed=0):
  params = random_params(jaxlstm.gru_init, 2, h, dtype=dtype, seed=seed)
  xs = normal((*batch, t, 2), dtype, seed=seed + 1)
  return params, xs, jaxlstm.GRUState(normal((*batch, h), dtype, seed=seed + 2, scale=0.5))


def gru_grads(impl, cases):
  """Outputs and gradients (params, xs, state) of a loss weighing every output, for each ``(kw, args)``."""

  def one(kw, params, xs, state):
    def loss(p, x, s):
      final, hs = jaxlstm.gru(p, x, s, impl=impl, **kw)
      w = [jnp.asarray(np.random.default_rng(k).standard_normal(a.shape), a.dtype) for k, a in enumerate((hs, final.h))]
      return jnp.sum(hs * w[0]) + jnp.sum(final.h * w[1]), (final, hs)

    return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, state)

  with pallas.interpret():
    return jax.jit(lambda args: [one(kw, *a) for (kw, _), a in zip(cases, args)])([a for _, a in cases])


def test_gru_matches_reference_float64():
  params, xs, state = gru_setup(jnp.float64)
  fast, ref = [], []
  for kw in PALLAS_CASES.values():
    args = (params, jnp.swapaxes(xs, 0, 1) if kw.get("time_major") else xs, state)
    fast.append((kw, args))
    ref.append(({k: v for k, v in kw.items() if k != "remat"}, args))  # the reference keeps every step
  for args in (gru_setup(jnp.float64, batch=(1,), t=1, seed=3), gru_setup(jnp.float64, batch=(32,), h=16)):
    fast.append(({}, args))  # B = 1, T = 1; two aligned blocks (no padding)
    ref.append(({}, args))
  for k, (got, want) in enumerate(zip(gru_grads("pallas_gru", fast), gru_grads("reference", ref))):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert a.dtype == b.dtype and rel_err(a, b) < 1e-11, k


def test_gru_forward_mode_bfloat16_and_lowering():
  params, xs, state = gru_setup(jnp.float64)

  def f(impl):
    return lambda x: jnp.sum(jaxlstm.gru(params, x, state, lengths=LENGTHS, impl=impl)[1] ** 2, axis=(0, 2))

  with pallas.interpret():
    got = jax.jit(lambda x: (jax.jacfwd(f("pallas_gru"))(x), jax.hessian(lambda y: f("pallas_gru")(y).sum())(x)))(xs)
  want = (jax.jacfwd(f("reference"))(xs), jax.hessian(lambda y: f("reference")(y).sum())(xs))
  for a, b in zip(got, want):
    assert rel_err(a, b) < 1e-10
  # bfloat16 params, float32 carry, against the fused GRU kernel.
  p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  x16 = xs.astype(jnp.bfloat16)
  with pallas.interpret():
    got16 = jax.jit(lambda p, x: jaxlstm.gru(p, x, lengths=LENGTHS, impl="pallas_gru"))(p16, x16)
  want16 = jaxlstm.gru(p16, x16, lengths=LENGTHS, impl="fused_gru")
  assert got16[0].h.dtype == jnp.float32
  for a, b in zip(jax.tree.leaves(got16), jax.tree.leaves(want16)):
    assert rel_err(a.astype(jnp.float32), b.astype(jnp.float32)) < 2e-2
  # Lowering for CUDA, padded (H = 100, B = 20) and masked, forward and backward.
  p100 = random_params(jaxlstm.gru_init, 3, 100, dtype=jnp.bfloat16)

  def loss(p, x):
    return jnp.sum(jaxlstm.gru(p, x, lengths=jnp.arange(20) % 9, impl="pallas_gru")[1].astype(jnp.float32) ** 2)

  with pallas.for_gpu():
    exported = jax.export.export(jax.jit(jax.grad(loss)), platforms=["cuda"], disabled_checks=pallas.EXPORT_CHECKS)(
      p100, jax.ShapeDtypeStruct((20, 9, 3), jnp.bfloat16)
    )
  names = re.findall(r'name = "(jaxlstm_gru_\w+)"', exported.mlir_module())
  assert names == ["jaxlstm_gru_forward", "jaxlstm_gru_backward"]
  assert "stablehlo.while" not in exported.mlir_module()


def test_gru_why_not():
  params = jaxlstm.gru_init(jax.random.key(0), 3, 8)
  call = plain_call("gru", params)
  from jaxlstm.kernels import pallas_gru

  if jax.default_backend() != "gpu":
    assert "it compiles for CUDA GPUs" in pallas_gru.why_not(call)
    # auto passes it over off the GPU: native_gru where the native library is built, else fused_gru.
    assert jaxlstm.explain(params, jnp.ones((2, 4, 3), jnp.float32)).kernel in ("native_gru", "fused_gru")
  with pallas.interpret():
    assert pallas_gru.why_not(call) is None
    assert pallas_gru.why_not(call._replace(cell=jaxlstm.get_cell("lstm"))) == "it runs GRU layers only, not lstm"
    big = call._replace(params=jaxlstm.gru_init(jax.random.key(0), 3, 200))
    assert pallas_gru.why_not(big).startswith("its tiles hold hidden sizes up to 128; got 200")
