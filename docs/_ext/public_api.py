"""``public-api``: a directive that documents every public name of a module, read at build time.

``.. public-api:: jaxlstm.train`` writes an autosummary table of the module's public names and an autodoc
entry for each, so a name added to a module later is documented without touching the docs. The public names
are the module's ``__all__``; a module without one has as public names the functions and classes it defines
and its upper-case constants (:func:`public_names`, which ``tests/test_docs.py`` also uses).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import warnings

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.inspect import stringify_signature


def import_module(name: str):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    return importlib.import_module(name)


# Modules that have no API page: the deprecated alias of jaxlstm.nnx, and the entry point of python -m jaxlstm.
SKIP = {"jaxlstm.nn", "jaxlstm.__main__"}

# The order of the reference's pages; a public module not named here follows them, in alphabetical order.
ORDER = [
  "jaxlstm",
  "jaxlstm.nnx",
  "jaxlstm.linen",
  "jaxlstm.equinox",
  "jaxlstm.regularizers",
  "jaxlstm.kernels",
  "jaxlstm.interop",
  "jaxlstm.interop.torch",
  "jaxlstm.interop.keras",
  "jaxlstm.interop.flax",
  "jaxlstm.interop.equinox",
  "jaxlstm.interop.haiku",
  "jaxlstm.interop.xlstm",
  "jaxlstm.train",
  "jaxlstm.optim",
  "jaxlstm.checkpoint",
  "jaxlstm.distributed",
  "jaxlstm.tasks",
  "jaxlstm.presets",
  "jaxlstm.models",
  "jaxlstm.experiment",
  "jaxlstm.sweep",
  "jaxlstm.sample",
  "jaxlstm.cli",
]


def public_modules() -> list[str]:
  """``jaxlstm`` and its public submodules: every module outside ``jaxlstm._src`` whose name has no underscore
  part, :data:`SKIP` aside, in the order of :data:`ORDER`."""
  import jaxlstm

  found = {"jaxlstm"}
  for info in pkgutil.walk_packages(jaxlstm.__path__, "jaxlstm."):
    parts = info.name.split(".")
    if info.name not in SKIP and not any(part.startswith("_") for part in parts):
      found.add(info.name)
  known = [name for name in ORDER if name in found]
  return known + sorted(found - set(known))


def public_names(module_name: str) -> list[str]:
  """The public names of a module: its ``__all__``, or else what it defines (no underscore) and its constants."""
  module = import_module(module_name)
  if hasattr(module, "__all__"):
    return list(module.__all__)
  names = []
  for name, value in vars(module).items():
    if name.startswith("_") or inspect.ismodule(value):
      continue
    defined_here = getattr(value, "__module__", None) == module_name and (
      inspect.isclass(value) or inspect.isfunction(value)
    )
    constant = name.isupper() and not (inspect.isclass(value) or callable(value))
    if defined_here or constant:
      names.append(name)
  return names


@functools.cache
def homes() -> dict[int, str]:
  """Where each public object is documented in full, by ``id``: under the name of the module that defines it
  if that module is public, else under its first public name in :data:`ORDER`. Its other public names are
  documented as aliases of that one, so each object has one full entry (and one canonical name)."""
  found: dict[int, list[str]] = {}
  objects = {}
  for module_name in public_modules():
    module = import_module(module_name)
    for name in public_names(module_name):
      value = getattr(module, name)
      if isinstance(value, (int, float, str, bool)) or value is None:
        continue  # small immutable constants may be shared objects; they are never aliases
      found.setdefault(id(value), []).append(f"{module_name}.{name}")
      objects[id(value)] = value
  result = {}
  for key, names in found.items():
    defining = getattr(objects[key], "__module__", None)
    own = [full for full in names if full.rsplit(".", 1)[0] == defining]
    result[key] = (own or names)[0]
  return result


def _kind(value) -> str:
  if inspect.ismodule(value) or not callable(value):
    return "data"
  return "class" if inspect.isclass(value) else "function"


def _entry(module_name: str, name: str, value) -> list[str]:
  """The reST that documents one public name."""
  full = f"{module_name}.{name}"
  home = homes().get(id(value), full)
  if home != full:  # the same object under another public name: a short entry that points there
    return [f".. py:{_kind(value)}:: {name}", f"   :module: {module_name}", "", f"   Alias of :py:obj:`{home}`.", ""]
  if inspect.ismodule(value):  # a submodule re-exported by name, such as jaxlstm.kernels.fused
    doc = inspect.cleandoc(value.__doc__ or "")
    lines = [
      f".. py:data:: {name}",
      f"   :module: {module_name}",
      "   :type: module",
      "",
      f"   The module ``{value.__name__}``.",
      "",
    ]
    return lines + ["   " + line if line else "" for line in doc.splitlines()] + [""]
  if inspect.isclass(value):
    lines = [f".. autoclass:: {full}"]
    if not (issubclass(value, tuple) and hasattr(value, "_fields")):  # a NamedTuple's fields are in its docstring
      lines += ["   :members:"]
    return lines + [""]
  if callable(value):
    return [f".. autofunction:: {full}", ""]
  return [f".. autodata:: {full}", "   :no-value:", ""]


def _drop_type_docstring(app, what, name, obj, options, lines) -> None:
  """A constant without a docstring of its own (a dict, a tuple) gets none, rather than its type's."""
  if what == "data" and not inspect.isclass(obj) and type(obj).__doc__:
    if lines and lines[0].strip() == inspect.cleandoc(type(obj).__doc__).splitlines()[0].strip():
      lines.clear()


def _linen_signature(app, what, name, obj, options, signature, return_annotation):
  """A Linen module's signature without the ``parent`` and ``name`` fields that every Linen module has."""
  if what != "class" or not signature or "parent" not in signature:
    return None
  try:
    from flax import linen
  except ImportError:
    return None
  if not (inspect.isclass(obj) and issubclass(obj, linen.Module)):
    return None
  sig = inspect.signature(obj)
  kept = [p for p in sig.parameters.values() if p.name not in ("parent", "name")]
  return stringify_signature(sig.replace(parameters=kept, return_annotation=inspect.Signature.empty)), None


class PublicAPI(SphinxDirective):
  """Documents every public name of the module given as the argument."""

  required_arguments = 1

  def run(self) -> list[nodes.Node]:
    module_name = self.arguments[0]
    module = import_module(module_name)
    names = public_names(module_name)
    lines = [f".. automodule:: {module_name}", "", ".. autosummary::", ""]
    lines += [f"   {name}" for name in names] + [""]
    for name in names:
      lines += _entry(module_name, name, getattr(module, name))
    container = nodes.container()
    self.state.nested_parse(StringList(lines, source=f"<public-api {module_name}>"), self.content_offset, container)
    return container.children


def setup(app):
  app.add_directive("public-api", PublicAPI)
  app.connect("autodoc-process-docstring", _drop_type_docstring)
  app.connect("autodoc-process-signature", _linen_signature)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
