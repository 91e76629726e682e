"""What the chapters share: small data, and the two tools every gradient check needs.

Chapters run at every docs build, inside a 5-minute budget on two cores, so they train small models
on small data. The data is the tests' synthetic look-alike of Fashion-MNIST (tests/conftest.py's
make_fashion_like: each class a bright rectangle of its own place and size on faint noise), so the
site builds with no dataset installed. Numbers from full runs on the real data are quoted from
benchmarks/results/, where the runs that made them are described.
"""
import contextlib
import functools
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

# the checker's own tools, so that a chapter's check is the one `numpyvae gradcheck` runs (chapter 5 says why
# h = 1e-5 and why the error is relative to the tensor's largest entries)
from numpyvae.gradcheck import numerical_gradient, rel_error  # noqa: F401 (the chapters import them from here)

REPO = Path(__file__).resolve().parent.parent


def _conftest():
    spec = importlib.util.spec_from_file_location("numpyvae_tests_conftest", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fashion_like(per_class=20, seed=0, dtype=np.float64):
    """(x (10 * per_class, 784) pixels in [0, 1], labels (10 * per_class,) in 0..9): synthetic clothes."""
    images, labels = _conftest().make_fashion_like(per_class, seed)
    return images.reshape(len(images), -1).astype(dtype) / 255, labels.astype(np.int64)


@contextlib.contextmanager
def small_fashion_mnist():
    """The tests' small synthetic Fashion-MNIST (60 train, 20 test images) as the four IDX files in a temporary
    folder, found by numpyvae's own loading while the block runs: yields the folder, then restores the loader.

    As tests/conftest.py's small_data fixture does: the files carry their own checksums, and the loader is
    told them, and not to look in the system's folder."""
    from numpyvae import datasets
    conftest = _conftest()
    original = datasets.load_fashion_mnist
    with tempfile.TemporaryDirectory() as folder:
        small = conftest.write_small_fashion_mnist(Path(folder) / "data")
        datasets.load_fashion_mnist = functools.partial(original, checksums=small.checksums, system_dir=None)
        try:
            yield Path(folder)
        finally:
            datasets.load_fashion_mnist = original
