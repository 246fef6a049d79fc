"""The native CPU kernel's projected LSTM (proj_size) against the reference scan in float64: outputs, final states
and every gradient, with lengths, masks and reverse, units and projection columns split over tasks, forward mode
and vmap. Tests that run the library skip where it is not built."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm._src.kernels import native
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

B, T, I, H, P = 3, 5, 2, 6, 3
LENGTHS = np.array([5, 2, 0])
MASK = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], bool)
TOL = 3e-5  # float32 against float64, relative to each array's largest entry


def setup(*, batch=(B,), t=T, i=I, h=H, p=P, seed=0):
  """float64 params, inputs and state; the native side runs them cast to float32."""
  params = random_params(jaxlstm.lstm_init, i, h, dtype=jnp.float64, proj_size=p, seed=seed)
  xs = normal((*batch, t, i), jnp.float64, seed=seed + 1)
  state = jaxlstm.LSTMState(
    normal((*batch, p), jnp.float64, seed=seed + 2, scale=0.5),
    normal((*batch, h), jnp.float64, seed=seed + 3, scale=0.5),
  )
  return params, xs, state


def check(params, xs, state, tol=TOL, **kw):
  check_against_reference("native", params, xs, state, tol, **kw)


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
@pytest.mark.parametrize("t, batch, h, p", [(1, (3,), 4, 2), (4, (1,), 4, 3), (3, (2,), 2, 1), (3, (0,), 4, 2)])
def test_size_one(t, batch, h, p):
  check(*setup(t=t, batch=batch, h=h, p=p))


@built
@pytest.mark.parametrize("threads, h, p", [(2, 37, 5), (3, 20, 2)])
def test_threads_split_units_and_columns(threads, h, p):
  """Units and projection columns split over tasks unevenly; with p < threads some tasks own no columns."""
  native.set_threads(threads)
  try:
    check(*setup(batch=(4,), t=6, i=3, h=h, p=p), lengths=np.array([6, 3, 0, 1]), reverse=True)
  finally:
    native.set_threads(0)


@built
@pytest.mark.parametrize("panels", [0, 2])
def test_panel_and_sgemm_gemms(panels):
  """Both per-step GEMMs (panels.h) on all four of the projected loops' weight slices: H = 37, P = 19 on two
  tasks, so every slice ends on a partial panel; 7 rows."""
  with native_settings(native, threads=2, panels=panels):
    check(*setup(batch=(7,), t=4, i=3, h=37, p=19), lengths=np.arange(7) % 5, reverse=True)


@built
def test_runs_the_projected_targets_and_auto_takes_them():
  params, xs, state = as_float32(setup())

  def targets(fn, *args):
    text = jax.jit(fn).lower(*args).as_text()
    return {n for n in native.PROJ_TARGETS if n in text}

  assert targets(lambda x: jaxlstm.lstm(params, x, state)[1], xs) == {"jaxlstm_lstm_proj_forward_infer"}
  grad = jax.grad(lambda p: jnp.sum(jaxlstm.lstm(p, xs, state)[1]))
  assert targets(grad, params) == {"jaxlstm_lstm_proj_forward_train", "jaxlstm_lstm_proj_backward"}
  assert jaxlstm.explain(params, xs).kernel == "native"
  peep = jaxlstm.lstm_init(jax.random.key(0), I, H, proj_size=P, peephole=True)
  assert "without peepholes" in jaxlstm.explain(peep, xs).reasons["native"]
  assert jaxlstm.explain(peep, xs).kernel == "fused"


@built
def test_forward_mode_matches_reference():
  """jvp and jacfwd run fused_norm's tangent loop on the native forward's factors; hessian differentiates the
  native calls through their XLA equivalents."""
  params, xs, _ = as_float32(setup())

  def f(impl):
    return lambda x: jnp.sum(jaxlstm.lstm(params, x, lengths=LENGTHS, impl=impl)[1] ** 2, axis=(0, 2))

  t = normal(xs.shape, jnp.float32, seed=7)

  assert_trees_rel_close(forward_modes(f("native"), xs, t), forward_modes(f("reference"), xs, t), 1e-5)


@built
def test_vmap_grad_matches_reference():
  params, xs, _ = as_float32(setup(batch=(2, B)))

  def grad(impl):
    def loss(p):
      return jnp.sum(jax.vmap(lambda x: jaxlstm.lstm(p, x, lengths=LENGTHS, impl=impl)[1])(xs) ** 2)

    return jax.jit(jax.grad(loss))(params)

  assert_trees_rel_close(grad("native"), grad("reference"), 1e-5)
