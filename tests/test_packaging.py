"""`python -m build` makes a wheel and an sdist that install and run, without a package index.

The build runs on a copy of the checkout (so nothing is written into it), without build
isolation (no download of setuptools), and the wheel is installed into a fresh virtual
environment that sees this Python's packages (numpy, matplotlib...) but not this checkout.
The sdist is installed too, and some of its own tests run from it: those that read files
other than Python (a fixture, a shell script), which MANIFEST.in must name.
"""
import os
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
    assert "numpyvae = numpyvae.entry:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


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
    done = subprocess.run([str(python), "-c", smoke], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_without_pythonpath())
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()).resolve().is_relative_to(venv.resolve())     # the installed copy, not REPO
    version = subprocess.run([str(venv / "bin" / "numpyvae"), "--version"], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path, env=_without_pythonpath())
    assert version.returncode == 0 and version.stdout.startswith("numpyvae ")


def _without_pythonpath():
    """The environment, less a PYTHONPATH that would put a checkout's numpyvae before the installed one."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def _fresh_venv(path):
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(path)], check=True, timeout=300)
    return path / "bin" / "python"


# A few tests of the sdist's own suite, chosen because they read what is not Python: the recorded dense
# model (tests/data/dense_compat.json) and the GPU check script (benchmarks/gpu_check.sh).
SDIST_TESTS = ("tests/test_network.py::test_the_dense_model_is_bit_for_bit_what_it_was_before_the_network_became_data",
               "tests/test_gpu_check.py::test_script_is_valid_bash",
               "tests/test_gpu_check.py::test_help_prints_the_header")


def test_the_sdist_installs_and_its_own_tests_pass(built, tmp_path):
    """What a user of the sdist does: unpack it, build and install it, run its tests."""
    _, sdist = built
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    source, = (tmp_path / "unpacked").iterdir()
    # the venv's own setuptools may be too old to build a wheel: this Python's build does it, from the sdist alone
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("numpyvae-*.whl")
    python = _fresh_venv(tmp_path / "venv")
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(source / "build", ignore_errors=True)
    shutil.rmtree(source / "numpyvae")        # the tests must import the installed copy, from the venv
    # -P: the unpacked folder is not put on sys.path, so the tests import the installed numpyvae
    where = subprocess.run([str(python), "-P", "-c", "import numpyvae; print(numpyvae.__file__)"],
                           capture_output=True, text=True, timeout=300, cwd=source, env=_without_pythonpath())
    assert where.returncode == 0 and (tmp_path / "venv").resolve() in Path(where.stdout.strip()).resolve().parents
    done = subprocess.run([str(python), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_TESTS],
                          capture_output=True, text=True, timeout=600, cwd=source, env=_without_pythonpath())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "5 passed" in done.stdout and "skipped" not in done.stdout      # 3 + 2 parameter sets


def test_the_test_command_installs_build_and_names_every_skip():
    """README's test command installs the `test` extra: it must bring `build` (else this file skips in CI),
    and pytest must print why each skipped test skipped (-rs), so that "21 skipped" hides nothing."""
    import configparser
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    extra = [line.split("#")[0].strip() for line in setup["options.extras_require"]["test"].splitlines()]
    assert any(requirement.startswith("build") for requirement in extra)
    assert "-rs" in setup["tool:pytest"]["addopts"].split()
