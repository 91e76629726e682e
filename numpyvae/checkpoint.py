"""Checkpoints: everything needed to resume a run exactly, in one .npz file written atomically.

A checkpoint holds plain NumPy arrays and strings only (loaded with allow_pickle=False):

    format            "numpyvae-checkpoint-1"
    config            the run's TrainConfig as a JSON string
    params            (P,) the model's flat parameter buffer
    adam_m, adam_v    (P,) Adam's moment buffers, same layout as params
    adam_t, adam_lr, adam_beta1, adam_beta2, adam_eps
    step              optimizer steps taken in the whole run (equals adam_t)
    epoch             epochs completed
    step_in_epoch     optimizer steps done in epoch `epoch + 1` (0 at an epoch boundary)
    seed              the run's seed
    running           (3,) float64 sums over the unfinished epoch: reconstruction, KL, images
    epoch_seconds     training seconds spent on the unfinished epoch

The random state is (seed, epoch, step_in_epoch): every epoch draws its shuffle, its
eps and its binarization noise from streams seeded by (seed, epoch), so resuming
re-creates them and replays them up to `step_in_epoch` (see train.py).

`save` writes a temporary file beside the target and renames it over the old one, so
a crash or Ctrl-C leaves either the old checkpoint or the new one, never half of one.
`load` refuses anything that is not a whole, consistent checkpoint with a one-line
CheckpointError.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import NamedTuple

import numpy as np

from numpyvae.atomicfile import atomic_write

FORMAT = "numpyvae-checkpoint-1"
FILENAME = "checkpoint.npz"
SCALARS = ("adam_t", "adam_lr", "adam_beta1", "adam_beta2", "adam_eps",
           "step", "epoch", "step_in_epoch", "seed", "epoch_seconds")
ARRAYS = ("params", "adam_m", "adam_v", "running")
KEYS = ("format", "config") + ARRAYS + SCALARS


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or belongs to a different model; the message says which."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint: host arrays and Python numbers."""
    config: dict
    params: np.ndarray
    adam: dict             # what Adam.load_state_dict() takes
    epoch: int
    step_in_epoch: int
    seed: int
    running: np.ndarray    # (3,) float64: reconstruction, KL and images of the unfinished epoch
    epoch_seconds: float


def save(path, config, model, optimizer, epoch, step_in_epoch=0, running=None, epoch_seconds=0.0):
    """Write a checkpoint of `model` and `optimizer` to `path`, atomically.

    config: the run's config as a dict (JSON-serializable). running: the unfinished
    epoch's sums of reconstruction, KL and images (host array of 3), or None at an epoch boundary.
    """
    backend = model.backend
    adam = optimizer.state_dict()
    running = np.zeros(3) if running is None else np.asarray(running, dtype=np.float64)
    arrays = {
        "format": np.array(FORMAT),
        "config": np.array(json.dumps(config, sort_keys=True)),
        "params": backend.to_host(model.flat_params),
        "adam_m": adam["m"], "adam_v": adam["v"],
        "adam_t": np.int64(adam["t"]), "adam_lr": np.float64(adam["lr"]),
        "adam_beta1": np.float64(adam["beta1"]), "adam_beta2": np.float64(adam["beta2"]),
        "adam_eps": np.float64(adam["eps"]),
        "step": np.int64(adam["t"]), "epoch": np.int64(epoch), "step_in_epoch": np.int64(step_in_epoch),
        "seed": np.int64(config["seed"]), "running": running,
        "epoch_seconds": np.float64(epoch_seconds),
    }
    # the same test load() applies: never replace a good checkpoint with one that cannot be resumed
    if not all(np.isfinite(arrays[key]).all() for key in ARRAYS):
        raise CheckpointError(f"not saving {path}: the state holds NaN or Inf")
    with atomic_write(path) as file:
        np.savez(file, **arrays)


def load(path):
    """Read and check the checkpoint at `path`; raise CheckpointError (one line) if it is not sound."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise CheckpointError(f"{path} is not a numpyvae checkpoint (missing {', '.join(missing)})")
            data = {key: archive[key] for key in KEYS}   # reading each member checks its CRC
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise CheckpointError(f"{path} is corrupt or not a numpyvae checkpoint "
                              f"({type(error).__name__}: {error})") from None

    if str(data["format"]) != FORMAT:
        raise CheckpointError(f"{path} has format {str(data['format'])!r}; this numpyvae reads {FORMAT!r}")
    try:
        config = json.loads(str(data["config"]))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is corrupt: its config is not valid JSON ({error})") from None
    for key in SCALARS:
        if data[key].shape != () or not np.issubdtype(data[key].dtype, np.number):
            raise CheckpointError(f"{path} is corrupt: {key} should be a single number, "
                                  f"has {data[key].dtype} of shape {data[key].shape}")
    for key in ("adam_m", "adam_v", "running"):
        if not np.issubdtype(data[key].dtype, np.floating):
            raise CheckpointError(f"{path} is corrupt: {key} holds {data[key].dtype}, not floats")
    params = data["params"]
    if params.ndim != 1 or not np.issubdtype(params.dtype, np.floating):
        raise CheckpointError(f"{path} is corrupt: params are {params.dtype} of shape {params.shape}")
    for key in ("adam_m", "adam_v"):
        if data[key].shape != params.shape:
            raise CheckpointError(f"{path} is corrupt: {key} has shape {data[key].shape}, params {params.shape}")
    if int(data["step"]) != int(data["adam_t"]):
        raise CheckpointError(f"{path} is corrupt: step {int(data['step'])} but Adam has taken {int(data['adam_t'])}")
    if data["running"].shape != (3,):
        raise CheckpointError(f"{path} is corrupt: running sums have shape {data['running'].shape}")
    if int(data["epoch"]) < 0 or int(data["step_in_epoch"]) < 0 or int(data["adam_t"]) < 0:
        raise CheckpointError(f"{path} is corrupt: negative epoch, step or Adam step count")
    if not (np.isfinite(params).all() and np.isfinite(data["adam_m"]).all() and np.isfinite(data["adam_v"]).all()):
        raise CheckpointError(f"{path} holds NaN or Inf parameters; it cannot be resumed")
    return Checkpoint(
        config=config, params=params,
        adam={"t": int(data["adam_t"]), "lr": float(data["adam_lr"]), "beta1": float(data["adam_beta1"]),
              "beta2": float(data["adam_beta2"]), "eps": float(data["adam_eps"]),
              "m": data["adam_m"], "v": data["adam_v"]},
        epoch=int(data["epoch"]), step_in_epoch=int(data["step_in_epoch"]), seed=int(data["seed"]),
        running=data["running"].astype(np.float64), epoch_seconds=float(data["epoch_seconds"]))


def restore(checkpoint, model, optimizer=None, path="checkpoint"):
    """Copy a loaded checkpoint's parameters (and Adam state) into `model` (and `optimizer`).

    Refuses, with CheckpointError, parameters whose count or dtype differ from the model's:
    such a checkpoint was written by a different model.
    """
    params = checkpoint.params
    if params.shape != (model.num_params,):
        raise CheckpointError(f"{path} holds {params.size} parameters but a {model.input_dim}-{model.hidden_dim}-"
                              f"{model.latent_dim} VAE has {model.num_params}: it belongs to a different model")
    if params.dtype != model.dtype:
        raise CheckpointError(f"{path} holds {params.dtype} parameters but the model is {model.dtype}")
    model.flat_params[...] = model.backend.to_device(params, dtype=model.dtype)
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint.adam)
