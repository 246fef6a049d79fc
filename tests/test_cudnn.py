"""``impl="cudnn"``: the weight layout against JAX's own cuDNN reference, errors, and on a GPU the real kernel.

The weight packing is checked on any machine against
``jax.experimental.rnn.lstm_ref``, a plain-JAX LSTM that reads cuDNN's flat
layout. The kernel itself runs only on a CUDA GPU; there the tests compare
outputs, final states and gradients with the reference scan at full float32
matmul precision.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.kernels import cudnn, shell
from tests.helpers import normal, random_params, rel_err
from tests.test_fused import assert_same, layer, setup

gpu = pytest.mark.skipif(not cudnn.available(), reason="needs a CUDA GPU with cuDNN")

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])


@pytest.mark.standard_promotion
def test_packed_weights_match_jax_cudnn_reference():
  from jax.experimental import rnn

  params, xs, state = setup(jnp.float32)
  W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(cudnn.pack_weights(params), I, H, 1, False)
  y, h, c = rnn.lstm_ref(
    xs, state.h[None], state.c[None], W_ih, W_hh, b_ih, b_hh, jnp.full((B,), T, jnp.int32), I, H, 1, 0.0, False
  )
  final, hs = jaxlstm.lstm(params, xs, state, impl="reference")
  assert rel_err(y, hs) < 1e-5
  assert rel_err(h[0], final.h) < 1e-5 and rel_err(c[0], final.c) < 1e-5


def test_packed_size_is_cudnn_param_count():
  from jax.experimental import rnn

  params = random_params(jaxlstm.lstm_init, I, H)
  assert cudnn.pack_weights(params).shape == (rnn.get_num_params_in_lstm(I, H, 1, False),)


@pytest.mark.parametrize(
  "make, kw, match",
  [
    (lambda: random_params(jaxlstm.lstm_init, I, H, peephole=True), {}, "plain LSTMs only"),
    (lambda: random_params(jaxlstm.lstm_init, I, H, layer_norm=True), {}, "plain LSTMs only"),
    (lambda: random_params(jaxlstm.lstm_init, I, H, dtype=jnp.float64), {}, "float32 params only"),
    (lambda: random_params(jaxlstm.lstm_init, I, H), {"mask": np.ones((B, T), bool)}, "not mask or resets"),
    (lambda: random_params(jaxlstm.lstm_init, I, H), {"resets": np.zeros((B, T), bool)}, "not mask or resets"),
  ],
)
def test_unsupported_layers_are_refused(make, kw, match):
  params = make()
  xs = normal((B, T, I), params.w_x.dtype)
  with pytest.raises(ValueError, match=f"impl='cudnn' cannot run this layer: it .*{match}"):
    jaxlstm.lstm(params, xs, impl="cudnn", **kw)


@pytest.mark.skipif(cudnn.available(), reason="this machine has a GPU")
def test_without_gpu_the_error_says_so():
  params, xs, _ = setup(jnp.float32)
  with pytest.raises(ValueError, match="needs a CUDA GPU backend; JAX's default backend is 'cpu'"):
    jaxlstm.lstm(params, xs, impl="cudnn")
  with pytest.raises(ValueError, match="needs a CUDA GPU"):
    jaxlstm.stack(jaxlstm.stack_init(jax.random.key(0), I, H, 2), xs, impl="cudnn")


@pytest.mark.parametrize("kw", [{"reverse": True}, {"time_major": True}])
def test_reverse_and_time_major_are_refused(kw):
  params, xs, _ = setup(jnp.float32)
  with pytest.raises(ValueError, match="forward in time only .not reverse, time_major or bidirectional"):
    jaxlstm.lstm(params, xs, impl="cudnn", **kw)


def swap_outputs(run):
  """``run`` with its outputs transposed: the cotangent reaching cuDNN's backward call is then a transpose."""

  def f(p, x, s):
    final, hs = run(p, x, s)
    return final, jnp.swapaxes(hs, 0, 1)

  return f


def direct(**kw):
  """The cuDNN kernel in the layer shell, past the kernel's refusal of ``reverse`` and ``time_major``."""
  return lambda p, x, s: shell.run(cudnn.run, p, x, s, **kw)


@gpu
def test_cudnn_matches_reference_on_gpu():
  params, xs, state = setup(jnp.float32)
  _, x23, s23 = setup(jnp.float32, batch=(2, B))
  lengths = {"lengths": LENGTHS}
  assert_same(
    [
      (layer("cudnn"), layer("reference"), params, x23, s23),
      (layer("cudnn", **lengths), layer("reference", **lengths), params, xs, state),
      (swap_outputs(layer("cudnn", **lengths)), swap_outputs(layer("reference", **lengths)), params, xs, state),
    ],
    2e-5,
  )


@gpu
@pytest.mark.parametrize("kw", [{"reverse": True}, {"reverse": True, "lengths": LENGTHS}, {"time_major": True}])
def test_cudnn_reverse_and_time_major_on_gpu(kw):
  """The cases that :mod:`jaxlstm.cudnn` refuses until this test passes on a GPU (see its docstring)."""
  params, xs, state = setup(jnp.float32)
  if kw.get("time_major"):
    xs = jnp.swapaxes(xs, 0, 1)
  lengths = None if "lengths" not in kw else jnp.asarray(kw["lengths"])
  kw = {**kw, "lengths": lengths}
  assert_same([(direct(**kw), layer("reference", **kw), params, xs, state)], 2e-5)


@gpu
def test_cudnn_stack_trains_like_reference_on_gpu():
  params = jaxlstm.stack_init(jax.random.key(0), I, H, 2)
  xs = normal((B, T, I))

  def loss(p, impl):
    return jnp.sum(jnp.square(jaxlstm.stack(p, xs, lengths=LENGTHS, impl=impl)[1]))

  got = jax.jit(jax.value_and_grad(lambda p: loss(p, "cudnn")))(params)
  want = jax.jit(jax.value_and_grad(lambda p: loss(p, "reference")))(params)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert rel_err(a, b) < 2e-5
