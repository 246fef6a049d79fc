"""The public API: every name in __all__ imports, and the package says what it exports."""

import importlib
import inspect
import os
import subprocess
import sys

import jaxlstm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_import_survives_stripped_docstrings():
  # python -OO sets every __doc__ to None: code that formats, parses or appends to a docstring at import
  # time would fail for users who run optimized, and no other test runs that way.
  code = "import jaxlstm, jaxlstm.nnx, jaxlstm.linen"
  out = subprocess.run([sys.executable, "-OO", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, f"python -OO -c {code!r} failed:\n{out.stderr}"


def is_record(obj) -> bool:
  """Whether ``obj`` is a NamedTuple class: a record of named fields."""
  return inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def test_every_public_name_documents_an_example_or_its_fields():
  """The rule for the docstring of each name in ``__all__``.

  * A NamedTuple class (params, states, and the ``Cell``, ``Kernel`` and ``LayerCall`` records) is data: its
    docstring must name every field, as an ``Attributes:`` section with the fields' shapes does. An example
    is welcome there but not required, since building the record is the example of the function that
    returns it.
  * Every other class, and every function, must carry an ``Example:`` section with at least one ``>>>``
    line; ``tests/test_doctests.py`` runs it, so it cannot go stale.
  """
  missing = []
  for name in jaxlstm.__all__:
    obj = getattr(jaxlstm, name)
    doc = inspect.getdoc(obj) or ""
    if is_record(obj):
      absent = [f for f in obj._fields if f not in doc]
      if absent:
        missing.append(f"{name}: the docstring does not name the fields {absent}")
    elif "Example:" not in doc or ">>>" not in doc.split("Example:", 1)[1]:
      missing.append(f"{name}: no 'Example:' section with a '>>>' line")
  assert not missing, "\n".join(missing)


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
