"""The fused GRU and Elman RNN kernels against the reference scan: outputs, final states, gradients, both modes.

Every comparison of one test goes through one jitted function per side (a compile costs about a second on a
small CPU), on small shapes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxlstm
from jaxlstm._src.kernels import fused_gru, fused_rnn
from tests.helpers import normal, random_params, rel_err

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])
MASK = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], bool)
RESETS = np.array([[0, 0, 1, 0, 0], [1, 0, 0, 1, 0], [0, 1, 1, 0, 0]], bool)
F64, F32 = jnp.float64, jnp.float32

# name: (init, its options, fused kernel)
CELLS = {
  "gru": (jaxlstm.gru_init, {}, "fused_gru"),
  "rnn_tanh": (jaxlstm.rnn_init, {}, "fused_rnn"),
  "rnn_relu": (jaxlstm.rnn_init, {"activation": "relu"}, "fused_rnn"),
}
CASES = {
  "plain": {},
  "resets": {"resets": RESETS},
  "reverse_lengths_resets": {"reverse": True, "lengths": LENGTHS, "resets": RESETS},
  "time_major_lengths_mask_resets": {"time_major": True, "lengths": LENGTHS, "mask": MASK.T, "resets": RESETS.T},
  # remat=2 over T=5 pads the last chunk.
  "remat_2_reverse_lengths_mask_resets": {
    "remat": 2,
    "reverse": True,
    "lengths": LENGTHS,
    "mask": MASK,
    "resets": RESETS,
  },
}


def setup(cell, dtype, *, batch=(B,), t=T, i=I, h=H, seed=0):
  init, opts, _ = CELLS[cell]
  params = random_params(init, i, h, dtype=dtype, seed=seed, **opts)
  xs = normal((*batch, t, i), dtype, seed=seed + 1)
  sdt = jaxlstm.zero_state(params, ()).h.dtype
  state = type(jaxlstm.zero_state(params, ()))(normal((*batch, h), sdt, seed=seed + 2, scale=0.5))
  return params, xs, state


def weights(shapes):
  return [np.random.default_rng(10 + k).standard_normal(s) for k, s in enumerate(shapes)]


def loss_of(run):
  """A loss with fixed random weights on every output, so that each gradient entry is exercised."""

  def loss(params, xs, state):
    final, hs = run(params, xs, state)
    out = (hs, final.h)
    ws = weights([a.shape for a in out])
    return sum(jnp.sum(a * jnp.asarray(w, a.dtype)) for a, w in zip(out, ws)), (final, hs)

  return loss


def layer(impl, **kw):
  return lambda p, x, s: jaxlstm.layer(p, x, s, impl=impl, **kw)


def ref_layer(**kw):
  kw = {k: v for k, v in kw.items() if k != "remat"}  # the reference keeps every step
  return layer("reference", **kw)


def assert_close(name, got, want, tol):
  leaves_g, tree_g = jax.tree_util.tree_flatten_with_path(got)
  leaves_w, tree_w = jax.tree_util.tree_flatten(want)
  assert tree_g == tree_w, name
  for (path, a), b in zip(leaves_g, leaves_w):
    where = f"{name}{jax.tree_util.keystr(path)}"
    assert a.dtype == b.dtype and a.shape == b.shape, where
    assert rel_err(a, b) <= tol, f"{where}: {rel_err(a, b)}"


def assert_same(cases, tol):
  """For each ``(run_fast, run_ref, params, xs, state)``: outputs, final state and all gradients agree."""

  def side(k):
    def f(args):
      return [jax.grad(loss_of(c[k]), argnums=(0, 1, 2), has_aux=True)(*a) for c, a in zip(cases, args)]

    return jax.jit(f)([c[2:] for c in cases])

  for k, (got, want) in enumerate(zip(side(0), side(1))):
    assert_close(f"case {k}: gradients", got[0], want[0], tol)
    assert_close(f"case {k}: outputs", got[1], want[1], tol)


# tanh RNNs are held to the reference in float32 below, and in forward mode and second order in float64.
@pytest.mark.parametrize("cell", ["gru", "rnn_relu"])
def test_matches_reference_float64(cell):
  fast = CELLS[cell][2]
  params, xs, state = setup(cell, F64)
  cases = []
  for kw in CASES.values():
    x = jnp.swapaxes(xs, 0, 1) if kw.get("time_major") else xs
    cases.append((layer(fast, **kw), ref_layer(**kw), params, x, state))
  # B = 1, T = 1, H = 1, and two batch axes (flattened by the shell).
  for b, t, h in [(1, 1, 1), (2, 1, 3)]:
    p, x, s = setup(cell, F64, batch=(b,), t=t, h=h, seed=3)
    cases.append((layer(fast, resets=np.ones((b, t), bool)), ref_layer(resets=np.ones((b, t), bool)), p, x, s))
  p, x, s = setup(cell, F64, batch=(2, 3), seed=4)
  kw = {"reverse": True, "lengths": np.array([[5, 1, 0], [3, 4, 2]])}
  cases.append((layer(fast, **kw), ref_layer(**kw), params, x, s))
  assert_same(cases, 1e-10)


def test_matches_reference_float32():
  cases = []
  for cell, (_, _, fast) in CELLS.items():
    params, xs, state = setup(cell, F32, t=12, h=16)
    resets = np.tile(RESETS, (1, 3))[:, :12]
    kw = {"reverse": True, "lengths": np.array([12, 7, 0]), "resets": resets}
    cases.append((layer(fast, **kw), ref_layer(**kw), params, xs, state))
    if cell == "gru":
      # Unrolled loops (the GPU default is 8; 5 compiles in half the time) over a length that 5 does not divide.
      mask = np.tile(MASK, (1, 3))[:, :12]
      cases.append((layer(fast, unroll=5, mask=mask), ref_layer(mask=mask), params, xs, state))
  assert_same(cases, 5e-5)


def test_transposes_are_exact():
  # <tangent(a), ct> == <a, backward(ct)> for the linear recurrences themselves, with validity and resets.
  rng = np.random.default_rng(0)
  r = lambda *s: jnp.asarray(rng.standard_normal(s))  # noqa: E731
  valid, resets = jnp.asarray(MASK.T), jnp.asarray(RESETS.T)  # (T, B)
  gru_coefs = (r(H, 3 * H), r(T, B, 3 * H), r(T, B, H), r(T, B, H), valid, resets)
  gru_lins = (r(T, B, 3 * H), r(T, B, H), r(B, H), r(B, H))
  rnn_coefs = (r(H, H), r(T, B, H), valid, resets)
  rnn_lins = (r(T, B, H), r(B, H), r(B, H))
  cts = (r(T, B, H), r(B, H))
  for module, coefs, lins in [(fused_gru, gru_coefs, gru_lins), (fused_rnn, rnn_coefs, rnn_lins)]:
    for c in (coefs, (*coefs[:-2], None, None)):
      ls = lins if c[-1] is not None else (*lins[:-1], None)
      outs = module._tangent(c, ls, unroll=1)
      back = module._backward(c, cts, unroll=1)
      dot = lambda u, v: sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)))  # noqa: E731
      assert abs(dot(outs, cts) - dot(ls, back)) < 1e-10 * abs(dot(outs, cts)), module.__name__


@pytest.mark.parametrize("cell", list(CELLS))
def test_forward_mode_and_hessian_match_reference(cell):
  fast = CELLS[cell][2]
  params, xs, state = setup(cell, F64, t=3, h=2, batch=(2,))
  kw = {"lengths": np.array([3, 2]), "resets": RESETS[:2, :3], "reverse": True}

  def out(run):
    def f(params, xs, state):
      final, hs = run(params, xs, state)
      return hs, final.h

    return f

  def scalar(run):
    return lambda p, x, s: loss_of(run)(p, x, s)[0]

  tangents = jax.tree.map(
    lambda a: jnp.asarray(np.random.default_rng(7).standard_normal(a.shape), a.dtype), (params, xs, state)
  )

  @jax.jit
  def all_of(args):
    results = []
    for run in (layer(fast, **kw), ref_layer(**kw)):
      jvp = jax.jvp(out(run), args, tangents)
      jacfwd = jax.jacfwd(out(run), argnums=(0, 1, 2))(*args)
      hessian = jax.hessian(scalar(run), argnums=(0, 1, 2))(*args)
      results.append((jvp, jacfwd, hessian))
    return results

  got, want = all_of((params, xs, state))
  for name, g, w in zip(("jvp", "jacfwd", "hessian"), got, want):
    assert_close(name, g, w, 1e-10)


def test_check_grads_second_order_float64():
  # The GRU, the harder tangent; the RNN's second order is held to the reference path's Hessian above.
  params, xs, state = setup("gru", F64, t=3, h=2, batch=(2,))
  kw = {"lengths": np.array([3, 2]), "resets": RESETS[:2, :3], "reverse": True, "impl": "fused_gru"}
  f = jax.jit(lambda p, x, s: jaxlstm.layer(p, x, s, **kw))
  check_grads(f, (params, xs, state), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "rnn_relu"])
def test_vmap_folds_the_batch_and_maps_per_example_params(cell):
  fast = CELLS[cell][2]
  params, xs, state = setup(cell, F64)
  kw = {"lengths": LENGTHS, "resets": RESETS}
  xs2 = jnp.stack([xs, xs[::-1]])  # (2, B, T, I): a mapped axis over the batch
  ensemble = jax.tree.map(lambda a: jnp.stack([a, -a]), params)  # two models' params, stacked

  def grads(run, p, x):
    return jax.grad(lambda p, x: loss_of(run)(p, x, state)[0], argnums=(0, 1))(p, x)

  @jax.jit
  def both(xs2, ensemble):
    out = []
    for run in (layer(fast, **kw), ref_layer(**kw)):
      folded = jax.vmap(lambda x, run=run: grads(run, params, x))(xs2)
      per_params = jax.vmap(lambda p, run=run: grads(run, p, xs))(ensemble)
      fwd = jax.vmap(lambda p, x, run=run: run(p, x, state))(ensemble, xs2)
      out.append((folded, per_params, fwd))
    return out

  got, want = both(xs2, ensemble)
  assert_close("vmap", got, want, 1e-10)
  # A mapped axis over the batch folds into the kernel's batch: still one loop each way, not a vmapped one.
  hlo = jax.jit(jax.vmap(lambda x: grads(layer(fast, **kw), params, x))).lower(xs2).as_text()
  assert hlo.count("stablehlo.while") == 2


def test_public_entry_points_pick_the_fused_kernels():
  xs = normal((B, T, I), F64, seed=1)
  gru = random_params(jaxlstm.gru_init, I, H, dtype=F64)
  relu = random_params(jaxlstm.rnn_init, I, H, dtype=F64, activation="relu")
  assert jaxlstm.explain(gru, xs, resets=RESETS, remat=2).kernel == "fused_gru"
  assert jaxlstm.explain(relu, xs, lengths=LENGTHS, reverse=True).kernel == "fused_rnn"
  choice = jaxlstm.explain(gru, xs)
  assert "runs on 'fused_gru'" in str(choice) and "fused_rnn: it runs Elman RNN layers only, not gru" in str(choice)
  assert jaxlstm.explain(gru, xs, recurrent_dropout=0.2).kernel == "reference"  # an in-loop regularizer
  lstm = random_params(jaxlstm.lstm_init, I, H)
  assert jaxlstm.explain(lstm, normal((B, T, I))).reasons["fused_gru"] == "it runs GRU layers only, not lstm"

  def grads(impl):
    def f(args):
      def loss(args):
        gru, relu, stack = args
        outs = (
          jaxlstm.gru(gru, xs, lengths=LENGTHS, reverse=True, impl=impl),
          jaxlstm.rnn(relu, xs, resets=RESETS, impl=impl),
          jaxlstm.stack(stack, xs, lengths=LENGTHS, impl=impl),
        )
        return sum(jnp.sum(jnp.sin(h)) for h in jax.tree.leaves(outs)), outs

      return jax.grad(loss, has_aux=True)(args)

    return jax.jit(f)

  stack = random_params(jaxlstm.stack_init, I, H, 2, cell="gru", bidirectional=True, dtype=F64)
  assert {c.kernel for c in jaxlstm.explain(stack, xs, lengths=LENGTHS)} == {"fused_gru"}
  args = (gru, relu, stack)
  assert_close("public", grads("auto")(args), grads("reference")(args), 1e-10)


def test_16_bit_params_keep_a_float32_carry():
  cases = {}
  for cell in CELLS:
    params, xs, _ = setup(cell, jnp.bfloat16, t=6)
    state = jaxlstm.zero_state(params, (B,))
    assert state.h.dtype == F32
    cases[cell] = (params, xs, state)

  @jax.jit
  def run(cases):
    out = {}
    for cell, (params, xs, state) in cases.items():
      fast = jaxlstm.layer(params, xs, state, impl=CELLS[cell][2])
      ref = jaxlstm.layer(params, xs, state, impl="reference")
      loss = lambda p, c=cell, x=xs, s=state: jnp.sum(jaxlstm.layer(p, x, s, impl=CELLS[c][2])[1])  # noqa: E731
      out[cell] = (fast, ref, jax.grad(loss)(params))
    return out

  for cell, ((f_final, f_hs), (r_final, r_hs), g) in run(cases).items():
    assert f_hs.dtype == r_hs.dtype == jnp.bfloat16 and f_final.h.dtype == F32, cell
    assert rel_err(f_hs, r_hs) < 3e-2 and rel_err(f_final.h, r_final.h) < 3e-2, cell
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(g)), cell


def test_empty_sequence_and_one_loop_each_way():
  for cell, (_, _, fast) in CELLS.items():
    params, xs, state = setup(cell, F32, t=0)
    final, hs = jaxlstm.layer(params, xs, state, impl=fast)
    assert hs.shape == (B, 0, H) and hs.dtype == F32
    np.testing.assert_array_equal(final.h, state.h)
    # Training runs one while loop forward and one backward; nothing gate-sized is kept outside them.
    params, xs, state = setup(cell, F32)
    loss = lambda p, x, s=state, impl=fast: jnp.sum(jaxlstm.layer(p, x, s, impl=impl, unroll=1)[1] ** 2)  # noqa: E731
    hlo = jax.jit(jax.grad(loss)).lower(params, xs).as_text()
    assert hlo.count("stablehlo.while") == 2, cell


def test_training_writes_factors_in_place():
  # The forward loop writes its factors over the input projections and the backward loop writes the gate
  # gradients over the factors: the compiled gradient neither zero-fills nor copies a projection-sized array.
  # (The RNN's outputs have the projection's shape and are zero-filled: only copies are checked there.)
  for cell, width, ops in [
    ("gru", 3 * H, (" copy(", " broadcast(", " concatenate(", "wrapped_broadcast", "wrapped_copy")),
    ("rnn_tanh", H, (" copy(", "wrapped_copy")),
  ]:
    params, xs, state = setup(cell, F32)
    loss = lambda p, x, s=state, impl=CELLS[cell][2]: jnp.sum(jaxlstm.layer(p, x, s, impl=impl, unroll=1)[1] ** 2)  # noqa: E731
    grad = jax.jit(jax.grad(loss))
    hlo = grad.lower(params, xs).compile().as_text()
    shape = f"f32[{T},{B},{width}]"
    made = [line for line in hlo.splitlines() if f"= {shape}" in line]
    assert any("dynamic-update-slice" in line for line in made), cell
    for op in ops:
      assert not [line for line in made if op in line], (cell, op)
