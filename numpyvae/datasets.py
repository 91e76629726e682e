"""Fashion-MNIST: finding one split's files, verifying them, and loading them.

Where `load_fashion_mnist` looks, in order:
  1. `data_dir` (default: $NUMPYVAE_DATA_DIR, else ./data);
  2. `system_dir` (default DEBIAN_DIR), where Debian's and Ubuntu's
     `apt-get install dataset-fashion-mnist` puts the files;
  3. the upstream server, downloading into `data_dir` (only if download=True).
Each file may be gzipped (NAME.gz) or not (NAME). Every file is checked against the SHA-256
of its decompressed contents before it is used; a file that fails is reported, never used.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

# The file tables live in datafiles.py; they are named here too, so `from numpyvae.datasets import ...`
# keeps working for everything that read them from this module before.
from numpyvae.datafiles import (ALL_FILES, CLASS_NAMES, DATA_DIR_ENV, DEBIAN_DIR, DEFAULT_DATA_DIR,  # noqa: F401
                                FILES, IMAGE_SHAPE, SHA256, DataError, default_data_dir, find_file,
                                how_to_get_data)
from numpyvae.download import UPSTREAM, download_fashion_mnist
from numpyvae.idx import IDXError, read_idx

def load_fashion_mnist(split="train", data_dir=None, download=True, *,
                       checksums=SHA256, system_dir=DEBIAN_DIR, base_url=None):
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

    try:
        download_fashion_mnist(data_dir, base_url=base_url or UPSTREAM, names=FILES[split], checksums=checksums)
    except DataError as error:
        raise DataError(f"{summary}; {error}") from error
    return _load_verified(split, *(find_file(data_dir, name) for name in FILES[split]), checksums)


def to_pixels(images, dtype=np.float32):
    """0-255 images (N, ...) -> (N, D) pixels in [0, 1] of `dtype`, on the host: what a model reads."""
    images, dtype = np.asarray(images), np.dtype(dtype)
    return images.reshape(len(images), -1).astype(dtype) / dtype.type(255)


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

