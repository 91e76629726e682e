"""`python -m build` makes a wheel and an sdist that install and run, without a package index.

The build runs on a copy of the checkout (so nothing is written into it), without build
isolation (no download of setuptools), and the wheel is installed into a fresh virtual
environment that sees this Python's packages (numpy, matplotlib...) but not this checkout.
"""
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("build", reason="the build package is needed to build the wheel and sdist")

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                              ".hypothesis", "*.idx*-ubyte*")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    source = tmp_path_factory.mktemp("source") / "numpyvae"
    shutil.copytree(REPO, source, ignore=SKIP)
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheel, = dist.glob("numpyvae-*.whl")
    sdist, = dist.glob("numpyvae-*.tar.gz")
    return wheel, sdist


def test_the_wheel_holds_every_module_and_the_command(built):
    wheel, _ = built
    names = zipfile.ZipFile(wheel).namelist()
    modules = {path.name for path in (REPO / "numpyvae").glob("*.py")}
    assert modules <= {Path(name).name for name in names if name.startswith("numpyvae/")}
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "numpyvae = numpyvae.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_sdist_carries_the_tests_and_what_they_read(built):
    _, sdist = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("setup.cfg", "pyproject.toml", "README.md", "tests/conftest.py", "tests/test_vae.py",
                   "benchmarks/bench_backends.py", "benchmarks/benchkit/busy.py", "docs/tutorial.ipynb",
                   "numpyvae/threads.py"):
        assert needed in names, f"the sdist lacks {needed}"


def test_the_wheel_installs_and_runs_outside_the_checkout(built, tmp_path):
    wheel, _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    smoke = ("import numpy as np, numpyvae; "
             "model = numpyvae.VAE(784, 8, 2, seed=0); opt = numpyvae.Adam(model); "
             "loss, _, _ = model.loss_and_grads(np.random.default_rng(0).random((4, 784), dtype=np.float32)); "
             "opt.step(); assert np.isfinite(float(loss)); print(numpyvae.__file__)")
    done = subprocess.run([str(python), "-c", smoke], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()).resolve().is_relative_to(venv.resolve())     # the installed copy, not REPO
    version = subprocess.run([str(venv / "bin" / "numpyvae"), "--version"], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("numpyvae ")
