"""A trained run, loaded for use from Python: `run = numpyvae.load_run("runs/default")`.

    run.model        the VAE with the checkpoint's parameters (encode, decode, reconstruct, sample)
    run.config       the run's TrainConfig (likelihood, sizes, seed, data directory...)
    run.checkpoint   what was saved: epoch, step, Adam's state (checkpoint.Checkpoint)
    run.data(split)  the run's Fashion-MNIST split: (N, 28, 28) uint8 images and (N,) uint8 labels
    run.pixels(images)   uint8 images -> the (N, D) float pixels in [0, 1] the model reads
                     (float images, already pixels, pass through undivided)

It loads the way `numpyvae evaluate` and `numpyvae figures` do (rundir.load_run): the checkpoint
is verified whole and must belong to the run's config.json, or CheckpointError / RunError says why.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from numpyvae import datasets, rundir
from numpyvae.checkpoint import Checkpoint
from numpyvae.vae import VAE


class Run(NamedTuple):
    """A trained run: its model, its config and its checkpoint, and a way to its data."""
    model: VAE
    config: rundir.TrainConfig
    checkpoint: Checkpoint
    path: Path

    def data(self, split="test", download=False):
        """(images (N, 28, 28) uint8, labels (N,) uint8) of "train" or "test", from the run's data directory."""
        return datasets.load_fashion_mnist(split, self.config.data_dir, download=download)

    def pixels(self, images):
        """Images (N, 28, 28) -> the (N, D) pixels in [0, 1] the model reads, in the model's dtype.

        Integer images (run.data()'s uint8) hold 0-255 and are divided by 255. Float images are taken
        to be pixels already and pass through undivided (dividing them again would make every image
        nearly black); float values outside [0, 1] are refused, as are integers outside 0-255.
        """
        images = np.asarray(images)
        if images.dtype.kind not in "iuf":
            raise TypeError(f"images must be 0-255 integers or float pixels in [0, 1], not {images.dtype}")
        rows = images.reshape(len(images), -1)                                  # (N, D)
        low, high = (rows.min(), rows.max()) if rows.size else (0, 0)
        if images.dtype.kind == "f":
            if not (0 <= low and high <= 1):        # NaN fails both comparisons
                raise ValueError(f"float images must be pixels in [0, 1] (divide 0-255 images by 255), "
                                 f"but these hold values from {low} to {high}")
            return rows.astype(self.model.dtype)
        if not (0 <= low and high <= 255):
            raise ValueError(f"integer images must hold 0-255, but these hold values from {low} to {high}")
        return datasets.to_pixels(rows, self.model.dtype)


def load_run(path, backend="numpy"):
    """The run trained in directory `path` (by `numpyvae train --run-dir path`), at its last checkpoint.

    backend: where the model computes ("numpy", "cupy", "auto", "fakegpu"), whatever it trained on.
    """
    config, model, saved = rundir.load_run(path, backend=backend)
    return Run(model, config, saved, Path(path))
