"""Fashion-MNIST's files: their names, what they must hash to, and where they are looked for.

The tables that both loading (datasets.py) and downloading (download.py) read, kept apart
from both so that neither has to import the other's module to know them.
"""
from __future__ import annotations

import os
from pathlib import Path

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SHAPE = (28, 28)

# split -> (images file, labels file), names without ".gz"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES["train"] + FILES["test"]

# SHA-256 of each DECOMPRESSED file, as published with the dataset. Debian re-compressed the
# .gz files, so their bytes differ from upstream's; the decompressed contents are the dataset itself.
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # 47,040,016 B
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # 60,008 B
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",   # 7,840,016 B
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",   # 10,008 B
}

DATA_DIR_ENV = "NUMPYVAE_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")   # where the Debian package installs the files


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
