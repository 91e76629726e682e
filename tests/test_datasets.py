"""Loading Fashion-MNIST: where it looks, what it refuses, the real files, and the data grid."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import warnings

import numpy as np
import pytest

from numpyvae.datasets import (ALL_FILES, CLASS_NAMES, DATA_DIR_ENV, FILES, SHA256, DataError,
                               find_file, load_fashion_mnist)
from numpyvae.idx import write_idx
from numpyvae.plots_data import save_data_grid


def load(split, small, **options):
    """load_fashion_mnist on generated files: their checksums, no system dir, no network."""
    options = {"data_dir": small.data_dir, "download": False, "checksums": small.checksums,
               "system_dir": None, **options}
    return load_fashion_mnist(split, **options)


def rewrite(small, name, array):
    """Replace one file of `small` with `array` and give it a matching checksum."""
    path = small.data_dir / f"{name}.gz"
    write_idx(path, array)
    small.checksums[name] = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


# -- finding and loading -------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "test"])
def test_loads_a_split_as_written(small_fashion_mnist, split):
    images, labels = load(split, small_fashion_mnist)
    expected_images, expected_labels = getattr(small_fashion_mnist, split)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_loads_files_that_are_not_gzipped(small_fashion_mnist):
    for name in FILES["train"]:
        gz = small_fashion_mnist.data_dir / f"{name}.gz"
        (small_fashion_mnist.data_dir / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    images, labels = load("train", small_fashion_mnist)
    np.testing.assert_array_equal(images, small_fashion_mnist.train[0])


def test_data_dir_is_searched_before_the_system_dir(tmp_path, small_fashion_mnist):
    system = shutil.copytree(small_fashion_mnist.data_dir, tmp_path / "system")
    for path in system.iterdir():
        path.write_bytes(b"\x1f\x8b not gzip")  # opening any of these would warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, _ = load("train", small_fashion_mnist, system_dir=system)
    np.testing.assert_array_equal(images, small_fashion_mnist.train[0])


def test_system_dir_is_used_when_data_dir_lacks_the_files(tmp_path, small_fashion_mnist):
    images, _ = load("test", small_fashion_mnist, data_dir=tmp_path / "empty",
                     system_dir=small_fashion_mnist.data_dir)
    np.testing.assert_array_equal(images, small_fashion_mnist.test[0])


def test_environment_variable_then_dot_data_is_the_default_dir(small_fashion_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(small_fashion_mnist.data_dir))
    images, _ = load("test", small_fashion_mnist, data_dir=None)
    np.testing.assert_array_equal(images, small_fashion_mnist.test[0])

    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_fashion_mnist.data_dir, tmp_path / "data")
    images, _ = load("test", small_fashion_mnist, data_dir=None)
    np.testing.assert_array_equal(images, small_fashion_mnist.test[0])


def test_missing_everywhere_without_download_lists_the_ways_to_get_the_data(tmp_path):
    with pytest.raises(DataError) as caught:
        load_fashion_mnist("train", data_dir=tmp_path / "nowhere", download=False,
                           system_dir=tmp_path / "not-installed")
    message = str(caught.value)
    assert "\n" not in message
    for part in ("connect to the internet", "apt-get install dataset-fashion-mnist",
                 str(tmp_path / "nowhere"), "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert part in message


def test_half_a_split_counts_as_missing(small_fashion_mnist):
    (small_fashion_mnist.data_dir / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"not in {small_fashion_mnist.data_dir}"):
        load("train", small_fashion_mnist)


def test_unknown_split_and_unknown_checksum_are_refused(small_fashion_mnist):
    with pytest.raises(ValueError, match="unknown split"):
        load("validation", small_fashion_mnist)
    del small_fashion_mnist.checksums["t10k-images-idx3-ubyte"]
    with pytest.raises(DataError, match="no SHA-256 known for t10k-images-idx3-ubyte"):
        load("test", small_fashion_mnist)


# -- refusing bad files ------------------------------------------------------------------

def test_file_with_a_wrong_checksum_is_reported_not_used(small_fashion_mnist):
    images, labels = small_fashion_mnist.train
    write_idx(small_fashion_mnist.data_dir / "train-images-idx3-ubyte.gz", 255 - images)  # valid IDX, other data
    with pytest.raises(DataError, match="SHA-256") as caught:
        with pytest.warns(UserWarning, match="train-images-idx3-ubyte.gz"):
            load("train", small_fashion_mnist)
    assert "train-images-idx3-ubyte.gz" in str(caught.value)


def test_bad_file_in_data_dir_falls_back_to_good_system_files_with_a_warning(tmp_path, small_fashion_mnist):
    system = shutil.copytree(small_fashion_mnist.data_dir, tmp_path / "system")
    (small_fashion_mnist.data_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.warns(UserWarning, match="corrupt gzip"):
        images, labels = load("train", small_fashion_mnist, system_dir=system)
    np.testing.assert_array_equal(labels, small_fashion_mnist.train[1])


def test_image_and_label_counts_must_agree(small_fashion_mnist):
    rewrite(small_fashion_mnist, "train-labels-idx1-ubyte", small_fashion_mnist.train[1][:-1])
    with pytest.raises(DataError, match="holds 60 images but .* holds 59 labels"), pytest.warns(UserWarning):
        load("train", small_fashion_mnist)


def test_labels_must_be_0_to_9(small_fashion_mnist):
    labels = small_fashion_mnist.test[1].copy()
    labels[3] = 10
    rewrite(small_fashion_mnist, "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match="label 10 is outside 0..9"), pytest.warns(UserWarning):
        load("test", small_fashion_mnist)


@pytest.mark.parametrize("images", [np.zeros((20, 28, 27), np.uint8), np.zeros((20, 784), np.uint8),
                                    np.zeros((20, 28, 28), np.float32)], ids=["27-wide", "flat", "float32"])
def test_images_must_be_n_by_28_by_28_uint8(small_fashion_mnist, images):
    rewrite(small_fashion_mnist, "t10k-images-idx3-ubyte", images)
    with pytest.raises(DataError, match=r"expected \(N, 28, 28\) uint8 images"), pytest.warns(UserWarning):
        load("test", small_fashion_mnist)


# -- the real files (Debian's dataset-fashion-mnist; CI installs it and must not skip) ----------

@pytest.fixture(scope="module")
def real_splits(real_fashion_mnist_dir, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty-data-dir")  # so only the system dir can answer
    return {split: load_fashion_mnist(split, data_dir=empty, download=False) for split in FILES}


@pytest.mark.slow
@pytest.mark.parametrize("split, count", [("train", 6000), ("test", 1000)])
def test_real_split_shapes_dtypes_and_class_balance(real_splits, split, count):
    images, labels = real_splits[split]
    assert images.shape == (10 * count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10 * count,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [count] * 10)
    assert images.max() == 255 and images.min() == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_FILES)
def test_real_files_match_the_published_checksums(real_fashion_mnist_dir, name):
    # hashed here with gzip + hashlib, independently of read_idx
    path = find_file(real_fashion_mnist_dir, name)
    payload = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    assert hashlib.sha256(payload).hexdigest() == SHA256[name]
    assert payload[:4] == (b"\x00\x00\x08\x03" if "images" in name else b"\x00\x00\x08\x01")


# -- the data grid -----------------------------------------------------------------------

def test_data_grid_is_a_png_of_the_requested_images(tmp_path, small_fashion_mnist):
    from matplotlib.image import imread

    images, labels = small_fashion_mnist.train
    path = tmp_path / "grid.png"
    save_data_grid(images, labels, path, n=12, columns=6)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(path).shape
    assert width > height  # 2 rows of 6
    assert [p.name for p in tmp_path.iterdir() if p.name != small_fashion_mnist.data_dir.name] == ["grid.png"]
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot"


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    with pytest.raises(DataError, match="is a file, not a directory"):
        load_fashion_mnist("test", data_dir=not_a_dir, download=False, system_dir=None)


def test_an_unreadable_file_falls_back_to_the_next_place_with_a_warning(tmp_path, small_fashion_mnist, monkeypatch):
    """Tests run as root, which chmod cannot lock out: the refusal is simulated at open()."""
    from numpyvae import idx
    system = shutil.copytree(small_fashion_mnist.data_dir, tmp_path / "system")
    locked = str(small_fashion_mnist.data_dir)

    def open_unless_locked(path, *args, **kwargs):
        if str(path).startswith(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)
    monkeypatch.setattr(idx, "open", open_unless_locked, raising=False)
    with pytest.warns(UserWarning, match="cannot read .*Permission denied.*trying the next place"):
        images, labels = load("train", small_fashion_mnist, system_dir=system)
    np.testing.assert_array_equal(labels, small_fashion_mnist.train[1])


def test_an_unreadable_directory_falls_back_to_the_next_place_with_a_warning(tmp_path, small_fashion_mnist,
                                                                             monkeypatch):
    """A directory that cannot be searched makes is_file() raise PermissionError (simulated: tests run as root)."""
    from pathlib import Path
    system = shutil.copytree(small_fashion_mnist.data_dir, tmp_path / "system")
    locked, real_stat = str(small_fashion_mnist.data_dir), Path.stat

    def stat_unless_locked(self, *args, **kwargs):
        if str(self).startswith(locked + "/"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)
    monkeypatch.setattr(Path, "stat", stat_unless_locked)
    with pytest.warns(UserWarning, match="cannot read .*trying the next place"):
        images, labels = load("test", small_fashion_mnist, system_dir=system)
    np.testing.assert_array_equal(labels, small_fashion_mnist.test[1])
