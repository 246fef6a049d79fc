"""The docstring examples of every module run as doctests, so the docs cannot drift from the code.

Every module of the package is covered, ``jaxlstm._src`` included, since that is where the functions that
the public modules re-export are defined (and documented); the modules are found with
:func:`pkgutil.walk_packages`, so a new module is covered as soon as it exists.
Each example sees its module's globals plus the names a reader is assumed to have imported (:data:`GLOBS`).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tempfile
from typing import NamedTuple

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm

# The names every example may use without importing them.
GLOBS = {"jax": jax, "jnp": jnp, "np": np, "jaxlstm": jaxlstm, "nnx": nnx, "linen": linen, "NamedTuple": NamedTuple}

# jaxlstm.nn is a deprecated alias of jaxlstm.nnx that warns on import; its docs are jaxlstm.nnx's.
SKIP = {"jaxlstm.nn"}

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def documented_modules() -> list[str]:
  """``jaxlstm`` and the dotted names of all its submodules (``__main__`` and :data:`SKIP` aside), sorted."""
  names = {"jaxlstm"}
  # onerror swallows a subpackage that fails to import, so that collection still succeeds: its test then
  # fails on the import, with the traceback, instead of the whole file failing to collect.
  for info in pkgutil.walk_packages(jaxlstm.__path__, "jaxlstm.", onerror=lambda name: None):
    if not info.name.endswith("__main__") and info.name not in SKIP:
      names.add(info.name)
  return sorted(names)


MODULES = documented_modules()


def test_discovery_finds_every_module():
  for name in (
    "jaxlstm",
    "jaxlstm._src.layers",
    "jaxlstm._src.cells.lstm",
    "jaxlstm._src.kernels.fused",
    "jaxlstm.kernels",
    "jaxlstm.train",
    "jaxlstm.interop.torch",
    "jaxlstm.nnx",
  ):
    assert name in MODULES, name
  assert "jaxlstm.nn" not in MODULES


# The examples are written for a reader's default JAX settings: float32 by default and standard dtype
# promotion. The suite's x64 and strict promotion (conftest.py) would turn every unadorned ``jnp.ones`` into
# float64 and fail it against float32 params, which is not what the reader sees.
@pytest.mark.standard_promotion
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
  # Whatever an example writes (checkpoints, runs) lands below the test's temporary directory: relative
  # paths through the working directory, and tempfile's directories through its default root.
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  # Imported under the suite's settings, as every other test imports it: only the examples run without x64.
  module = importlib.import_module(name)
  tests = [t for t in doctest.DocTestFinder().find(module, extraglobs=GLOBS) if t.examples]
  if not tests:
    pytest.skip(f"{name} has no docstring examples")
  runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
  report: list[str] = []
  with jax.enable_x64(False):
    for test in sorted(tests, key=lambda t: t.name):
      runner.run(test, out=report.append)
  if runner.failures:
    pytest.fail(f"{runner.failures} of {runner.tries} examples failed in {name}:\n" + "".join(report), pytrace=False)
