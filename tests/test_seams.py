"""The seams: a cell or a kernel defined outside the package plugs into everything through one registration.

The cell is an IndRNN (Li et al., 2018), ``h' = act(x W + u * h + b)`` with a
diagonal recurrence, and its activation is a static field, as the Elman
RNN's is. Registered once, it must run through ``jaxlstm.stack`` (both
directions, lengths), the NNX and Linen stacks, ``fit`` with checkpoints,
and the command line's model, with no change to the package.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlstm
from jaxlstm.checkpoint import Checkpointer, CheckpointError
from tests.helpers import assert_trees_equal, normal, random_params, rel_err
from tests.oracle import python_unroll

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])


@jaxlstm.static_fields("activation")
class IndRNNParams(NamedTuple):
  w_x: jax.Array  # (I, H)
  u: jax.Array  # (H,) diagonal recurrent weights
  b: jax.Array  # (H,)
  activation: str = "relu"

  @property
  def input_size(self):
    return self.w_x.shape[0]

  @property
  def hidden_size(self):
    return self.w_x.shape[1]

  output_size = hidden_size

  @property
  def dtype(self):
    return self.w_x.dtype


class IndRNNState(NamedTuple):
  h: jax.Array  # (..., H)


def indrnn_init(key, input_size, hidden_size, *, activation="relu", dtype=jnp.float32):
  k1, k2 = jax.random.split(key)
  return IndRNNParams(
    jax.random.normal(k1, (input_size, hidden_size), dtype) * input_size**-0.5,
    jax.random.uniform(k2, (hidden_size,), dtype, 0.0, 1.0),
    jnp.zeros((hidden_size,), dtype),
    activation,
  )


def indrnn_zero_state(params, batch_shape=(), dtype=None):
  return IndRNNState(jnp.zeros((*batch_shape, params.hidden_size), dtype or params.dtype))


def indrnn_step(params, state, x):
  act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[params.activation]
  h = act(x @ params.w_x + params.u * state.h + params.b)
  return IndRNNState(h), h


INDRNN = jaxlstm.Cell(
  name="indrnn",
  params_type=IndRNNParams,
  state_type=IndRNNState,
  init=indrnn_init,
  step=indrnn_step,
  zero_state=indrnn_zero_state,
  options_of=lambda p: {"dtype": p.dtype, "activation": p.activation},
  gates=1,
  options=("activation",),
)


@pytest.fixture
def indrnn():
  jaxlstm.register_cell(INDRNN)  # the one line
  yield INDRNN
  jaxlstm.unregister_cell("indrnn")


def test_registered_cell_runs_through_stack_against_the_loop(indrnn):
  params = random_params(
    jaxlstm.stack_init, I, H, 2, cell="indrnn", bidirectional=True, activation="tanh", dtype=jnp.float64
  )
  assert params[0].forward.activation == "tanh"
  xs = normal((B, T, I), jnp.float64)
  states, hs = jaxlstm.stack(params, xs, lengths=LENGTHS)
  # The oracle: each direction of each layer through the Python loop, merged by concatenation.
  h = xs
  for layer in params:
    zero = indrnn_zero_state(layer.forward, (B,), jnp.float64)
    fw_state, fw = python_unroll(indrnn_step, layer.forward, h, zero, lengths=LENGTHS)
    bw_state, bw = python_unroll(indrnn_step, layer.backward, h, zero, lengths=LENGTHS, reverse=True)
    h = jnp.concatenate([fw, bw], -1)
  assert rel_err(hs, h) < 1e-12
  assert rel_err(states[-1].backward.h, bw_state.h) < 1e-12 and rel_err(states[-1].forward.h, fw_state.h) < 1e-12
  assert jaxlstm.explain(params, xs)[0].kernel == "reference"
  assert "indrnn" in jaxlstm.cell_names()


def test_registered_cell_in_the_flax_stacks(indrnn):
  from flax import nnx

  import jaxlstm.linen
  import jaxlstm.nnx

  xs = normal((B, T, I))
  model = jaxlstm.nnx.Stack(I, H, num_layers=2, cell="indrnn", activation="tanh", rngs=nnx.Rngs(0))
  assert model.params[0].activation == "tanh"
  np.testing.assert_array_equal(model(xs, lengths=LENGTHS), jaxlstm.stack(model.params, xs, lengths=LENGTHS)[1])
  linen = jaxlstm.linen.Stack(H, num_layers=2, cell="indrnn")
  variables = linen.init(jax.random.key(0), xs)
  params = jaxlstm.linen.from_variables(variables)
  assert isinstance(params[1], IndRNNParams) and params[1].activation == "relu"
  np.testing.assert_array_equal(linen.apply(variables, xs), jaxlstm.stack(params, xs)[1])


@pytest.mark.standard_promotion  # optax promotes implicitly
def test_registered_cell_trains_with_fit_and_round_trips_a_checkpoint(indrnn, tmp_path):
  from jaxlstm.models import model_apply, model_init, task_loss

  params = model_init(jax.random.key(0), I, 1, hidden=H, layers=2, cell="indrnn")
  rng = np.random.default_rng(0)
  data = {
    "xs": rng.standard_normal((64, T, I)).astype(np.float32),
    "ys": rng.standard_normal((64, 1)).astype(np.float32),
  }

  def loss_fn(p, batch, key):
    return task_loss("regress", model_apply(p, batch["xs"], per_step=False), batch)

  trained, history = fit(params, loss_fn, data, steps=6, batch_size=16, checkpoint_dir=str(tmp_path), save_every=3)
  assert history and np.isfinite(history[-1]["loss"])
  ckpt = Checkpointer(tmp_path)
  assert ckpt.all_steps() == [3, 6]
  state = jaxlstm.init_train_state(params, optax.adam(1e-3))
  back = ckpt.restore(state)
  assert_trees_equal(back.params, trained)
  assert back.params.rnn[0].activation == "relu"
  # The activation is part of the checkpoint's structure: a tanh model cannot load it.
  tanh = params._replace(rnn=tuple(p._replace(activation="tanh") for p in params.rnn))
  with pytest.raises(CheckpointError, match="saved from a model of another structure"):
    ckpt.restore(jaxlstm.init_train_state(tanh, optax.adam(1e-3)))


def fit(*args, **kwargs):
  return jaxlstm.fit(*args, progress=False, **kwargs)


def test_relu_rnn_checkpoint_keeps_its_activation(tmp_path):
  params = jaxlstm.stack_init(jax.random.key(0), I, H, 1, cell="rnn", activation="relu")
  ckpt = Checkpointer(tmp_path)
  ckpt.save(1, params)
  assert ckpt.restore(params)[0].activation == "relu"
  with pytest.raises(CheckpointError, match=r"RNNParams\[\('relu',\)\].*RNNParams\[\('tanh',\)\]"):
    ckpt.restore(jaxlstm.stack_init(jax.random.key(0), I, H, 1, cell="rnn"))


def python_loop_kernel():
  """A kernel defined outside the package: the cell's step in a Python loop, for GRUs only."""

  def why_not(call):
    if call.cell.name != "gru":
      return f"it runs GRU layers only, not {call.cell.name}"
    return "it does not take resets" if call.resets else None

  def run(params, xs, state, valid, resets, *, lengths, unroll, remat):
    ys = []
    for t in range(xs.shape[0]):
      new, y = jaxlstm.gru_step(params, state, xs[t])
      state = new if valid is None else jax.tree.map(lambda a, b, t=t: jnp.where(valid[t][:, None], a, b), new, state)
      ys.append(y)
    return state, jnp.stack(ys)

  return jaxlstm.Kernel(name="loop", why_not=why_not, run=run, rank=1)


def test_registered_kernel_is_picked_by_auto_and_matches_reference():
  jaxlstm.register_kernel(python_loop_kernel())  # the one line
  try:
    params = random_params(jaxlstm.gru_init, I, H, dtype=jnp.float64)
    xs = normal((B, T, I), jnp.float64)
    assert jaxlstm.explain(params, xs, lengths=LENGTHS, reverse=True).kernel == "loop"
    assert jaxlstm.explain(params, xs, resets=np.zeros((B, T), bool)).kernel == "fused_gru"
    # a GRU kernel leaves LSTMs to the LSTM kernels
    lstm_params = random_params(jaxlstm.lstm_init, I, H, dtype=jnp.float64)
    assert jaxlstm.explain(lstm_params, normal((B, T, I), jnp.float64)).kernel == "fused"
    for kw in ({}, {"lengths": LENGTHS, "reverse": True}):
      got = jaxlstm.gru(params, xs, **kw)
      want = jaxlstm.gru(params, xs, impl="reference", **kw)
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert rel_err(a, b) < 1e-12
    with pytest.raises(ValueError, match="impl='loop' cannot run this layer: it runs GRU layers only, not lstm"):
      jaxlstm.lstm(random_params(jaxlstm.lstm_init, I, H), normal((B, T, I)), impl="loop")
  finally:
    jaxlstm.unregister_kernel("loop")
  assert "loop" not in jaxlstm.kernel_names()
