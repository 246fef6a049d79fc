"""A cell registered outside the package runs in the generic Flax modules of jaxlstm.nnx and jaxlstm.linen.

The cell here is written as a user would write one: a params NamedTuple with a
static option (``leak``, as the Elman RNN's ``activation``), a state, and a
:class:`jaxlstm.Cell` record passed to :func:`jaxlstm.register_cell` (for the
test's duration). No module learns of it other than through the registry.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
import jaxlstm.linen as jl
import jaxlstm.nnx as jnn
from tests.helpers import assert_trees_close, assert_trees_equal, normal, random_params

B, T, I, H = 3, 5, 2, 3
LENGTHS = jnp.asarray([5, 2, 0])
NAME = "leaky_test"


@jaxlstm.static_fields("leak")
class LeakyParams(NamedTuple):
  w_x: jax.Array  # (I, H)
  w_h: jax.Array  # (H, H)
  b: jax.Array  # (H,)
  leak: float = 0.5  # static: part of the model, as an RNN's activation

  @property
  def input_size(self) -> int:
    return self.w_x.shape[0]

  @property
  def hidden_size(self) -> int:
    return self.w_h.shape[0]

  @property
  def output_size(self) -> int:
    return self.w_h.shape[0]

  @property
  def dtype(self):
    return self.w_x.dtype


class LeakyState(NamedTuple):
  h: jax.Array  # (..., H)


def leaky_init(key, input_size, hidden_size, *, leak=0.5, dtype=jnp.float32):
  kx, kh = jax.random.split(key)
  return LeakyParams(
    jax.random.normal(kx, (input_size, hidden_size), dtype),
    jax.random.normal(kh, (hidden_size, hidden_size), dtype),
    jnp.zeros((hidden_size,), dtype),
    leak,
  )


def leaky_step(params, state, x):
  h = (1 - params.leak) * state.h + params.leak * jnp.tanh(x @ params.w_x + state.h @ params.w_h + params.b)
  return LeakyState(h), h


def leaky_zero_state(params, batch_shape=(), dtype=None):
  return LeakyState(jnp.zeros((*batch_shape, params.hidden_size), params.dtype if dtype is None else dtype))


LEAKY = jaxlstm.Cell(
  name=NAME,
  params_type=LeakyParams,
  state_type=LeakyState,
  init=leaky_init,
  step=leaky_step,
  zero_state=leaky_zero_state,
  options_of=lambda p: {"dtype": p.dtype, "leak": p.leak},
  gates=1,
  options=("leak",),
)


@pytest.fixture
def leaky():
  # Registered for the test only: other tests count the registered cells.
  jaxlstm.register_cell(LEAKY)
  yield LEAKY
  jaxlstm.unregister_cell(NAME)


def test_nnx_modules_run_a_user_cell(leaky):
  layer = jnn.Layer(I, H, cell=NAME, leak=0.25, rngs=nnx.Rngs(0))
  assert_trees_equal(layer.params, leaky_init(nnx.Rngs(0).params(), I, H, leak=0.25))
  assert layer.cell == NAME and layer.options["leak"] == 0.25
  params = random_params(leaky_init, I, H, leak=0.25)
  stack_params = random_params(jaxlstm.stack_init, I, H, 2, cell=NAME, bidirectional=True, leak=0.25)
  xs = normal((B, T, I))

  @jax.jit
  def run(p, sp, xs):
    layer, stack, cell = jnn.Layer.from_params(p), jnn.Stack.from_params(sp), jnn.Cell.from_params(p)
    state, ys = cell.initial_state((B,)), []
    for t in range(T):  # the loop oracle: the cell's own step, one call per step
      state, y = cell(state, xs[:, t])
      ys.append(y)
    return (
      layer(xs, lengths=LENGTHS, return_state=True),
      jaxlstm.layer(p, xs, lengths=LENGTHS),
      stack(xs, lengths=LENGTHS, return_sequences=False),
      jaxlstm.stack(sp, xs, lengths=LENGTHS)[0],
      (state, jnp.stack(ys, axis=1)),
      jaxlstm.layer(p, xs),
    )

  (state, hs), expected, last, states, loop, full = run(params, stack_params, xs)
  assert_trees_equal((state, hs), expected)
  np.testing.assert_array_equal(last, jnp.concatenate([states[-1].forward.h, states[-1].backward.h], -1))
  assert_trees_close(loop, full)
  assert jnn.Stack.from_params(stack_params).params[0].forward.leak == 0.25
  with pytest.raises(ValueError, match="leak=0.5 conflicts with the params"):
    jnn.Layer.from_params(params, leak=0.5)
  with pytest.raises(TypeError, match=f"'peephole' is not an option of the '{NAME}' cell"):
    jnn.Layer(I, H, cell=NAME, peephole=True, rngs=nnx.Rngs(0))


def test_linen_modules_run_a_user_cell(leaky):
  params = random_params(leaky_init, I, H, leak=0.25)
  stack_params = random_params(jaxlstm.stack_init, I, H, 2, cell=NAME, leak=0.25)
  layer, variables = jl.Layer.from_params(params)
  stack, stack_variables = jl.Stack.from_params(stack_params)
  cell, _ = jl.Cell.from_params(params)
  assert layer == jl.Layer(H, cell=NAME, options={"leak": 0.25})
  assert stack == jl.Stack(H, num_layers=2, cell=NAME, options={"leak": 0.25})
  xs = normal((B, T, I))
  assert jax.tree.structure(jax.eval_shape(layer.init, jax.random.key(0), xs)) == jax.tree.structure(variables)

  @jax.jit
  def run(v, sv, xs):
    p = jl.from_variables(v)
    state, ys = cell.initial_state((B,)), []
    for t in range(T):
      state, y = cell.apply(v, state, xs[:, t])
      ys.append(y)
    return (
      layer.apply(v, xs, lengths=LENGTHS, return_state=True),
      jaxlstm.layer(p, xs, lengths=LENGTHS),
      stack.apply(sv, xs),
      jaxlstm.stack(jl.from_variables(sv), xs)[1],
      (state, jnp.stack(ys, axis=1)),
      jaxlstm.layer(p, xs),
    )

  got, expected, stack_hs, expected_stack_hs, loop, full = run(variables, stack_variables, xs)
  assert_trees_equal(got, expected)
  np.testing.assert_array_equal(stack_hs, expected_stack_hs)
  assert_trees_close(loop, full)
  with pytest.raises(ValueError, match="built with leak=0.25, but the module has leak=0.5"):
    jl.Layer(H, cell=NAME).apply(variables, xs)
