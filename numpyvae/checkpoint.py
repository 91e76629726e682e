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
                      (4,) for an IWAE run: the same and then its negative bound
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

import io
import json
import math
import os
import struct
import tokenize
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy_format

from numpyvae.atomicfile import atomic_write
from numpyvae.messages import shown

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
    running: np.ndarray    # (3,) float64: reconstruction, KL and images of the unfinished epoch (4,): and IWAE
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
    """Read and check the checkpoint at `path`; raise CheckpointError (one line) if it is not sound.

    Every member is read to its end before any value is used, so zipfile checks the CRC-32
    of every byte the arrays are made of; np.load would read only as many bytes as each .npy
    header promises, and a damaged header would then go unnoticed.
    """
    path = os.fspath(path)
    name = shown(path)            # as messages show it: on one line, whatever the path holds
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {name}")
    try:
        file = open(path, "rb")
    except OSError as error:
        raise CheckpointError(f"cannot read {name} ({error.strerror or error})") from None
    with file:
        data = _read_members(name, file)
    return _checked(name, data)


# What a damaged zip can raise from zipfile: a flipped flag bit reads as "encrypted" (RuntimeError),
# a flipped version as NotImplementedError, a flipped offset as a bad seek (OSError), ...
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError,
              NotImplementedError, UnicodeDecodeError, OverflowError, struct.error, zlib.error)


def _read_members(path, file):
    """{key: array} of every member of the open checkpoint `file`, each read whole and CRC-checked."""
    size = os.fstat(file.fileno()).st_size
    try:
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            unknown = sorted(set(names) - {key + ".npy" for key in KEYS})
            if unknown:
                raise CheckpointError(f"{path} is not a numpyvae checkpoint (unexpected {', '.join(unknown)})")
            missing = [key for key in KEYS if key + ".npy" not in names]
            if missing:
                raise CheckpointError(f"{path} is not a numpyvae checkpoint (missing {', '.join(missing)})")
            if len(names) != len(set(names)):
                raise CheckpointError(f"{path} is corrupt: it holds a member twice")
            data = {}
            for info in infos:
                # np.savez stores members uncompressed, so none can be larger than the file:
                # an absurd size is damage, refused before reading (or allocating) anything
                if info.compress_type != zipfile.ZIP_STORED or not 0 <= info.file_size <= size:
                    raise CheckpointError(f"{path} is corrupt: {info.filename} claims "
                                          f"{info.file_size} bytes (compression {info.compress_type})")
                data[info.filename[:-len(".npy")]] = _parse_npy(path, info.filename, archive.read(info))
    except CheckpointError:
        raise
    except ZIP_ERRORS as error:
        raise CheckpointError(f"{path} is corrupt or not a numpyvae checkpoint "
                              f"({type(error).__name__}: {error})") from None
    return data


def _parse_npy(path, name, member):
    """The array in the .npy bytes `member`, whose header must promise exactly the bytes that follow it."""
    stream = io.BytesIO(member)
    try:
        version = npy_format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unknown .npy version {version}")
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as error:
        raise CheckpointError(f"{path} is corrupt: {name} is not a .npy array ({error})") from None
    if dtype.hasobject or dtype.kind not in "iufU":     # numbers and text only: nothing to unpickle
        raise CheckpointError(f"{path} is corrupt or not a numpyvae checkpoint: {name} holds {dtype}")
    count = math.prod(shape)
    if count < 0 or stream.tell() + count * dtype.itemsize != len(member):
        raise CheckpointError(f"{path} is corrupt: {name}'s header promises {count} x {dtype.itemsize} bytes "
                              f"but it holds {len(member) - stream.tell()}")
    array = np.frombuffer(member, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran_order else "C").copy()


INTEGERS = ("adam_t", "step", "epoch", "step_in_epoch", "seed")


def _checked(path, data):
    """The Checkpoint in `data` ({key: array}), once every value is shown to make sense."""
    if data["format"].dtype.kind != "U" or str(data["format"]) != FORMAT:
        raise CheckpointError(f"{path} has format {str(data['format'])!r}; this numpyvae reads {FORMAT!r}")
    try:
        if data["config"].dtype.kind != "U" or data["config"].shape != ():
            raise ValueError("not a single string")
        config = json.loads(str(data["config"]))
    except (ValueError, RecursionError) as error:    # also an integer of 4,300+ digits, or deep nesting
        raise CheckpointError(f"{path} is corrupt: its config is not valid JSON "
                              f"({str(error)[:200] or type(error).__name__})") from None
    for key in SCALARS:
        kind = "i" if key in INTEGERS else "fi"
        if data[key].shape != () or data[key].dtype.kind not in kind:
            raise CheckpointError(f"{path} is corrupt: {key} should be a single "
                                  f"{'integer' if key in INTEGERS else 'number'}, "
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
    if data["running"].shape not in ((3,), (4,)):
        raise CheckpointError(f"{path} is corrupt: running sums have shape {data['running'].shape}")
    if not (np.isfinite(params).all() and np.isfinite(data["adam_m"]).all() and np.isfinite(data["adam_v"]).all()):
        raise CheckpointError(f"{path} holds NaN or Inf parameters; it cannot be resumed")
    _check_progress(path, data)
    _check_adam(path, data)
    return Checkpoint(
        config=config, params=params,
        adam={"t": int(data["adam_t"]), "lr": float(data["adam_lr"]), "beta1": float(data["adam_beta1"]),
              "beta2": float(data["adam_beta2"]), "eps": float(data["adam_eps"]),
              "m": data["adam_m"], "v": data["adam_v"]},
        epoch=int(data["epoch"]), step_in_epoch=int(data["step_in_epoch"]), seed=int(data["seed"]),
        running=data["running"].astype(np.float64), epoch_seconds=float(data["epoch_seconds"]))


def _check_progress(path, data):
    """Epoch, step and Adam's step count must tell one story: every finished epoch took at least one step."""
    t, epoch, step_in_epoch = int(data["adam_t"]), int(data["epoch"]), int(data["step_in_epoch"])
    if int(data["step"]) != t:
        raise CheckpointError(f"{path} is corrupt: step {int(data['step'])} but Adam has taken {t}")
    if epoch < 0 or step_in_epoch < 0 or t < 0:
        raise CheckpointError(f"{path} is corrupt: negative epoch, step or Adam step count")
    if t < epoch + step_in_epoch:
        raise CheckpointError(f"{path} is corrupt: {epoch} epochs and step {step_in_epoch} of an epoch "
                              f"but Adam has taken only {t} steps")
    if not (np.isfinite(data["running"]).all() and math.isfinite(data["epoch_seconds"])):
        raise CheckpointError(f"{path} is corrupt: the unfinished epoch's sums or seconds are NaN or Inf")


def _check_adam(path, data):
    """Adam's settings as optim.Adam allows them, and moments it could have reached."""
    lr, beta1, beta2, eps = (float(data[key]) for key in ("adam_lr", "adam_beta1", "adam_beta2", "adam_eps"))
    if not (math.isfinite(lr) and lr > 0):
        raise CheckpointError(f"{path} is corrupt: Adam's learning rate is {lr}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= beta < 1:
            raise CheckpointError(f"{path} is corrupt: Adam's {name} is {beta}, outside [0, 1)")
    if not (math.isfinite(eps) and eps > 0):
        raise CheckpointError(f"{path} is corrupt: Adam's eps is {eps}")
    if (data["adam_v"] < 0).any():
        raise CheckpointError(f"{path} is corrupt: Adam's second moment v has negative entries")
    if int(data["adam_t"]) == 0 and (data["adam_m"].any() or data["adam_v"].any()):
        raise CheckpointError(f"{path} is corrupt: Adam has taken no step but its moments are not zero")


def restore(checkpoint, model, optimizer=None, path="checkpoint"):
    """Copy a loaded checkpoint's parameters (and Adam state) into `model` (and `optimizer`).

    Refuses, with CheckpointError, parameters whose count or dtype differ from the model's:
    such a checkpoint was written by a different model.
    """
    params = checkpoint.params
    if params.shape != (model.num_params,):
        raise CheckpointError(f"{path} holds {params.size} parameters but a {model.spec.describe()} has "
                              f"{model.num_params}: it belongs to a different model")
    if params.dtype != model.dtype:
        raise CheckpointError(f"{path} holds {params.dtype} parameters but the model is {model.dtype}")
    model.flat_params[...] = model.backend.to_device(params, dtype=model.dtype)
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint.adam)
