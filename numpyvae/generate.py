"""New clothes on request: draw z ~ N(0, I), decode it, and write the images as a PNG grid or a .npy array.

For a conditional VAE the decoder is also given a class, so `--class sneaker` asks for sneakers;
without --class the classes take turns (image i is of class i mod C), a column per class.

Shapes: N = images asked for, Z = latent, side x side = an image (28 x 28).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from numpyvae.atomicfile import atomic_write
from numpyvae.datafiles import CLASS_NAMES
from numpyvae.evaluate import MAX_ELEMENTS
from numpyvae.network import widest_row

MAX_IMAGES = 100_000      # a .npy of 100,000 images is 314 MB of float32
MAX_GRID = 400            # a PNG grid of more images than this is too small to look at
FORMATS = (".png", ".npy")


class GenerateError(ValueError):
    """A request `generate` cannot carry out; the one-line message says why."""


def parse_class(text, num_classes):
    """A class index from a name (any case: "sneaker", "Ankle boot") or an index ("7"); GenerateError if neither."""
    names = [name.lower() for name in CLASS_NAMES[:num_classes]]
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= 3:     # not "²" or "①", which isdigit() also accepts
        index = int(text)
        if index < num_classes:
            return index
    elif text.lower() in names:
        return names.index(text.lower())
    choices = ", ".join(f"{i} {name!r}" for i, name in enumerate(CLASS_NAMES[:num_classes]))
    raise GenerateError(f"unknown class {text!r}; choose one of: {choices}")


def check_request(model, n, out, wants_class=False):
    """Refuse, before any work, what cannot be done: a bad count or file type, a class for a plain VAE."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise GenerateError(f"--out must end in .png (a grid) or .npy (an array), not {str(out)!r}")
    limit = MAX_GRID if suffix == ".png" else MAX_IMAGES
    if not 1 <= n <= limit:
        raise GenerateError(f"-n must be 1 to {limit:,} for a {suffix} file, not {n}")
    if wants_class and not model.conditional:
        raise GenerateError("this run's VAE is not conditional (it was trained without --conditional), "
                            "so it cannot be asked for a class; leave out --class")


def labels_for(model, n, class_index=None):
    """The class of each image: None for a plain VAE, else class_index, or 0, 1, ..., C-1, 0, 1, ... in turn."""
    if not model.conditional:
        return None
    if class_index is not None:
        return np.full(n, class_index, dtype=np.int64)
    return np.arange(n, dtype=np.int64) % model.num_classes


def generate(model, n, seed=0, class_index=None, max_elements=MAX_ELEMENTS):
    """(images (N, side, side) float32 pixel means in [0, 1] on the host, labels (N,) or None).

    z is drawn all at once (N x Z numbers, a few MB even for 100,000 images), the draws model.sample
    makes, and decoded in chunks whose largest array (rows x the decoder's widest row) stays within
    max_elements: a conv decoder's patch matrices for 100,000 images at once would need ~16 GB.
    """
    labels = labels_for(model, n, class_index)
    backend = model.backend
    z = model.prior_noise(n, backend.rng(seed))                                       # (N, Z)
    side = math.isqrt(model.input_dim)
    images = np.empty((n, side, side), dtype=np.float32)                              # (N, side, side) host
    chunk = max(1, max_elements // widest_row(model.spec, model.network))
    for start in range(0, n, chunk):
        y = None if labels is None else labels[start:start + chunk]
        pixels = model.decode(z[start:start + chunk], y)                              # (chunk, D) on the backend
        images[start:start + chunk] = backend.to_host(pixels).reshape(-1, side, side)
    return images, labels


def save(images, labels, out, title):
    """Write images to `out` atomically: .npy as an (N, side, side) float32 array, .png as a grid."""
    out = Path(out)
    if out.suffix.lower() == ".npy":
        out.parent.mkdir(parents=True, exist_ok=True)      # as for a .png (plots.py)
        with atomic_write(out) as file:
            np.save(file, images)
        return out
    from numpyvae import plots
    return plots.image_grid(images, out, title, labels=labels)
