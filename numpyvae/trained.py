"""A trained run, loaded for use from Python: `run = numpyvae.load_run("runs/default")`.

    run.model        the VAE with the checkpoint's parameters (encode, decode, reconstruct, sample)
    run.config       the run's TrainConfig (likelihood, sizes, seed, data directory...)
    run.checkpoint   what was saved: epoch, step, Adam's state (checkpoint.Checkpoint)
    run.data(split)  the run's Fashion-MNIST split: (N, 28, 28) uint8 images and (N,) uint8 labels
    run.pixels(images)   uint8 images -> the (N, D) float pixels in [0, 1] the model reads

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
        """uint8 images (N, 28, 28) -> (N, D) pixels in [0, 1], in the model's dtype, as it was trained on."""
        images = np.asarray(images)
        return images.reshape(len(images), -1).astype(self.model.dtype) / self.model.dtype.type(255)


def load_run(path, backend="numpy"):
    """The run trained in directory `path` (by `numpyvae train --run-dir path`), at its last checkpoint.

    backend: where the model computes ("numpy", "cupy", "auto", "fakegpu"), whatever it trained on.
    """
    config, model, saved = rundir.load_run(path, backend=backend)
    return Run(model, config, saved, Path(path))
