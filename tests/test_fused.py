"""The fused LSTM path against the reference scan: outputs, final states and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxlstm
from tests.helpers import normal, random_params, rel_err

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])
MASK = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], bool)
RESETS = np.array([[0, 0, 1, 0, 1], [1, 0, 0, 1, 0], [0, 1, 1, 0, 0]], bool)
TIGHT = {jnp.dtype(jnp.float32): 2e-5, jnp.dtype(jnp.float64): 1e-11}


def setup(dtype, *, peephole=False, batch=(B,), t=T, i=I, h=H, seed=0, **options):
  params = random_params(jaxlstm.lstm_init, i, h, dtype=dtype, peephole=peephole, seed=seed, **options)
  xs = normal((*batch, t, i), dtype, seed=seed + 1)
  p = options.get("proj_size") or h
  state = jaxlstm.LSTMState(
    normal((*batch, p), dtype, seed=seed + 2, scale=0.5), normal((*batch, h), dtype, seed=seed + 3, scale=0.5)
  )
  return params, xs, state


def weighted_loss(run):
  """Loss with fixed random weights on every output, so each gradient entry is exercised."""

  def loss(params, xs, state):
    final, hs = run(params, xs, state)
    out = (hs, final.h, final.c)
    ws = [jnp.asarray(np.random.default_rng(10 + k).standard_normal(a.shape), a.dtype) for k, a in enumerate(out)]
    return sum(jnp.sum(a * w) for a, w in zip(out, ws)), (final, hs)

  return loss


def _tree_close(name, a, b, tol):
  leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten(b)
  assert tree_a == tree_b, name
  for (path, x), y in zip(leaves_a, leaves_b):
    where = f"{name}{jax.tree_util.keystr(path)}"
    assert x.dtype == y.dtype and x.shape == y.shape, where
    assert rel_err(x, y) <= tol, f"{where}: {rel_err(x, y)}"


def assert_same(cases, tol):
  """For each ``(run_fast, run_ref, params, xs, state)``: outputs, final state and gradients agree.

  All cases go through one jitted function per side: every compile costs
  about a second on a small CPU, and one big compile is cheaper than many.
  """

  def all_grads(side):
    def f(args):
      return [jax.grad(weighted_loss(case[side]), argnums=(0, 1, 2), has_aux=True)(*a) for case, a in zip(cases, args)]

    return jax.jit(f)([case[2:] for case in cases])

  for k, (got, want) in enumerate(zip(all_grads(0), all_grads(1))):
    _tree_close(f"case {k}: gradients", got[0], want[0], tol)
    _tree_close(f"case {k}: outputs", got[1], want[1], tol)


def layer(impl, **kw):
  return lambda p, x, s: jaxlstm.lstm(p, x, s, impl=impl, **kw)


def both(**kw):
  return layer("fused", **kw), layer("reference", **kw)


CASES = {
  "plain": {},
  "lengths": {"lengths": LENGTHS},
  "mask": {"mask": MASK},
  "reverse": {"reverse": True},
  "reverse_lengths": {"reverse": True, "lengths": LENGTHS},
  "reverse_lengths_mask": {"reverse": True, "lengths": LENGTHS, "mask": MASK},
  "time_major_mask": {"time_major": True, "mask": MASK.T},
  "resets": {"resets": RESETS},
  "reverse_lengths_resets": {"reverse": True, "lengths": LENGTHS, "resets": RESETS},
  "mask_resets": {"mask": MASK, "resets": RESETS},
}


@pytest.mark.parametrize("peephole", [False, True])
def test_matches_reference_float64(peephole):
  params, xs, state = setup(jnp.float64, peephole=peephole)
  cases = []
  for kw in CASES.values():
    x = jnp.swapaxes(xs, 0, 1) if kw.get("time_major") else xs
    cases.append((*both(**kw), params, x, state))
  # Batch shapes () and (2, 3), flattened inside the fused path.
  _, x0, s0 = setup(jnp.float64, peephole=peephole, batch=())
  cases.append((*both(reverse=True), params, x0, s0))
  _, x23, s23 = setup(jnp.float64, peephole=peephole, batch=(2, 3))
  cases.append((*both(reverse=True, lengths=np.array([[5, 1, 0], [3, 4, 2]])), params, x23, s23))
  assert_same(cases, TIGHT[jnp.dtype(jnp.float64)])


NORM_OPTIONS = {
  "layer_norm": {"layer_norm": True},
  "proj": {"proj_size": 3},
  "layer_norm_proj_peephole": {"layer_norm": True, "proj_size": 2, "peephole": True},
}


@pytest.mark.parametrize("options", NORM_OPTIONS.values(), ids=NORM_OPTIONS.keys())
def test_layer_norm_and_projection_match_reference_float64(options):
  params, xs, state = setup(jnp.float64, **options)
  cases = []
  for name in ("plain", "reverse_lengths_mask", "resets", "reverse_lengths_resets"):
    cases.append((*both(**CASES[name]), params, xs, state))
  assert_same(cases, TIGHT[jnp.dtype(jnp.float64)])


def test_layer_norm_and_projection_match_reference_float32():
  cases = []
  for options in NORM_OPTIONS.values():
    params, xs, state = setup(jnp.float32, t=12, h=16, **options)
    cases.append((*both(reverse=True, lengths=LENGTHS, resets=np.tile(RESETS, (1, 3))[:, :12]), params, xs, state))
  assert_same(cases, TIGHT[jnp.dtype(jnp.float32)])


def test_matches_reference_float32():
  cases = []
  for peephole in (False, True):
    params, xs, state = setup(jnp.float32, peephole=peephole, t=12, h=16)
    mask = np.tile(MASK, (1, 3))[:, :12]
    cases.append((*both(), params, xs, state))
    cases.append((*both(reverse=True, lengths=LENGTHS, mask=mask), params, xs, state))
    # Unrolled loops (the GPU default is 8; 5 compiles in half the time) over a length that 5 does not divide.
    cases.append((*both(reverse=True, lengths=LENGTHS, unroll=5), params, xs, state))
  assert_same(cases, TIGHT[jnp.dtype(jnp.float32)])


def test_size_one():
  cases = []
  for b, t, h in [(1, 1, 1), (1, 3, 1), (2, 1, 3)]:
    params, xs, state = setup(jnp.float64, batch=(b,), t=t, h=h, i=1)
    cases.append((*both(lengths=np.full((b,), t)), params, xs, state))
  assert_same(cases, TIGHT[jnp.dtype(jnp.float64)])


def test_empty_sequence():
  params, xs, state = setup(jnp.float32, t=0)
  final, hs = jaxlstm.lstm(params, xs, state, impl="fused")
  assert hs.shape == (B, 0, H) and hs.dtype == jnp.float32
  np.testing.assert_array_equal(final.h, state.h)
  np.testing.assert_array_equal(final.c, state.c)


def test_fused_path_is_taken_only_where_supported():
  p = random_params(jaxlstm.lstm_init, I, H, peephole=True)
  xs = normal((B, T, I), jnp.float32)
  kernel = lambda p, **kw: jaxlstm.explain(p, xs, **kw).kernel  # noqa: E731
  assert kernel(p) == "fused"
  assert kernel(p, resets=np.zeros((B, T), bool)) == "fused"
  assert kernel(random_params(jaxlstm.lstm_init, I, H, layer_norm=True)) == "fused"
  # A projected LSTM with peepholes (float32 projected ones without run on native where the library is built).
  assert kernel(random_params(jaxlstm.lstm_init, I, H, proj_size=2, peephole=True)) == "fused"
  # A GRU with resets (float32 GRUs without them run on native_gru where the native library is built).
  assert kernel(random_params(jaxlstm.gru_init, I, H), resets=np.zeros((B, T), bool)) == "fused_gru"
  with pytest.raises(ValueError, match="remat must be a positive int"):
    kernel(p, remat=0)
  # The fused path keeps no gate-sized loop state outside its custom_jvp: one while loop each way.
  params, xs, state = setup(jnp.float32)
  hlo = jax.jit(jax.grad(lambda p: jnp.sum(jaxlstm.lstm(p, xs, state, unroll=1, impl="fused")[1])))
  hlo = hlo.lower(params).as_text()
  assert hlo.count("stablehlo.while") == 2


def test_training_writes_gate_sized_arrays_in_place():
  # The forward loop writes the backward factors over the input projection and the backward loop writes
  # dz over them: the compiled gradient must neither zero-fill nor copy a (T, B, 4H) array.
  params, xs, state = setup(jnp.float32)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jaxlstm.lstm(p, x, state, unroll=1, impl="fused")[1] ** 2)))
  hlo = grad.lower(params, xs).compile().as_text()
  shape = f"f32[{T},{B},{4 * H}]"
  made = [line for line in hlo.splitlines() if f"= {shape}" in line]
  assert any("dynamic-update-slice" in line for line in made)
  for op in (" copy(", " broadcast(", " concatenate(", "wrapped_broadcast", "wrapped_copy"):
    assert not [line for line in made if op in line], op


def test_stack_matches_reference():
  xs = normal((B, T, I), jnp.float64, seed=1)
  cases = []
  for bidirectional in (False, True):
    params = random_params(
      jaxlstm.stack_init, I, H, 2, bidirectional=bidirectional, peephole=bidirectional, dtype=jnp.float64
    )

    def run(impl, bidirectional=bidirectional):
      def f(p, x, s):
        states, hs = jaxlstm.stack(p, x, lengths=LENGTHS, impl=impl)
        last = states[-1].backward if bidirectional else states[-1]
        return last, hs

      return f

    # The stack starts from zero states; the state argument is there for the helper's signature.
    cases.append((run("fused"), run("reference"), params, xs, jaxlstm.LSTMState(xs[:, 0], xs[:, 0])))
  assert_same(cases, TIGHT[jnp.dtype(jnp.float64)])


@pytest.mark.parametrize("peephole", [False, True])
def test_check_grads_float64(peephole):
  params, xs, state = setup(jnp.float64, peephole=peephole, t=4)
  f = jax.jit(lambda p, x, s: jaxlstm.lstm(p, x, s, lengths=np.array([4, 2, 3]), reverse=True, impl="fused"))
  check_grads(f, (params, xs, state), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_remat_matches_reference():
  params, xs, state = setup(jnp.float64, peephole=True, t=7)
  kw = {"lengths": np.array([7, 4, 0]), "reverse": True}
  cases = [
    (
      lambda p, x, s, k=k: jaxlstm.lstm(p, x, s, remat=k, impl="fused", **kw),
      layer("reference", **kw),
      params,
      xs,
      state,
    )
    for k in (1, 3, 7)
  ]
  # And through the public entry point.
  cases.append((lambda p, x, s: jaxlstm.lstm(p, x, s, remat=2, **kw), layer("reference", **kw), params, xs, state))
  assert_same(cases, TIGHT[jnp.dtype(jnp.float64)])


def test_bfloat16_params_keep_a_float32_carry():
  params, xs, _ = setup(jnp.bfloat16, t=6)
  state = jaxlstm.lstm_zero_state(params, (B,))
  assert state.c.dtype == jnp.float32

  @jax.jit
  def run(params):
    fast = jaxlstm.lstm(params, xs, state, impl="fused")
    ref = jaxlstm.lstm(params, xs, state, impl="reference")
    g = jax.grad(lambda p: jnp.sum(jaxlstm.lstm(p, xs, state, impl="fused")[1].astype(jnp.float32)))(params)
    return fast, ref, g

  (f_final, f_hs), (r_final, r_hs), g = run(params)
  assert f_hs.dtype == jnp.bfloat16 and f_final.c.dtype == jnp.float32
  assert rel_err(f_hs, r_hs) < 3e-2 and rel_err(f_final.c, r_final.c) < 3e-2
  assert g.w_h.dtype == jnp.bfloat16 and g.b.dtype == jnp.bfloat16


@pytest.mark.parametrize(
  "options", [{"peephole": True}, NORM_OPTIONS["layer_norm_proj_peephole"]], ids=["peephole", "norm"]
)
def test_forward_mode_matches_reference_float64(options):
  """jvp, jacfwd and hessian through the fused kernel (a custom_jvp) equal the reference scan's."""
  params, xs, state = setup(jnp.float64, **options)
  tangents = jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(7).standard_normal(a.shape), a.dtype), params)
  kw = {"lengths": LENGTHS, "resets": RESETS, "reverse": True}

  def loss(impl):
    return lambda p, x: jnp.sum(jnp.sin(jaxlstm.lstm(p, x, state, impl=impl, **kw)[1]))

  def everything(impl):
    f = loss(impl)
    return (
      jax.jvp(f, (params, xs), (tangents, xs))[1],
      jax.jacfwd(f)(params, xs),
      jax.hessian(f, argnums=1)(params, xs),
      jax.jacfwd(jax.grad(f))(params, xs).w_h,  # forward over reverse, as hessian does
    )

  got, want = jax.jit(lambda: everything("fused"))(), jax.jit(lambda: everything("reference"))()
  _tree_close("forward mode", got, want, 1e-10)


def test_finite_differences_both_modes_second_order():
  params, xs, state = setup(jnp.float64, peephole=True, t=3)
  f = jax.jit(lambda p, x, s: jaxlstm.lstm(p, x, s, lengths=np.array([3, 1, 2]), resets=RESETS[:, :3], impl="fused"))
  check_grads(f, (params, xs, state), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_forward_mode_through_stacks_at_their_defaults():
  """jvp and hessian through jaxlstm.stack with impl="auto" (fused LSTM and GRU kernels) equal the reference's."""
  xs = normal((B, T, I), jnp.float64, seed=1)
  stacks = [
    random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True, dtype=jnp.float64),
    random_params(jaxlstm.stack_init, I, H, 2, cell="gru", dtype=jnp.float64, seed=1),
  ]
  assert {c.kernel for p in stacks for c in jaxlstm.explain(p, xs, lengths=LENGTHS)} == {"fused", "fused_gru"}

  def everything(impl):
    out = []
    for p in stacks:
      f = lambda p, x: jnp.sum(jnp.sin(jaxlstm.stack(p, x, lengths=LENGTHS, impl=impl)[1]))
      out.append((jax.jvp(f, (p, xs), (p, xs))[1], jax.hessian(f, argnums=1)(p, xs)))
    return out

  _tree_close("stacks", jax.jit(lambda: everything("auto"))(), jax.jit(lambda: everything("reference"))(), 1e-10)
