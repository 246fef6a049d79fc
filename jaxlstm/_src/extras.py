"""Optional dependencies: import them where needed, and name the extra that installs them when missing."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
  """An optional dependency is not installed; the message names the pip extra that brings it."""


def require(module: str, *, extra: str, needed_by: str) -> ModuleType:
  """Imports ``module``, or raises :class:`MissingExtra` saying which extra to install.

  Args:
    module: dotted module name, e.g. ``"sklearn.datasets"``.
    extra: the jaxlstm extra that installs it, e.g. ``"tasks"``.
    needed_by: what needs it, for the message, e.g. ``"task 'digits'"``.

  Returns:
    The imported module.

  Example:
    >>> from jaxlstm._src.extras import require
    >>> require("json", extra="tasks", needed_by="this example").dumps([1])
    '[1]'
    >>> require("no_such_module", extra="tasks", needed_by="task 'x'")
    Traceback (most recent call last):
    jaxlstm._src.extras.MissingExtra: task 'x' needs the no_such_module package, ... pip install 'jaxlstm[tasks]'
  """
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise missing(module, extra=extra, needed_by=needed_by) from e


def missing(module: str, *, extra: str, needed_by: str) -> MissingExtra:
  """The :class:`MissingExtra` to raise, ``from`` the ``ImportError``, where importing ``module`` failed.

  Example:
    >>> from jaxlstm._src.extras import missing
    >>> str(missing("flax.nnx", extra="flax", needed_by="jaxlstm.nnx"))
    "jaxlstm.nnx needs the flax package, which is not installed: pip install 'jaxlstm[flax]'"
  """
  top = module.split(".")[0]
  return MissingExtra(f"{needed_by} needs the {top} package, which is not installed: pip install 'jaxlstm[{extra}]'")
