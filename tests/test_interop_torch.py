"""PyTorch interop: converted weights reproduce torch's outputs, final states and gradients.

Every parity test runs real ``torch.nn`` modules on random weights and inputs
(packed sequences for ``lengths``) and compares in float32 within 1e-5 relative
error. Torch's weight gradients are mapped through ``from_torch`` after
checking that ``b_ih`` and ``b_hh`` get the same gradient wherever we fold them.
"""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for jaxlstm.interop.torch")

import jaxlstm  # noqa: E402
from jaxlstm.interop.torch import from_torch, from_torch_state, to_torch, to_torch_state, torch_options  # noqa: E402
from tests.helpers import random_params, rel_err  # noqa: E402

# PyTorch's own notice that it runs proj_size without oneDNN.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

B, T, I, H = 3, 5, 3, 4
TOL = 1e-5
LENGTHS = np.array([5, 2, 4])

# Each setting costs a JAX compile, so each config covers several: together they
# exercise num_layers, bidirectional, batch_first both ways, bias=False,
# proj_size, both RNN nonlinearities (tanh in CELLS) and packed sequences.
CONFIGS = {
  "lstm-2layer-bi": (torch.nn.LSTM, dict(num_layers=2, bidirectional=True, batch_first=True)),
  "lstm-proj-no-bias-time-major": (torch.nn.LSTM, dict(proj_size=2, bias=False)),
  "gru-2layer-bi": (torch.nn.GRU, dict(num_layers=2, bidirectional=True, batch_first=True)),
  "rnn-relu-bi-time-major": (torch.nn.RNN, dict(bidirectional=True, nonlinearity="relu")),
}
# Only for the exact round trip, which compiles nothing.
MORE_CONFIGS = {
  "gru-no-bias-time-major": (torch.nn.GRU, dict(bias=False)),
  "rnn-tanh-2layer": (torch.nn.RNN, dict(num_layers=2, batch_first=True)),
}


def randomize(module, seed=0, scale=0.5):
  """Random N(0, scale²) weights everywhere, so that no init pattern hides a bug."""
  rng = np.random.default_rng(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.from_numpy(scale * rng.standard_normal(tuple(p.shape))).to(p.dtype))
  return module


def make(cls, seed=0, **kwargs):
  return randomize(cls(I, H, **kwargs), seed).eval()


def t(x):
  return torch.from_numpy(np.asarray(x, np.float32).copy())


def j(x):
  return jnp.asarray(x.detach().numpy())


def drop_biases(params):
  """Our params always have biases; with bias=False torch has none, so their gradients are not compared."""

  def drop(p):
    return p._replace(b=jnp.zeros_like(p.b), **({"b_hn": jnp.zeros_like(p.b_hn)} if hasattr(p, "b_hn") else {}))

  return jax.tree_util.tree_map(drop, params, is_leaf=lambda p: hasattr(p, "w_x"))


def folded_grads(module):
  """Torch's weight gradients in our layout: ``from_torch`` of a module holding the grads.

  We store one bias where torch has two (``b = b_ih + b_hh``), so ``dL/db`` is
  torch's ``b_ih.grad``, which must equal ``b_hh.grad`` on the folded part;
  that part of ``b_hh.grad`` is then zeroed so that it is not counted twice.
  The GRU keeps ``b_hn``, the last block of ``b_hh``.
  """
  g = copy.deepcopy(module)
  params = dict(module.named_parameters())
  with torch.no_grad():
    for name, p in g.named_parameters():
      p.copy_(params[name].grad)
    for name, p in g.named_parameters():
      if name.startswith("bias_hh"):
        n = 2 * H if isinstance(module, (torch.nn.GRU, torch.nn.GRUCell)) else p.shape[0]
        ih = getattr(g, name.replace("bias_hh", "bias_ih"))
        np.testing.assert_allclose(p[:n].numpy(), ih[:n].numpy(), rtol=1e-6, atol=1e-7)
        p[:n] = 0
  return from_torch(g)


def _np(x):
  return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_close(got, want, what):
  got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
  assert len(got) == len(want), f"{what}: {len(got)} arrays, expected {len(want)}"
  for i, (a, b) in enumerate(zip(got, want)):
    err = rel_err(_np(a), _np(b))
    assert err < TOL, f"{what} (array {i}): relative error {err:.2e}"


def torch_run(module, xs, hx, lengths, batch_first):
  """Runs the module, on a packed sequence when ``lengths`` is given; returns padded outputs."""
  if lengths is None:
    return module(xs, hx)
  packed = torch.nn.utils.rnn.pack_padded_sequence(
    xs, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False
  )
  out, h_n = module(packed, hx)
  out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
  return out, h_n


@functools.cache
def ours(opts_items, with_lengths):
  """``(states, hs)`` and the gradients of ``sum(hs*r) + sum(states*s)``, jitted once per setting."""
  opts = dict(opts_items)

  def loss(params, xs, states, lengths, r, s):
    finals, hs = jaxlstm.stack(params, xs, states, lengths=lengths if with_lengths else None, **opts)
    total = jnp.sum(hs * r) + sum(
      jnp.sum(a * b) for a, b in zip(jax.tree_util.tree_leaves(finals), jax.tree_util.tree_leaves(s))
    )
    return total, (finals, hs)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


@pytest.mark.parametrize(
  "config,with_lengths",
  [
    ("lstm-2layer-bi", True),
    ("lstm-proj-no-bias-time-major", False),
    ("gru-2layer-bi", True),
    ("rnn-relu-bi-time-major", True),
  ],
)
def test_sequence_parity(config, with_lengths):
  cls, kwargs = CONFIGS[config]
  module = make(cls, **kwargs)
  params = from_torch(module)
  opts = torch_options(module)
  assert opts["time_major"] == (not kwargs.get("batch_first", False))
  rng = np.random.default_rng(1)
  xs_np = rng.standard_normal((B, T, I)).astype(np.float32)
  if opts["time_major"]:
    xs_np = xs_np.transpose(1, 0, 2).copy()
  # A random initial state, in torch's layout, through the state converters.
  L, D = module.num_layers, 2 if module.bidirectional else 1
  P = module.proj_size or H
  hx = t(rng.standard_normal((L * D, B, P))).requires_grad_()
  cx = t(rng.standard_normal((L * D, B, H))).requires_grad_()
  torch_hx = (hx, cx) if cls is torch.nn.LSTM else hx
  states = from_torch_state(torch_hx, module)

  xs = t(xs_np).requires_grad_()
  out, h_n = torch_run(module, xs, torch_hx, LENGTHS if with_lengths else None, not opts["time_major"])
  # The same scalar loss on both sides: random weights on outputs and final states.
  r = rng.standard_normal(out.shape).astype(np.float32)
  if with_lengths:  # only the valid steps count (padding is zero on both sides anyway)
    valid = np.arange(T)[:, None] < LENGTHS[None, :]
    r = r * (valid.T if not opts["time_major"] else valid)[..., None]
  h_n_flat = h_n if isinstance(h_n, tuple) else (h_n,)
  s = [rng.standard_normal(a.shape).astype(np.float32) for a in h_n_flat]
  total = (out * t(r)).sum() + sum((a * t(b)).sum() for a, b in zip(h_n_flat, s))
  total.backward()

  s_ours = from_torch_state(tuple(t(a) for a in s) if cls is torch.nn.LSTM else t(s[0]), module)
  grad_fn = ours(tuple(sorted(opts.items())), with_lengths)
  (g_params, g_xs, g_states), (finals, hs) = grad_fn(
    params, j(xs), states, jnp.asarray(LENGTHS), jnp.asarray(r), s_ours
  )
  assert_close(hs, out.detach().numpy(), "outputs")
  assert_close(to_torch_state(finals, module), h_n, "final state")
  assert_close(g_xs, xs.grad.numpy(), "d/dxs")
  assert_close(to_torch_state(g_states, module), (hx.grad, cx.grad) if cls is torch.nn.LSTM else hx.grad, "d/dhx")
  assert_close(g_params if module.bias else drop_biases(g_params), folded_grads(module), "d/dparams")


CELLS = {
  "lstm-cell": (torch.nn.LSTMCell, {}, jaxlstm.lstm_step),
  "gru-cell": (torch.nn.GRUCell, {}, jaxlstm.gru_step),
  "rnn-cell-tanh": (torch.nn.RNNCell, {}, jaxlstm.rnn_step),
  "rnn-cell-relu": (torch.nn.RNNCell, dict(nonlinearity="relu"), jaxlstm.rnn_step),
}


@pytest.mark.parametrize("config", CELLS)
def test_cell_parity(config):
  cls, kwargs, step = CELLS[config]
  module = make(cls, **kwargs)
  params = from_torch(module)
  assert torch_options(module) == {}  # a relu RNNCell's nonlinearity is in the params
  rng = np.random.default_rng(2)
  x = t(rng.standard_normal((B, I))).requires_grad_()
  h = t(rng.standard_normal((B, H))).requires_grad_()
  c = t(rng.standard_normal((B, H))).requires_grad_()
  hx = (h, c) if cls is torch.nn.LSTMCell else h
  new = module(x, hx)
  new_flat = new if isinstance(new, tuple) else (new,)
  s = [rng.standard_normal((B, H)).astype(np.float32) for _ in new_flat]
  sum((a * t(b)).sum() for a, b in zip(new_flat, s)).backward()

  def loss(params, state, x, s):
    new_state, _ = step(params, state, x)
    return sum(jnp.sum(a * b) for a, b in zip(new_state, s)), new_state

  (g_params, g_state, g_x), new_state = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(
    params, from_torch_state(hx, module), j(x), [jnp.asarray(a) for a in s]
  )
  assert_close(to_torch_state(new_state, module), new, "new state")
  assert_close(g_x, x.grad.numpy(), "d/dx")
  assert_close(to_torch_state(g_state, module), (h.grad, c.grad) if cls is torch.nn.LSTMCell else h.grad, "d/dhx")
  assert_close(g_params if module.bias else drop_biases(g_params), folded_grads(module), "d/dparams")


def assert_bitwise(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("config", list(CONFIGS) + list(MORE_CONFIGS) + list(CELLS) + ["gru-cell-no-bias"])
def test_round_trip_is_exact(config):
  """ours -> torch -> ours gives the params back bit for bit (b_hh is written as zeros)."""
  cls, kwargs = {**CONFIGS, **MORE_CONFIGS, "gru-cell-no-bias": (torch.nn.GRUCell, dict(bias=False))}.get(
    config, CELLS.get(config, (None, None))[:2]
  )
  params = from_torch(make(cls, seed=3, **kwargs))  # folded biases: not what torch stored
  target = make(cls, seed=4, **kwargs)
  assert to_torch(params, target) is target
  assert_bitwise(from_torch(target), params)


def test_round_trip_float64():
  module = make(torch.nn.GRU, num_layers=2).double()
  params = from_torch(module)
  assert params[0].w_x.dtype == jnp.float64
  assert_bitwise(from_torch(to_torch(params, make(torch.nn.GRU, seed=5, num_layers=2).double())), params)


def test_layout():
  """Pin the layout: w_x is weight_ih.T, the LSTM bias is the sum, the GRU keeps b_hn apart."""
  lstm = make(torch.nn.LSTM)
  (p,) = from_torch(lstm)
  np.testing.assert_array_equal(p.w_x, lstm.weight_ih_l0.detach().numpy().T)
  np.testing.assert_array_equal(p.b, (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy())
  gru = make(torch.nn.GRU)
  (g,) = from_torch(gru)
  np.testing.assert_array_equal(g.b_hn, gru.bias_hh_l0[2 * H :].detach().numpy())
  np.testing.assert_array_equal(g.b[2 * H :], gru.bias_ih_l0[2 * H :].detach().numpy())
  target = to_torch((g,), make(torch.nn.GRU, seed=1))
  np.testing.assert_array_equal(target.bias_hh_l0.detach().numpy(), np.concatenate([np.zeros(2 * H), g.b_hn]))
  np.testing.assert_array_equal(to_torch((p,), make(torch.nn.LSTM, seed=1)).bias_hh_l0.detach().numpy(), 0)
  relu = make(torch.nn.RNN, nonlinearity="relu")
  assert torch_options(relu) == {"time_major": True}  # the nonlinearity travels in the params
  assert from_torch(relu)[0].activation == "relu" and from_torch(make(torch.nn.RNN))[0].activation == "tanh"
  assert from_torch(make(torch.nn.RNNCell, nonlinearity="relu")).activation == "relu"
  assert torch_options(make(torch.nn.GRUCell)) == {}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_relu_rnn_runs_as_a_plain_stack(bidirectional):
  """A converted nn.RNN(nonlinearity="relu") computes relu in jaxlstm.stack without any extra argument.

  Before the activation was part of the params this silently computed tanh;
  relu's outputs are never negative, so tanh could not pass.
  """
  module = make(
    torch.nn.RNN, seed=6, num_layers=2, bidirectional=bidirectional, nonlinearity="relu", batch_first=True
  )  # batch-major, jaxlstm.stack's default
  params = from_torch(module)
  xs = np.random.default_rng(7).standard_normal((B, T, I)).astype(np.float32)
  with torch.no_grad():
    out, h_n = module(t(xs))
  finals, hs = jaxlstm.stack(params, jnp.asarray(xs))
  assert_close(hs, out, "outputs")
  assert_close(to_torch_state(finals, module), h_n, "final state")


def test_to_torch_refuses_the_other_nonlinearity():
  """relu weights are never written into a tanh module, nor tanh into relu; nothing is written on error."""
  relu = from_torch(make(torch.nn.RNN, seed=1, num_layers=2, bidirectional=True, nonlinearity="relu"))
  target = make(torch.nn.RNN, num_layers=2, bidirectional=True)
  before = [p.clone() for p in target.parameters()]
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.forward\.activation is 'relu' but module \(RNN\) has "
    r"nonlinearity='tanh'; build the peer with nonlinearity='relu'",
  ):
    to_torch(relu, target)
  assert all(torch.equal(a, b) for a, b in zip(before, target.parameters())), "nothing may be written on error"
  # Only the second layer disagrees: the first layer must not be written either.
  mixed = (relu[0], jaxlstm.Bidirectional(*(p._replace(activation="tanh") for p in relu[1])))
  target = make(torch.nn.RNN, num_layers=2, bidirectional=True, nonlinearity="relu")
  before = [p.clone() for p in target.parameters()]
  with pytest.raises(
    ValueError,
    match=r"params\[1\]\.forward\.activation is 'tanh' but module \(RNN\) has "
    r"nonlinearity='relu'",
  ):
    to_torch(mixed, target)
  assert all(torch.equal(a, b) for a, b in zip(before, target.parameters())), "nothing may be written on error"
  cell = from_torch(make(torch.nn.RNNCell))
  with pytest.raises(
    ValueError,
    match=r"params\.activation is 'tanh' but module \(RNNCell\) has "
    r"nonlinearity='relu'",
  ):
    to_torch(cell, make(torch.nn.RNNCell, nonlinearity="relu"))
  to_torch(relu, target)  # the same activation is written
  assert all(p.activation == "relu" for layer in from_torch(target) for p in layer)


def test_state_converters():
  module = make(torch.nn.LSTM, num_layers=2, bidirectional=True, proj_size=2)
  h = torch.arange(4 * B * 2, dtype=torch.float32).reshape(4, B, 2)
  c = torch.arange(4 * B * H, dtype=torch.float32).reshape(4, B, H)
  states = from_torch_state((h, c), module)
  assert isinstance(states[1], jaxlstm.Bidirectional)
  np.testing.assert_array_equal(states[1].backward.h, h[3].numpy())  # layer 1, backward
  np.testing.assert_array_equal(states[0].forward.c, c[0].numpy())
  h2, c2 = to_torch_state(states, module)
  assert torch.equal(h2, h) and torch.equal(c2, c)


def test_errors():
  lstm = make(torch.nn.LSTM, num_layers=2)
  params = from_torch(lstm)
  with pytest.raises(
    TypeError,
    match=r"module must be a torch\.nn\.LSTM, GRU, RNN, LSTMCell, GRUCell or "
    r"RNNCell; got torch\.nn\.modules\.linear\.Linear",
  ):
    from_torch(torch.nn.Linear(3, 4))
  with pytest.raises(ValueError, match=r"params must have 2 layers to match module \(LSTM\); got 1"):
    to_torch(params[:1], lstm)
  with pytest.raises(
    TypeError,
    match=r"params must be a tuple of layer params .*got a single LSTMParams "
    r"\(wrap it in a tuple\)",
  ):
    to_torch(params[0], make(torch.nn.LSTM))
  with pytest.raises(TypeError, match=r"params\[0\] must be LSTMParams for this module \(LSTM\); got GRUParams"):
    to_torch(from_torch(make(torch.nn.GRU)), make(torch.nn.LSTM))
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.w_x must have shape \(3, 20\) \(the transpose of "
    r"module\.weight_ih_l0, \(20, 3\)\); got \(3, 16\)",
  ):
    to_torch(params, torch.nn.LSTM(I, 5, num_layers=2))
  with pytest.raises(
    TypeError,
    match=r"params\[0\] must be a Bidirectional\(forward, backward\) pair, since "
    r"module \(LSTM\) is bidirectional; got LSTMParams",
  ):
    to_torch(params, torch.nn.LSTM(I, H, num_layers=2, bidirectional=True))
  with pytest.raises(TypeError, match=r"params\[0\]\.w_x has dtype float64 but module \(LSTM\) holds float32"):
    to_torch(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params), lstm)
  with pytest.raises(
    TypeError,
    match=r"params must be GRUParams for this module \(GRUCell\); got tuple "
    r"\(a stack tuple was given",
  ):
    to_torch(from_torch(make(torch.nn.GRU)), make(torch.nn.GRUCell))
  peep = random_params(jaxlstm.lstm_init, I, H, peephole=True)
  with pytest.raises(ValueError, match=r"params\[0\]\.peephole must be None: module \(LSTM\) has no peephole"):
    to_torch((peep,), make(torch.nn.LSTM))
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.w_proj must be an array of shape \(H, P\) = \(4, 2\) since "
    r"module\.proj_size=2; got None",
  ):
    to_torch(from_torch(make(torch.nn.LSTM)), make(torch.nn.LSTM, proj_size=2))
  with pytest.raises(TypeError, match=r"hx must be a pair \(h, c\) for LSTM; got Tensor"):
    from_torch_state(torch.zeros(2, B, H), lstm)
  with pytest.raises(ValueError, match=r"states must have 2 layers to match module \(LSTM\); got 1"):
    to_torch_state(from_torch_state((torch.zeros(2, B, H),) * 2, lstm)[:1], lstm)


def test_no_bias_module_refuses_a_nonzero_bias():
  module = make(torch.nn.GRU, bias=False)
  before = [p.clone() for p in module.parameters()]
  (p,) = from_torch(make(torch.nn.GRU))  # has biases
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.b must be all zeros because module \(GRU\) has "
    r"bias=False; got max \|b\| = ",
  ):
    to_torch((p,), module)
  assert all(torch.equal(a, b) for a, b in zip(before, module.parameters())), "nothing may be written on error"
  zero_b = p._replace(b=np.zeros(p.b.shape, np.float32))
  with pytest.raises(ValueError, match=r"params\[0\]\.b_hn must be all zeros because module \(GRU\) has bias=False"):
    to_torch((zero_b,), module)
  to_torch((zero_b._replace(b_hn=np.zeros(p.b_hn.shape, np.float32)),), module)


def test_dropout_in_training_mode_warns():
  module = torch.nn.LSTM(I, H, num_layers=2, dropout=0.5)
  with pytest.warns(UserWarning, match=r"module\.dropout=0\.5 is active because the module is in training mode"):
    from_torch(module)
  import warnings

  with warnings.catch_warnings():
    warnings.simplefilter("error")
    from_torch(module.eval())
