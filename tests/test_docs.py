"""The documentation site (docs/) builds with warnings as errors, covers every public name, and its code runs.

The build is the README's command (``sphinx-build -W --keep-going -b html docs ...``) into a temporary
directory; nothing is executed there (the notebooks are rendered with their committed outputs), so it takes
seconds. The pages' ```python blocks run here, each page's blocks in order in one namespace, as a reader
would run them; the Keras and PyTorch sides of the guides included.
"""

from __future__ import annotations

import html
import importlib
import pathlib
import re
import subprocess
import sys
import warnings

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
from public_api import public_modules, public_names  # noqa: E402

# Every page written by hand, whose code blocks run.
PAGES = sorted(
  p.relative_to(DOCS).as_posix()
  for p in DOCS.rglob("*.md")
  if not p.relative_to(DOCS).parts[0].startswith(("_", "notebooks", "api"))
)

# Modules the reference must have a page for, whatever the package walk finds.
EXPECTED_MODULES = [
  "jaxlstm",
  "jaxlstm.nnx",
  "jaxlstm.linen",
  "jaxlstm.kernels",
  "jaxlstm.interop",
  "jaxlstm.interop.torch",
  "jaxlstm.interop.keras",
  "jaxlstm.interop.flax",
  "jaxlstm.interop.xlstm",
  "jaxlstm.train",
  "jaxlstm.checkpoint",
  "jaxlstm.presets",
  "jaxlstm.tasks",
  "jaxlstm.experiment",
  "jaxlstm.sweep",
  "jaxlstm.distributed",
  "jaxlstm.models",
  "jaxlstm.optim",
  "jaxlstm.sample",
]


def build(out: pathlib.Path) -> pathlib.Path:
  """Builds the site into ``out`` with the README's flags; returns the HTML directory."""
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sphinx",
      "-W",
      "--keep-going",
      "-q",
      "-b",
      "html",
      "-d",
      str(out / "doctrees"),
      str(DOCS),
      str(out / "html"),
    ],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
    cwd=ROOT,
  )
  assert proc.returncode == 0, f"the docs build failed or warned:\n{proc.stderr[-6000:]}"
  return out / "html"


def inventory(site: pathlib.Path) -> set[str]:
  """The names of every Python object in the built site's ``objects.inv``."""
  from sphinx.util.inventory import InventoryFile

  with open(site / "objects.inv", "rb") as f:
    inv = InventoryFile.load(f, "", lambda base, uri: uri)
  data = inv.data if hasattr(inv, "data") else inv
  return {name for kind, items in data.items() if kind.startswith("py:") for name in items}


def test_the_site(tmp_path):
  """One build, every check on it (one test, so that pytest-xdist builds it once)."""
  site = build(tmp_path)
  check_pages(site)
  check_every_public_name(site)
  check_notebooks(site)
  check_figures_tables_and_math(site)


def check_pages(site):
  for page in [
    "index",
    "getting_started",
    "concepts",
    "guides/keras",
    "guides/pytorch",
    "guides/flax_equinox",
    "training",
    "speed",
    "notebooks",
    "api/index",
  ]:
    assert (site / f"{page}.html").exists(), page


def check_every_public_name(site):
  names = inventory(site)
  modules = public_modules()
  assert set(EXPECTED_MODULES) <= set(modules), sorted(set(EXPECTED_MODULES) - set(modules))
  missing = []
  for module_name in modules:
    assert module_name in names, f"no API page for {module_name}"
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)
      module = importlib.import_module(module_name)
    # A module's __all__ read directly, and the rule for modules without one (functions, classes, constants).
    for name in set(getattr(module, "__all__", [])) | set(public_names(module_name)):
      if f"{module_name}.{name}" not in names:
        missing.append(f"{module_name}.{name}")
  assert not missing, f"public names missing from the API reference: {missing}"


def check_notebooks(site):
  import nbformat

  for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    html = (site / "notebooks" / f"{notebook.stem}.html").read_text()
    outputs = [o for cell in nbformat.read(notebook, 4).cells for o in cell.get("outputs", [])]
    # What was committed is what is shown, and nothing was re-run to make it.
    assert ("cell_output" in html) == bool(outputs), notebook.name
    if any("image/png" in o.get("data", {}) for o in outputs):
      assert "<img" in html, notebook.name


def check_figures_tables_and_math(site):
  concepts = (site / "concepts.html").read_text()
  for figure in ("lengths", "mask", "resets"):
    assert f"{figure}.svg" in concepts and (site / "_images" / f"{figure}.svg").exists(), figure
  speed = (site / "speed.html").read_text()
  # The benchmark reports are included from bench/, so the site shows their current numbers: the second cell
  # of each report's first table row is on the page.
  for report in (
    "results.md",
    "results_bidirectional.md",
    "results_packed.md",
    "results_gpu.md",
    "results_gpu_unroll1.md",
    "results_mingru.md",
    "results_cells.md",
  ):
    lines = (ROOT / "bench" / report).read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if re.match(r"^\|\s*:?-+", line)) + 1
    cell = lines[first].strip("|").split("|")[1].strip().strip("`*")
    assert html.escape(cell, quote=False) in speed, (report, cell)
  assert '<div class="math notranslate nohighlight">' in (site / "api/modules/jaxlstm.html").read_text()


def test_the_figures_script_runs(tmp_path):
  pytest.importorskip("matplotlib")
  proc = subprocess.run(
    [sys.executable, str(DOCS / "figures" / "make_figures.py"), str(tmp_path)],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["lengths.svg", "mask.svg", "resets.svg"]


def test_the_readme_has_the_build_command():
  readme = (ROOT / "README.md").read_text()
  assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in readme


def test_every_jaxlstm_command_of_the_docs_is_one_the_readme_runs():
  """tests/test_readme.py runs the README's commands; the pages may only show commands from there."""
  readme = (ROOT / "README.md").read_text()
  for page in PAGES:
    for block in re.findall(r"^```bash\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M):
      for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+", " ", line.split(" #")[0]).strip()
        if line.startswith("jaxlstm "):
          assert line in re.sub(r"[ \t]+", " ", readme.replace("\\\n", " ")), (page, line)


@pytest.mark.standard_promotion
@pytest.mark.parametrize("page", PAGES)
def test_the_code_of_each_page_runs(page, tmp_path, monkeypatch):
  blocks = re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M)
  if not blocks:
    pytest.skip(f"{page} has no Python code")
  monkeypatch.chdir(tmp_path)  # what the examples write (runs/...) lands here
  monkeypatch.setenv("KERAS_BACKEND", "jax")
  namespace = {"__name__": f"docs.{page}"}
  # The pages are written for a reader's default JAX settings (float32), not the suite's x64.
  with jax.enable_x64(False), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the peers' own deprecation warnings are not the page's to fix
    for i, block in enumerate(blocks):
      try:
        exec(compile(block, f"{page}, code block {i + 1}", "exec"), namespace)
      except Exception as e:  # noqa: BLE001
        pytest.fail(f"{page}, code block {i + 1} failed: {type(e).__name__}: {e}\n\n{block}", pytrace=True)
