"""The optional modules name the extra that installs their package where it is missing."""

import importlib
import re
import sys

import pytest


@pytest.mark.parametrize(
  "module, package, extra",
  [("jaxlstm.nnx", "flax", "flax"), ("jaxlstm.linen", "flax", "flax"), ("jaxlstm.equinox", "equinox", "equinox")],
)
def test_module_without_its_package_names_the_extra(module, package, extra, monkeypatch):
  # None in sys.modules makes the import fail, as on a machine without the package; monkeypatch puts back the
  # real modules afterwards.
  monkeypatch.setitem(sys.modules, package, None)
  monkeypatch.delitem(sys.modules, module, raising=False)
  want = f"{module} needs the {package} package, which is not installed: pip install 'jaxlstm[{extra}]'"
  with pytest.raises(ImportError, match=re.escape(want)):
    importlib.import_module(module)


def test_modules_import_where_their_packages_are_installed():
  for module in ("jaxlstm.nnx", "jaxlstm.linen", "jaxlstm.equinox"):
    assert hasattr(importlib.import_module(module), "Stack")
