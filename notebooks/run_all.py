"""Executes the notebooks in place, top to bottom in fresh kernels, with their full settings.

The committed outputs and the thumbnails in ``notebooks/thumbs/`` come from this
script. Usage::

    python notebooks/run_all.py                 # every notebook
    python notebooks/run_all.py 02 04           # the notebooks whose names start so
    python notebooks/run_all.py --timeout 900   # seconds per notebook

``JAXLSTM_FAST`` is removed from the kernel's environment, so the full run is
what gets saved (``tests/test_notebooks.py`` runs the fast settings on copies).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).resolve().parent


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("prefixes", nargs="*", help="run only notebooks whose file names start with these")
  parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per notebook")
  args = parser.parse_args(argv)
  paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
  if args.prefixes:
    paths = [p for p in paths if any(p.name.startswith(x) for x in args.prefixes)]
  os.environ.pop("JAXLSTM_FAST", None)  # the kernel inherits this environment
  for path in paths:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    client = NotebookClient(
      nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    )
    client.execute()
    nbformat.write(nb, path)
    print(f"{path.name}: {time.perf_counter() - t0:.0f} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
