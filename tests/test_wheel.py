"""The sdist and wheel build, pass ``twine check``, and the wheel works in a fresh virtual environment.

The build runs without isolation (setuptools and ``build`` come with the test extra), on a copy of the
source tree in ``tmp_path``, so nothing is written into the checkout. The fresh environment gets the
wheel alone (``--no-deps``); its dependencies are the test environment's, made visible by a ``.pth``
file. A ``.pth`` line is a plain path: the ``.pth`` files found there (the checkout's editable install
among them) are not run, so ``import jaxlstm`` can only find the installed wheel, and the test checks
that it did, from a directory outside the checkout.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)  # tomllib is 3.11+
SMOKE = """
import importlib.metadata, pathlib, jax.numpy as jnp
import jaxlstm, jaxlstm.nnx, jaxlstm.linen
import jax
from jaxlstm.kernels import native
params = jaxlstm.lstm_init(jax.random.key(0), 3, 4)
state, hs = jaxlstm.lstm(params, jnp.ones((2, 5, 3)))
assert hs.shape == (2, 5, 4), hs.shape
if native.load_error() is None:
  state, hs = jaxlstm.lstm(params, jnp.ones((2, 5, 3)), impl="native")
  assert hs.shape == (2, 5, 4), hs.shape
print(pathlib.Path(jaxlstm.__file__).resolve())
print(importlib.metadata.version("jaxlstm"))
print(native.load_error() is None)
"""


def run(*args, **kwargs):
  proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
  assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
  return proc.stdout


def package_files() -> set[str]:
  """Every file of the package in the checkout, data files included, as a path inside the wheel.

  Compiled files are left out: an editable install builds the native kernel's library in place, and the
  wheel holds its own build of it (checked apart).
  """
  return {
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "jaxlstm").rglob("*")
    if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo", ".so")
  }


def copy_source(dest: pathlib.Path) -> None:
  """The files a build reads: the top-level files (pyproject, README, MANIFEST.in, ...), the package, the tests."""
  dest.mkdir()
  for p in ROOT.iterdir():
    if p.is_file():
      shutil.copy2(p, dest / p.name)
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for name in ("jaxlstm", "tests"):
    shutil.copytree(ROOT / name, dest / name, ignore=ignore)


def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
  src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
  copy_source(src)
  # sdist first, then the wheel from the unpacked sdist: a file missing from the sdist fails the wheel.
  run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src)
  # The native kernel's optional extension makes the wheel platform-specific (cp3XX-cp3XX-linux_x86_64, say).
  wheels = sorted(dist.glob(f"jaxlstm-{VERSION}-*.whl"))
  sdist = dist / f"jaxlstm-{VERSION}.tar.gz"
  assert len(wheels) == 1 and sdist.is_file(), sorted(os.listdir(dist))
  wheel = wheels[0]
  run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)

  # Every file of the package ships, py.typed and any data file of the tasks included: a new non-Python
  # file needs its pattern under [tool.setuptools.package-data] in pyproject.toml.
  expected = package_files()
  assert "jaxlstm/py.typed" in expected
  with zipfile.ZipFile(wheel) as z:
    in_wheel = {n for n in z.namelist() if not n.startswith(f"jaxlstm-{VERSION}.dist-info/")}
    compiled = {n for n in in_wheel if n.endswith(".so")}
    in_wheel -= compiled
    entry_points = z.read(f"jaxlstm-{VERSION}.dist-info/entry_points.txt").decode()
    wheel_license = z.read(f"jaxlstm-{VERSION}.dist-info/licenses/LICENSE").decode()
  assert expected - in_wheel == set(), "missing from the wheel"
  assert in_wheel - expected == set(), "in the wheel but not in the checkout"
  assert "jaxlstm = jaxlstm.cli:main" in entry_points
  # The native kernel is built wherever a C++ compiler is (Linux); elsewhere the wheel goes without it.
  builds_native = sys.platform.startswith("linux") and shutil.which("c++") is not None
  assert {n.split(".")[0] for n in compiled} == ({"jaxlstm/_src/native/_native"} if builds_native else set()), compiled
  assert wheel_license == (ROOT / "LICENSE").read_text() and "Apache License" in wheel_license
  with tarfile.open(sdist) as t:
    in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
  assert expected - in_sdist == set(), "missing from the sdist"
  assert {"README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "tests/conftest.py"} <= in_sdist

  # A venv without pip (faster to make); this interpreter's pip installs into it.
  run(sys.executable, "-m", "venv", "--without-pip", venv)
  python = venv / "bin" / "python"
  site = pathlib.Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
  ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
  (site / "_jaxlstm_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
  run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel)

  # Outside the checkout, and with no PYTHONPATH, only the installed wheel can be imported.
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["JAX_PLATFORMS"] = "cpu"
  out = run(python, "-c", SMOKE, cwd=tmp_path, env=env).split()
  location, version, native_runs = pathlib.Path(out[-3]), out[-2], out[-1]
  assert location == site.resolve() / "jaxlstm" / "__init__.py", location
  assert version == VERSION
  assert native_runs == str(builds_native), "the wheel's native kernel does not load"
  assert (location.parent / "py.typed").is_file()
  assert "usage: jaxlstm" in run(venv / "bin" / "jaxlstm", "--help", cwd=tmp_path, env=env)
