"""Fashion-MNIST: which files make it, what they must hash to, where to find them, and loading a split.

Where `load_fashion_mnist` looks, in order:
  1. `data_dir` (default: $NUMPYVAE_DATA_DIR, else ./data);
  2. SYSTEM_DIR, where Debian's and Ubuntu's `apt-get install dataset-fashion-mnist` puts the files;
  3. the upstream server, downloading into `data_dir` (only if download=True).
Each file may be gzipped (NAME.gz) or not (NAME). Every file is checked against the SHA-256
of its decompressed contents before it is used; a file that fails is reported, never used.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from numpyvae.idx import IDXError, read_idx

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SHAPE = (28, 28)

# split -> (images file, labels file), names without ".gz"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES["train"] + FILES["test"]

# SHA-256 of each DECOMPRESSED file (shared/DATA.md). Debian re-compressed the .gz files,
# so their bytes differ from upstream's; the decompressed contents are the dataset itself.
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # 47,040,016 B
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # 60,008 B
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",   # 7,840,016 B
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",   # 10,008 B
}

DATA_DIR_ENV = "NUMPYVAE_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")   # where the Debian package installs the files
SYSTEM_DIR = DEBIAN_DIR                                   # where the loader looks (tests point it elsewhere)


class DataError(ValueError):
    """The dataset cannot be had or is not what it should be; the one-line message says what to do."""


def default_data_dir():
    """$NUMPYVAE_DATA_DIR if set, else ./data (relative to the working directory)."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def how_to_get_data(data_dir):
    """One sentence listing every way to get the files into place."""
    return (f"To get Fashion-MNIST: connect to the internet and run `numpyvae download --data-dir {data_dir}`; "
            f"or `apt-get install dataset-fashion-mnist` (installs it in {DEBIAN_DIR}); "
            f"or put the four files ({', '.join(n + '.gz' for n in ALL_FILES)}, gzipped or not) "
            f"in the data directory {data_dir}.")


def find_file(directory, name):
    """The path of `name` in `directory`, gzipped (NAME.gz) or not (NAME), or None if neither is there."""
    for candidate in (Path(directory) / f"{name}.gz", Path(directory) / name):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(split="train", data_dir=None, download=True, *,
                       checksums=SHA256, system_dir=SYSTEM_DIR, base_url=None):
    """Load one split of Fashion-MNIST, verified.

    Args:
        split:      "train" (60,000 images) or "test" (10,000).
        data_dir:   directory looked in first and downloaded into; None means default_data_dir().
        download:   fetch missing files from upstream into data_dir if no location has them.
        checksums:  file name -> SHA-256 of its decompressed contents. Tests pass their own
                    for small generated files; everyone else keeps the default.
        system_dir: the system-wide location (None to skip it, as tests do).
        base_url:   where to download from (None: upstream, see numpyvae.download).
    Returns:
        images: (N, 28, 28) uint8, pixel values 0..255
        labels: (N,) uint8, class indices 0..9 into CLASS_NAMES
    Raises:
        DataError when no location has good files and downloading is off or fails.
        A bad or unreadable file in one location is reported with a warning and the next location is tried.
    """
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    unknown = [name for name in FILES[split] if name not in checksums]
    if unknown:
        raise DataError(f"no SHA-256 known for {', '.join(unknown)}, so it cannot be verified")
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    try:
        not_a_directory = data_dir.exists() and not data_dir.is_dir()
    except OSError:                    # cannot even look: the search below says so and looks elsewhere
        not_a_directory = False
    if not_a_directory:
        raise DataError(f"the data directory {data_dir} is a file, not a directory")
    locations = [data_dir]
    if system_dir is not None and Path(system_dir) != data_dir:
        locations.append(Path(system_dir))
    problems = []
    for directory in locations:
        try:
            paths = [find_file(directory, name) for name in FILES[split]]
            if None in paths:
                problems.append(f"not in {directory}")
                continue
            return _load_verified(split, *paths, checksums)
        except (IDXError, DataError) as error:
            warnings.warn(f"skipping a bad Fashion-MNIST file: {error}", stacklevel=2)
            problems.append(str(error))
        except OSError as error:       # e.g. no permission: another place may still have good files
            reason = f"cannot read {error.filename or directory} ({error.strerror or error})"
            warnings.warn(f"{reason}; trying the next place", stacklevel=2)
            problems.append(reason)
    summary = f"Fashion-MNIST {split} split unavailable: " + "; ".join(problems)
    if not download:
        raise DataError(f"{summary}; downloading is off. {how_to_get_data(data_dir)}")

    # imported here, not at the top: download.py reads this module's tables
    from numpyvae.download import UPSTREAM, download_fashion_mnist
    try:
        download_fashion_mnist(data_dir, base_url=base_url or UPSTREAM, names=FILES[split], checksums=checksums)
    except DataError as error:
        raise DataError(f"{summary}; {error}") from error
    return _load_verified(split, *(find_file(data_dir, name) for name in FILES[split]), checksums)


def _load_verified(split, images_path, labels_path, checksums):
    """Read one split's two files, check their checksums and that they make sense together."""
    images = read_idx(images_path, sha256=checksums[FILES[split][0]])  # (N, 28, 28)
    labels = read_idx(labels_path, sha256=checksums[FILES[split][1]])  # (N,)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: expected (N, 28, 28) uint8 images, got {images.shape} {images.dtype}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected (N,) uint8 labels, got {labels.shape} {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0..{len(CLASS_NAMES) - 1}")
    return images, labels

