"""Every argument check: the message names the argument, what was expected and what arrived."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from tests.helpers import normal, random_params

B, T, I, H = 2, 4, 3, 5


@pytest.fixture(scope="module")
def p():
  return random_params(jaxlstm.lstm_init, I, H)


@pytest.fixture(scope="module")
def xs():
  return normal((B, T, I))


def test_init_errors():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"input_size must be a positive int; got 0"):
    jaxlstm.lstm_init(key, 0, 4)
  with pytest.raises(ValueError, match=r"hidden_size must be a positive int; got 2.5"):
    jaxlstm.gru_init(key, 3, 2.5)
  with pytest.raises(ValueError, match=r"proj_size must be smaller than hidden_size=4; got 4"):
    jaxlstm.lstm_init(key, 3, 4, proj_size=4)
  with pytest.raises(TypeError, match=r"dtype must be a floating-point dtype; got int32"):
    jaxlstm.rnn_init(key, 3, 4, dtype=jnp.int32)
  with pytest.raises(
    ValueError,
    match=r"cell must be one of \['convlstm1d', 'convlstm2d', 'gru', 'lstm', 'mingru', 'minlstm', "
    r"'rnn', 'slstm'\]; got 'lstmm'",
  ):
    jaxlstm.stack_init(key, 3, 4, 2, cell="lstmm")
  with pytest.raises(ValueError, match=r"num_layers must be a positive int; got 0"):
    jaxlstm.stack_init(key, 3, 4, 0)
  with pytest.raises(ValueError, match=r"merge must be one of .*; got 'avg'"):
    jaxlstm.stack_init(key, 3, 4, 2, bidirectional=True, merge="avg")


def test_xs_errors(p, xs):
  with pytest.raises(ValueError, match=r"xs must have shape \(\*batch, T, I\) with I=3; got shape \(3,\) \(rank 1\)"):
    jaxlstm.lstm(p, jnp.zeros((3,), jnp.float32))
  with pytest.raises(ValueError, match=r"xs must have shape \(\*batch, T, I\) with I=3 .*got shape \(2, 4, 7\)"):
    jaxlstm.lstm(p, jnp.zeros((B, T, 7), jnp.float32))
  with pytest.raises(ValueError, match=r"xs must have shape \(T, \*batch, I\) with I=3"):
    jaxlstm.lstm(p, jnp.zeros((B, T, 7), jnp.float32), time_major=True)
  with pytest.raises(TypeError, match=r"xs must be a floating-point array; got dtype int32"):
    jaxlstm.lstm(p, jnp.zeros((B, T, I), jnp.int32))
  with pytest.raises(TypeError, match=r"xs has dtype float64 but the params have dtype float32"):
    jaxlstm.lstm(p, jnp.zeros((B, T, I), jnp.float64))
  with pytest.raises(ValueError, match=r"xs must have shape \(\*batch, T, I\); got shape \(\) \(rank 0\)"):
    jaxlstm.scan(jaxlstm.lstm_step, p, jnp.zeros((), jnp.float32), None)


def test_params_errors(xs):
  g = random_params(jaxlstm.gru_init, I, H)
  with pytest.raises(TypeError, match=r"params must be LSTMParams; got GRUParams"):
    jaxlstm.lstm(g, xs)
  with pytest.raises(TypeError, match=r"params must be GRUParams; got dict"):
    jaxlstm.gru({"w_x": 1}, xs)
  mixed = random_params(jaxlstm.lstm_init, I, H)._replace(b=jnp.zeros((4 * H,), jnp.float64))
  with pytest.raises(TypeError, match=r"params.b has dtype float64 but params.w_x has float32"):
    jaxlstm.lstm(mixed, xs)


def test_state_errors(p, xs):
  with pytest.raises(ValueError, match=r"state.c must have shape \(2, 5\); got \(2, 4\)"):
    jaxlstm.lstm(p, xs, jaxlstm.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, 4))))
  with pytest.raises(ValueError, match=r"state must be a LSTMState matching the params; got tuple"):
    jaxlstm.lstm(p, xs, (jnp.zeros((B, H)),))
  with pytest.raises(TypeError, match=r"state.h must be a floating-point array; got dtype int32"):
    jaxlstm.lstm(p, xs, jaxlstm.LSTMState(jnp.zeros((B, H), jnp.int32), jnp.zeros((B, H))))
  with pytest.raises(ValueError, match=r"state.h must have shape \(2, 5\); got \(5,\)"):
    jaxlstm.gru(random_params(jaxlstm.gru_init, I, H), xs, jaxlstm.GRUState(jnp.zeros((H,))))


def test_lengths_mask_resets_errors(p, xs):
  with pytest.raises(TypeError, match=r"lengths must be an integer array; got dtype float32"):
    jaxlstm.lstm(p, xs, lengths=jnp.ones((B,), jnp.float32))
  with pytest.raises(ValueError, match=r"lengths must have shape \(2,\) \(the batch shape of xs\); got \(2, 1\)"):
    jaxlstm.lstm(p, xs, lengths=jnp.ones((B, 1), jnp.int32))
  with pytest.raises(ValueError, match=r"mask must have shape \(\*batch, T\) = \(2, 4\).*got \(4, 2\)"):
    jaxlstm.lstm(p, xs, mask=jnp.ones((T, B), bool))
  with pytest.raises(ValueError, match=r"mask must have shape \(T, \*batch\) = \(4, 2\).*got \(2, 4\)"):
    jaxlstm.lstm(p, jnp.swapaxes(xs, 0, 1), mask=jnp.ones((B, T), bool), time_major=True)
  with pytest.raises(TypeError, match=r"mask must be a bool or integer array; got dtype float32"):
    jaxlstm.lstm(p, xs, mask=jnp.ones((B, T), jnp.float32))
  with pytest.raises(ValueError, match=r"resets must have shape \(\*batch, T\) = \(2, 4\).*got \(2, 3\)"):
    jaxlstm.lstm(p, xs, resets=np.zeros((B, T - 1), bool))
  with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
    jaxlstm.scan(jaxlstm.lstm_step, p, xs, jaxlstm.lstm_zero_state(p, (B,)), lengths=jnp.ones((3,), jnp.int32))


def test_option_errors(p, xs):
  with pytest.raises(
    ValueError,
    match=r"impl must be one of \('auto', 'native', 'native_gru', 'fused', 'fused_gru', 'fused_rnn', 'parallel', "
    r"'pallas', 'pallas_gru', 'cudnn', "
    r"'reference'\); got 'cuda'",
  ):
    jaxlstm.lstm(p, xs, impl="cuda")
  with pytest.raises(ValueError, match=r"remat must be a positive int or None; got 0"):
    jaxlstm.lstm(p, xs, remat=0)
  with pytest.raises(
    ValueError,
    match=r"impl='reference' cannot run this layer: remat is implemented by the fused kernels",
  ):
    jaxlstm.lstm(p, xs, remat=2, impl="reference")
  with pytest.raises(
    ValueError,
    match=r"no kernel can run this slstm layer: native: it runs LSTM layers only, not slstm; .*"
    r"reference: remat is implemented by the fused kernels",
  ):
    jaxlstm.stack((random_params(jaxlstm.get_cell("slstm").init, I, H),), xs, remat=2)
  r = random_params(jaxlstm.rnn_init, I, H)
  with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'tanh'\]; got 'gelu'"):
    jaxlstm.rnn(r, xs, activation="gelu")


def test_stack_errors(p, xs):
  params = random_params(jaxlstm.stack_init, I, H, 2)
  with pytest.raises(
    TypeError,
    match=r"params must be a tuple of layer params from stack_init; got a single "
    r"LSTMParams \(wrap it in a tuple\)",
  ):
    jaxlstm.stack(p, xs)
  with pytest.raises(TypeError, match=r"params must be a non-empty tuple of layer params from stack_init; got tuple"):
    jaxlstm.stack((), xs)
  with pytest.raises(ValueError, match=r"params\[1\] has input size 3, but layer 0 outputs 4 features"):
    jaxlstm.stack((random_params(jaxlstm.lstm_init, I, 4), p), xs)
  bi = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True)
  with pytest.raises(
    ValueError,
    match=r"params\[1\].forward has input size 10, but layer 0 outputs 5 features "
    r"with merge='sum'",
  ):
    jaxlstm.stack(bi, xs, merge="sum")
  with pytest.raises(ValueError, match=r"states must be a sequence of 2 layer states \(one per layer\); got 1"):
    jaxlstm.stack(params, xs, (jaxlstm.lstm_zero_state(p, (B,)),))
  with pytest.raises(ValueError, match=r"states\[1\] must be a Bidirectional\(forward, backward\) pair of states"):
    jaxlstm.stack(bi, xs, (None, jaxlstm.lstm_zero_state(p, (B,))))
  with pytest.raises(ValueError, match=r"states\[1\].h must have shape \(2, 5\); got \(1, 5\)"):
    jaxlstm.stack(params, xs, (None, jaxlstm.lstm_zero_state(p, (1,))))
  with pytest.raises(ValueError, match=r"key must be a PRNG key when dropout > 0"):
    jaxlstm.stack(params, xs, dropout=0.5)
  with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\); got 1.0"):
    jaxlstm.stack(params, xs, dropout=1.0, key=jax.random.key(0))
  with pytest.raises(
    TypeError,
    match=r"params\[0\] must be the params of a registered cell "
    r"\(LSTMParams, GRUParams, RNNParams, MinGRUParams, MinLSTMParams, SLSTMParams, "
    r"ConvLSTM1DParams, ConvLSTM2DParams\); "
    r"got dict",
  ):
    jaxlstm.stack(({},), xs)
