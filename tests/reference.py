"""Float64 NumPy references, written apart from the JAX code.

They work on one unbatched sequence at a time with explicit per-gate weight
blocks and Python loops, so that they share no code or layout trick with the
package. Params arrive as plain dicts of NumPy arrays.
"""

import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def layer_norm(v, gain, bias=0.0, eps=1e-5):
  mu = v.mean()
  var = ((v - mu) ** 2).mean()
  return (v - mu) / np.sqrt(var + eps) * gain + bias


def to_numpy(params):
  """NamedTuple params -> dict of float64 arrays (None fields and static settings such as ``activation`` dropped)."""
  out = {}
  for name, value in params._asdict().items():
    if value is None or name in getattr(type(params), "static_fields", ()):
      continue
    if hasattr(value, "_asdict"):
      for sub, v in value._asdict().items():
        out[f"{name}.{sub}"] = np.asarray(v, np.float64)
    else:
      out[name] = np.asarray(value, np.float64)
  return out


def lstm_cell(p, h, c, x):
  H = p["w_x"].shape[1] // 4
  blocks = lambda w: [w[..., k * H : (k + 1) * H] for k in range(4)]
  Wi, Wf, Wg, Wo = blocks(p["w_x"])
  Ui, Uf, Ug, Uo = blocks(p["w_h"])
  bi, bf, bg, bo = blocks(p["b"])
  if "layer_norm.x_scale" in p:
    zx = layer_norm(x @ p["w_x"], p["layer_norm.x_scale"])
    zh = layer_norm(h @ p["w_h"], p["layer_norm.h_scale"])
    zi, zf, zg, zo = blocks(zx + zh + p["b"])
  else:
    zi = x @ Wi + h @ Ui + bi
    zf = x @ Wf + h @ Uf + bf
    zg = x @ Wg + h @ Ug + bg
    zo = x @ Wo + h @ Uo + bo
  if "peephole" in p:
    zi = zi + p["peephole"][0] * c
    zf = zf + p["peephole"][1] * c
  c_new = sigmoid(zf) * c + sigmoid(zi) * np.tanh(zg)
  if "peephole" in p:
    zo = zo + p["peephole"][2] * c_new
  c_read = c_new
  if "layer_norm.c_scale" in p:
    c_read = layer_norm(c_new, p["layer_norm.c_scale"], p["layer_norm.c_bias"])
  h_new = sigmoid(zo) * np.tanh(c_read)
  if "w_proj" in p:
    h_new = h_new @ p["w_proj"]
  return (h_new, c_new), h_new


def gru_cell(p, h, x):
  """PyTorch's GRU: b_hn inside the reset product."""
  H = h.shape[-1]
  W = lambda w, k: w[..., k * H : (k + 1) * H]
  r = sigmoid(x @ W(p["w_x"], 0) + h @ W(p["w_h"], 0) + W(p["b"], 0))
  z = sigmoid(x @ W(p["w_x"], 1) + h @ W(p["w_h"], 1) + W(p["b"], 1))
  n = np.tanh(x @ W(p["w_x"], 2) + W(p["b"], 2) + r * (h @ W(p["w_h"], 2) + p["b_hn"]))
  h_new = (1 - z) * n + z * h
  return (h_new,), h_new


def gru_cell_bias_outside(p, h, x):
  """The variant with b_hn outside the reset product (not PyTorch's)."""
  H = h.shape[-1]
  W = lambda w, k: w[..., k * H : (k + 1) * H]
  r = sigmoid(x @ W(p["w_x"], 0) + h @ W(p["w_h"], 0) + W(p["b"], 0))
  z = sigmoid(x @ W(p["w_x"], 1) + h @ W(p["w_h"], 1) + W(p["b"], 1))
  n = np.tanh(x @ W(p["w_x"], 2) + W(p["b"], 2) + r * (h @ W(p["w_h"], 2)) + p["b_hn"])
  return (1 - z) * n + z * h


def rnn_cell(p, h, x, activation="tanh"):
  z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
  h_new = np.tanh(z) if activation == "tanh" else np.maximum(z, 0.0)
  return (h_new,), h_new


def run(cell, p, xs, state0, *, valid=None, resets=None):
  """Runs ``cell`` over one sequence ``xs (T, I)`` by the definitions.

  ``valid[t] == False`` skips step t (state kept, output zero). ``resets[t]``
  puts the state back to ``state0`` before step t. Returns (state, ys).
  """
  state = tuple(np.asarray(s, np.float64) for s in state0)
  ys = []
  for t in range(xs.shape[0]):
    if resets is not None and resets[t]:
      state = tuple(np.asarray(s, np.float64) for s in state0)
    new_state, y = cell(p, *state, xs[t])
    if valid is not None and not valid[t]:
      ys.append(np.zeros_like(y))
      continue
    state = new_state
    ys.append(y)
  out_size = cell(p, *state, xs[0])[1].shape[-1] if xs.shape[0] else state[0].shape[-1]
  return state, (np.stack(ys) if ys else np.zeros((0, out_size)))
