"""The public API: every name in __all__ imports, and the package says what it exports."""

import importlib

import jaxlstm


def test_public_names_import():
  assert len(set(jaxlstm.__all__)) == len(jaxlstm.__all__), "duplicate names in __all__"
  for name in jaxlstm.__all__:
    assert getattr(jaxlstm, name) is not None, name
  mod = importlib.import_module("jaxlstm")
  public = {n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))}
  assert set(jaxlstm.__all__) <= public


def test_every_public_function_has_a_docstring_with_shapes():
  for name in jaxlstm.__all__:
    obj = getattr(jaxlstm, name)
    assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"


def test_cell_layouts_are_pinned():
  # Gate order i, f, g, o: the forget bias lands in the second block.
  p = jaxlstm.lstm_init(jaxlstm_key(), 2, 3, forget_bias=7.0)
  assert list(p.b) == [0.0] * 3 + [7.0] * 3 + [0.0] * 6
  assert jaxlstm.LSTMState._fields == ("h", "c")
  assert jaxlstm.LSTMParams._fields == ("w_x", "w_h", "b", "peephole", "layer_norm", "w_proj")
  assert jaxlstm.GRUParams._fields == ("w_x", "w_h", "b", "b_hn")


def jaxlstm_key():
  import jax
  return jax.random.key(0)
