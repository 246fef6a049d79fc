"""Every notebook runs top to bottom in a fresh kernel, with the fast settings (``JAXLSTM_FAST=1``).

Each notebook is executed on a copy in ``tmp_path``, so the committed outputs
(from the full run, ``notebooks/run_all.py``) are never overwritten. The
kernels share JAX's persistent compilation cache, kept in pytest's cache
directory: most of a fast notebook's time is compilation, so later runs are
several times faster than the first. Cached executables are the same programs,
so the cache cannot change a result.
"""

import pathlib
import shutil

# nbclient and nbformat are imported outright, not skipped when missing: CI installs them with the test extra
# and must run every notebook.
import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.standard_promotion

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def compilation_cache(request, tmp_path_factory):
  cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
  return str(cache.mkdir("jax-compilation-cache") if cache is not None else tmp_path_factory.mktemp("jax-cache"))


def test_every_notebook_is_here():
  names = [p.name for p in NOTEBOOKS]
  assert [n[:2] for n in names] == ["01", "02", "03", "04", "05", "06", "07"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, compilation_cache):
  copy = tmp_path / path.name
  shutil.copy(path, copy)
  nb = nbformat.read(copy, as_version=4)
  # The kernel inherits this process's environment.
  monkeypatch.setenv("JAXLSTM_FAST", "1")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", compilation_cache)
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.delenv("JAX_ENABLE_X64", raising=False)
  client = nbclient.NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  )
  client.execute()  # raises CellExecutionError, naming the cell and its traceback, on any error
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
  assert not (tmp_path / "thumbs").exists(), "fast runs must not write thumbnails"
