"""Sphinx configuration of jaxlstm's documentation site.

Build: ``pip install -e '.[docs]' && sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

import jaxlstm  # noqa: E402

project = "jaxlstm"
author = "the jaxlstm authors"
copyright = "the jaxlstm authors"
release = version = jaxlstm.__version__

extensions = [
  "myst_nb",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "public_api",
]

# The notebooks live in notebooks/ at the repository root; they are copied into the source tree at each build
# (docs/notebooks/, ignored by git) and rendered with the outputs they were committed with: nothing is executed.
NOTEBOOKS = DOCS / "notebooks"
NOTEBOOKS.mkdir(exist_ok=True)


def _write(path: pathlib.Path, data: bytes) -> None:
  """Writes ``path`` if its content differs, atomically: two builds at once (pytest-xdist) never read half a file."""
  if path.exists() and path.read_bytes() == data:
    return
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)


for _nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
  _write(NOTEBOOKS / _nb.name, _nb.read_bytes())
for _stale in NOTEBOOKS.glob("*.ipynb"):
  if not (ROOT / "notebooks" / _stale.name).exists():
    _stale.unlink(missing_ok=True)
nb_execution_mode = "off"

# The API reference: one page per public module (every module outside jaxlstm._src, found by walking the
# package, so a module added later gets its page), each listing the module's public names at build time
# (docs/_ext/public_api.py). The pages are reST, since the directive writes autodoc's reST; they are written to
# docs/api/modules/, ignored by git.
from public_api import public_modules  # noqa: E402

API_PAGES = DOCS / "api" / "modules"
API_PAGES.mkdir(parents=True, exist_ok=True)
_pages = {}
for _name in public_modules():
  _title = f"``{_name}``"
  _pages[f"{_name}.rst"] = f"{_title}\n{'=' * len(_title)}\n\n.. public-api:: {_name}\n"
# The reference's table of contents, in public_modules() order; api/index.md includes it.
_pages["_toctree.md"] = (
  "```{toctree}\n:maxdepth: 1\n\n" + "".join(f"modules/{_n}\n" for _n in public_modules()) + "```\n"
)
for _file in API_PAGES.glob("*"):
  if _file.name not in _pages and not _file.name.startswith("."):
    _file.unlink(missing_ok=True)
for _file, _text in _pages.items():
  _write(API_PAGES / _file, _text.encode())

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "figures/*.py", "api/modules/_toctree.md", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False


# An unqualified type in a signature (``-> Cell``) matches jaxlstm.Cell, jaxlstm.nnx.Cell and jaxlstm.linen.Cell;
# Sphinx links the first and warns that there were several. That warning (and only it) is silenced.
suppress_warnings = ["ref.python"]

html_theme = "furo"
html_title = f"jaxlstm {release}"
html_static_path = []
