"""The native CPU GRU kernel against the reference scan in float64: outputs, final states and every gradient.

The kernel runs float32 only, so its float32 results are held to the float64 reference kernel on the same
values, to float32 rounding. Tests that run the library skip where it is not built; the fallback test runs
everywhere.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm._src.kernels import fused_gru, native, native_gru
from tests.helpers import (
  as_float32,
  assert_trees_rel_close,
  check_against_reference,
  forward_modes,
  native_settings,
  normal,
  random_params,
)

built = pytest.mark.skipif(native.load_error() is not None, reason=f"{native.load_error()}")

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])
MASK = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], bool)
TOL = 3e-5  # float32 against float64, relative to each array's largest entry
TARGETS = ("jaxlstm_gru_forward_infer", "jaxlstm_gru_forward_train", "jaxlstm_gru_backward")


@pytest.fixture(autouse=True)
def native_training(monkeypatch):
  """Every size trains on the native loops here, so that the small cases test native_gru_backward whatever the
  default of native_gru.TRAIN_MIN_HIDDEN; a threshold above zero has its own test."""
  monkeypatch.setattr(native_gru, "TRAIN_MIN_HIDDEN", 1)


def setup(*, batch=(B,), t=T, i=I, h=H, seed=0, scale=0.5):
  """float64 params (random biases, b_hn included; N(0, scale²)), inputs and state; the native side runs them
  in float32."""
  params = random_params(jaxlstm.gru_init, i, h, dtype=jnp.float64, seed=seed, scale=scale)
  xs = normal((*batch, t, i), jnp.float64, seed=seed + 1)
  state = jaxlstm.GRUState(normal((*batch, h), jnp.float64, seed=seed + 2, scale=0.5))
  return params, xs, state


def assert_close(got, want, tol=TOL):
  assert_trees_rel_close(got, want, tol)


def check(params, xs, state, tol=TOL, **kw):
  check_against_reference("native_gru", params, xs, state, tol, **kw)


CASES = {
  "plain": {},
  "lengths": {"lengths": LENGTHS},
  "mask": {"mask": MASK},
  "lengths_reverse": {"lengths": LENGTHS, "reverse": True},
}


@built
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case):
  check(*setup(), **CASES[case])


@built
@pytest.mark.parametrize("t, batch, h", [(1, (1,), 1), (4, (1,), 4), (3, (0,), 4)])
def test_size_one(t, batch, h):
  check(*setup(t=t, batch=batch, h=h))


@built
@pytest.mark.parametrize("threads, batch, t, h, scale", [(3, 4, 6, 37, 0.5), (2, 32, 20, 128, 0.1)])
def test_threads_and_chunked_projection(threads, batch, t, h, scale):
  """Units split over tasks (H = 37 does not divide evenly), with lengths and reverse; and B = 32, H = 128 on
  two tasks, whose input projection runs in chunks of 10 steps, with rows of every length. The bigger case's
  weights are N(0, 0.01): at N(0, 0.25) its recurrence is chaotic (w_h's spectral radius near 5.7), and every
  float32 path, the reference scan's included, lands 2-7e-4 off float64 there."""
  native.set_threads(threads)
  try:
    params, xs, state = setup(batch=(batch,), t=t, i=3, h=h, scale=scale)
    check(params, xs, state, lengths=np.arange(batch) % (t + 1), reverse=True)
  finally:
    native.set_threads(0)


@built
@pytest.mark.parametrize("panels", [0, 2])
def test_panel_and_sgemm_gemms(panels):
  """Both per-step GEMMs (panels.h): H = 37 on two tasks, slices of 54 and 57 forward columns and 18 and 19
  backward ones (partial panels), 7 rows (a block of 6 and one)."""
  with native_settings(native, threads=2, panels=panels):
    params, xs, state = setup(batch=(7,), t=4, i=3, h=37)
    check(params, xs, state, lengths=np.arange(7) % 5, reverse=True)


@built
@pytest.mark.parametrize("h, train_targets", [(4, set()), (256, {TARGETS[1], TARGETS[2]})])
def test_small_layers_train_on_the_xla_loops(monkeypatch, h, train_targets):
  """With TRAIN_MIN_HIDDEN at 256 (its value before the huge-page advice), a layer below it runs its forward
  natively and trains on the fused GRU kernel's XLA loops; from it on, training runs the native loops. Both
  match the reference."""
  monkeypatch.setattr(native_gru, "TRAIN_MIN_HIDDEN", 256)
  params, xs, state = setup(h=h, t=3)
  p32, x32, s32 = as_float32((params, xs, state))

  def targets(fn, *args):
    text = jax.jit(fn).lower(*args).as_text()
    return {t for t in TARGETS if t in text}

  assert targets(lambda x: jaxlstm.gru(p32, x, s32, impl="native_gru")[1], x32) == {TARGETS[0]}
  grad = jax.grad(lambda p: jnp.sum(jaxlstm.gru(p, x32, s32, impl="native_gru")[1]))
  assert targets(grad, p32) == train_targets
  check(params, xs, state, tol=1e-4, lengths=np.array([3, 1, 0]))


@built
def test_auto_takes_it_for_float32_grus(monkeypatch):
  monkeypatch.setattr(native_gru, "TRAIN_MIN_HIDDEN", 256)
  params, xs, _ = as_float32(setup())
  choice = jaxlstm.explain(params, xs)
  assert choice.kernel == "native_gru"
  assert "native_gru: chosen (the forward loop; trained, below 256 hidden units (H=4), the fused GRU" in str(choice)
  assert native_gru.KERNEL.rank < fused_gru.KERNEL.rank
  big = jaxlstm.gru_init(jax.random.key(0), 2, 256)
  assert "native_gru: chosen\n" in str(jaxlstm.explain(big, xs))
  assert jaxlstm.explain(as_float32(params), xs, resets=jnp.zeros((B, T), bool)).kernel == "fused_gru"
  bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  assert jaxlstm.explain(bf16, xs.astype(jnp.bfloat16)).kernel == "fused_gru"


@built
def test_default_trains_small_layers_natively(monkeypatch):
  """At the defaults, a GRU of 4 units trains on the native loops, and explain says nothing of the XLA loops."""
  monkeypatch.undo()
  assert native_gru.TRAIN_MIN_HIDDEN == 0
  p32, x32, s32 = as_float32(setup(t=3))
  grad = jax.grad(lambda p: jnp.sum(jaxlstm.gru(p, x32, s32)[1]))
  assert TARGETS[2] in jax.jit(grad).lower(p32).as_text()
  assert "native_gru: chosen\n" in str(jaxlstm.explain(p32, x32))


@built
def test_vmap_forward_mode_and_stack():
  """vmap over examples with their own weights (one call each), jvp, jacfwd and hessian (the fused GRU kernel's
  tangent on the native forward's factors), and a bidirectional two-layer stack with lengths."""
  params, xs, _ = as_float32(setup(batch=(2, B)))
  params2 = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
  got = jax.vmap(lambda p, x: jaxlstm.gru(p, x, lengths=LENGTHS, impl="native_gru")[1])(params2, xs)
  want = jax.vmap(lambda p, x: jaxlstm.gru(p, x, lengths=LENGTHS, impl="reference")[1])(params2, xs)
  assert_close(got, want, tol=1e-5)

  x0, t = xs[0], normal(xs[0].shape, jnp.float32, seed=7)

  def f(impl):
    return lambda x: jnp.sum(jaxlstm.gru(params, x, lengths=LENGTHS, impl=impl)[1] ** 2, axis=(0, 2))

  assert_close(forward_modes(f("native_gru"), x0, t), forward_modes(f("reference"), x0, t), tol=1e-5)

  stack = random_params(jaxlstm.stack_init, I, H, 2, dtype=jnp.float64, cell="gru", bidirectional=True)
  xs64 = normal((B, T, I), jnp.float64, seed=1)

  def run(impl, stack, xs):
    def loss(stack, xs):
      _, hs = jaxlstm.stack(stack, xs, lengths=LENGTHS, impl=impl)
      return jnp.sum(jnp.sin(hs)), hs

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(stack, xs)

  assert_close(run("native_gru", *as_float32((stack, xs64))), run("reference", stack, xs64))


def call(params, **kw):
  kw = {"lengths": False, "mask": False, "resets": False, "reverse": False, "time_major": False, "remat": None, **kw}
  return jaxlstm.LayerCall(cell=jaxlstm.get_cell(kw.pop("cell", "gru")), params=params, **kw)


def test_why_not_names_what_it_lacks():
  p32 = jaxlstm.gru_init(jax.random.key(0), 3, 5)
  p64 = jax.tree.map(lambda a: a.astype(jnp.float64), p32)
  assert native_gru.why_not(call(p64)) == "it runs float32 params only; got float64; use impl='fused_gru'"
  lstm = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
  assert native_gru.why_not(call(lstm, cell="lstm")) == "it runs GRU layers only, not lstm"
  assert "resets" in native_gru.why_not(call(p32, resets=True))
  assert "remat" in native_gru.why_not(call(p32, remat=4))


def test_without_the_library_auto_falls_back_and_native_gru_raises(monkeypatch):
  reason = "the native library is not built (a test's stand-in reason)"
  monkeypatch.setattr(native, "_load", lambda: (None, reason))
  params = jaxlstm.gru_init(jax.random.key(0), 3, 8)
  xs = jnp.ones((2, 7, 3), jnp.float32)
  choice = jaxlstm.explain(params, xs)
  assert choice.kernel == "fused_gru"
  assert choice.reasons["native_gru"] == reason
  with pytest.raises(ValueError, match=r"impl='native_gru' cannot run this layer: the native library is not built"):
    jaxlstm.gru(params, xs, impl="native_gru")
  _, hs = jaxlstm.gru(params, xs)  # impl="auto" runs as before
  assert hs.shape == (2, 7, 8)
