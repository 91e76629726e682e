"""Shared pytest fixtures."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from numpyvae.datasets import ALL_FILES, DEBIAN_DIR, FILES, find_file
from numpyvae.idx import write_idx

# ---------------------------------------------------------------------------
# Data fixtures (issue 3): a tiny Fashion-MNIST look-alike in the four real file names.
# ---------------------------------------------------------------------------


class SmallFashionMNIST(NamedTuple):
    """A small generated dataset written as the four IDX .gz files, with its own checksums.

    Load it as the real one is loaded, minus the system directory and the network:

        load_fashion_mnist("train", data_dir=small.data_dir, download=False,
                           checksums=small.checksums, system_dir=None)
    """
    data_dir: Path
    checksums: dict          # file name -> SHA-256 of the decompressed file, as datasets.SHA256
    train: tuple             # (images (60, 28, 28) uint8, labels (60,) uint8)
    test: tuple              # (images (20, 28, 28) uint8, labels (20,) uint8)


def make_fashion_like(per_class, seed):
    """(images (10 * per_class, 28, 28) uint8, labels (10 * per_class,) uint8), classes interleaved.

    Each class is a bright rectangle of its own place and size on faint noise, so the classes
    differ the way clothes do (in shape) and a model can learn something from a few images.
    """
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10, dtype=np.uint8), per_class)                 # (N,) 0..9, 0..9, ...
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)   # (N, 28, 28) noise
    for i, label in enumerate(labels):
        top, left = 2 + 2 * (label % 5), 2 + 10 * (label // 5)
        height, width = 8 + label, 6 + (label % 3) * 2
        images[i, top:top + height, left:left + width] = rng.integers(180, 256, dtype=np.uint8)
    return images, labels


def write_small_fashion_mnist(directory, train_per_class=6, test_per_class=2, seed=0):
    """Write the four gzipped IDX files into `directory` and return a SmallFashionMNIST for them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    splits = {"train": make_fashion_like(train_per_class, seed),
              "test": make_fashion_like(test_per_class, seed + 1)}
    checksums = {}
    for split, arrays in splits.items():
        for name, array in zip(FILES[split], arrays):
            path = directory / f"{name}.gz"
            write_idx(path, array)
            # hashed independently of read_idx, so a bug there cannot agree with itself
            checksums[name] = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    return SmallFashionMNIST(directory, checksums, splits["train"], splits["test"])


@pytest.fixture
def small_fashion_mnist(tmp_path):
    """A fresh SmallFashionMNIST in tmp_path/small-fashion-mnist (60 train, 20 test images)."""
    return write_small_fashion_mnist(tmp_path / "small-fashion-mnist")


@pytest.fixture(scope="session")
def real_fashion_mnist_dir():
    """The directory of the real, Debian-installed Fashion-MNIST files.

    Skips, saying why, where they are not installed, except under CI (CI=true), whose
    .ci/run installs them: there a missing file fails the test instead of hiding it.
    """
    if all(find_file(DEBIAN_DIR, name) for name in ALL_FILES):
        return DEBIAN_DIR
    need(False, f"the real Fashion-MNIST is not in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")


# ---------------------------------------------------------------------------
# What the tests need beyond Python: skip where it is missing, saying why; fail under CI.
# ---------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"      # Debian's (apt-get install chromium): Playwright downloads no browser
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync"]


def need(available, reason):
    """Skip where `available` is false, saying why; under CI (CI=true), whose .ci/run installs everything
    the tests need, fail instead, so that nothing missing there hides a test."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, driven by Playwright (tests/test_docs.py, tests/test_explore.py)."""
    need(importlib.util.find_spec("playwright") is not None,
         "playwright is not installed (pip install playwright; the test and docs extras have it)")
    need(os.path.exists(CHROMIUM), f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


# ---------------------------------------------------------------------------
# Training fixtures (issue 4): the small dataset wired into the loader, and a tiny model.
# ---------------------------------------------------------------------------


@pytest.fixture
def small_data(small_fashion_mnist, monkeypatch):
    """The small dataset, found by numpyvae's own loading (train, evaluate, cli) as if it were the real one.

    Everything in numpyvae loads through datasets.load_fashion_mnist, looked up when called; this
    stands in the same function with the small files' checksums and no system directory to fall back on.
    """
    import functools

    from numpyvae import datasets
    monkeypatch.setattr(datasets, "load_fashion_mnist", functools.partial(
        datasets.load_fashion_mnist, checksums=small_fashion_mnist.checksums, system_dir=None))
    return small_fashion_mnist


@pytest.fixture
def tiny_config(small_data):
    """tiny_config(**changes): a TrainConfig that trains in milliseconds on small_data (784-32-2, 4 steps per epoch)."""
    from numpyvae.train import TrainConfig

    def make(**changes):
        settings = dict(epochs=2, batch_size=16, hidden_dim=32, latent_dim=2, data_dir=str(small_data.data_dir))
        settings.update(changes)
        return TrainConfig(**settings)
    return make


# ---------------------------------------------------------------------------
# On a GPU machine (issue 17): a GPU test that skips is a failure, not a pass.
# ---------------------------------------------------------------------------

REQUIRE_GPU = "NUMPYVAE_REQUIRE_GPU"   # benchmarks/gpu_check.sh sets it to 1 on the GPU


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With NUMPYVAE_REQUIRE_GPU=1, a test marked gpu that skips (no device, CuPy missing) fails, saying why."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("gpu") and os.environ.get(REQUIRE_GPU) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_GPU}=1, but this GPU test skipped: {reason}"


# ---------------------------------------------------------------------------
# Runs: train quietly, and check that an interrupted run resumes into the same run.
# ---------------------------------------------------------------------------

def train_quietly(config, run_dir, resume=False, **kwargs):
    """Train `config` into run_dir with no progress bar; returns the lines it logged."""
    from numpyvae import train
    lines = []
    train.train(config, run_dir, resume=resume, log=lines.append, progress=False, **kwargs)
    return lines


def assert_interrupted_run_resumes_bit_for_bit(config, straight, stopped, epoch=2, step=2):
    """`config` trained into `straight` already; train it into `stopped`, Ctrl-C after `step` of `epoch`,
    resume, and assert both runs end with the same parameters, Adam state and metrics rows (seconds aside)."""
    from numpyvae import checkpoint
    from numpyvae.rundir import read_metrics
    from numpyvae.train import Interrupted

    def interrupt(at_epoch, at_step):
        if (at_epoch, at_step) == (epoch, step):
            raise KeyboardInterrupt
    with pytest.raises(Interrupted, match=f"at step {step} of 4 in epoch {epoch}; saved"):
        train_quietly(config, stopped, on_step=interrupt)
    train_quietly(config, stopped, resume=True)
    a, b = (checkpoint.load(Path(run_dir) / checkpoint.FILENAME) for run_dir in (straight, stopped))
    assert np.array_equal(a.params, b.params) and np.array_equal(a.adam["v"], b.adam["v"])
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]   # noqa: E731
    assert strip(read_metrics(straight)) == strip(read_metrics(stopped))
