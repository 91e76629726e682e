"""A reference state: one training step's weights, batch, noise, loss and every gradient, in one .npz file.

    numpyvae reference-state --out ref.npz --batch-size 4 [model flags, as for train]
    python benchmarks/check_reference_state.py ref.npz     # PyTorch autograd checks itself against it

llm.c's train_gpt2.py writes such a state and test_gpt2.c checks a whole other implementation
against it. This one lets any VAE (in JAX, C, a student's own NumPy) check its forward and
backward against numpyvae's hand-written ones: load the weights, run the step on the stored x
and eps (and y), compare the three numbers and every gradient. The format, key by key, is
documented in docs/reference-state.md; FORMAT names its version.

Everything is float64: the step runs on a float64 model, so the numbers differ from another
float64 implementation only by rounding (~1e-12 relative), far below any real mistake.

The batch: the first B images of the Fashion-MNIST test set (and their labels), where train
looks for the data; without the files, or with synthetic=True, a deterministic made-up batch
(synthetic_batch) that needs no file at all. The file records which (info's "data").

Shapes: B = batch, D = pixels, K = samples per image (IWAE), Z = latent.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from numpyvae import __version__, datasets, memory
from numpyvae.atomicfile import atomic_write
from numpyvae.datafiles import DataError
from numpyvae.messages import shown
from numpyvae.rundir import ConfigError
from numpyvae.objectives import get_objective
from numpyvae.vae import VAE

FORMAT = "numpyvae reference state 1"    # info["format"]: a change of any key's meaning bumps the number
MAX_BATCH = 10_000                        # the test set's size: a reference state is one batch, not a data set
EPS_STREAM, DATA_STREAM = 1, 2            # eps ~ default_rng((seed, 1)), a synthetic batch from (seed, 2)


class ReferenceStateError(ConfigError):
    """Settings or a path a reference state cannot be made with; the message says which."""


def synthetic_batch(batch, input_shape, num_classes, seed):
    """(x (B, D) float64, y (B,) int64 or None): a made-up batch shaped like Fashion-MNIST's, from `seed` alone.

    Like the real images, about half the pixels are exactly 0 (the black background) and the others
    are multiples of 1/255: x = n / 255 with n uniform in 0..255, then each pixel zeroed with
    probability 1/2, both drawn from numpy.random.default_rng((seed, 2)) in that order. The labels
    go round the classes: y = 0, 1, ..., C - 1, 0, 1, ...
    """
    rng = np.random.default_rng((seed, DATA_STREAM))
    D = int(np.prod(input_shape))
    levels = rng.integers(0, 256, size=(batch, D))                       # (B, D)
    background = rng.random((batch, D)) < 0.5
    x = np.where(background, 0, levels) / 255.0
    y = np.arange(batch, dtype=np.int64) % num_classes if num_classes else None
    return x, y


def first_test_images(batch, num_classes, data_dir=None):
    """(x, y) from the first `batch` images of the Fashion-MNIST test set; DataError when the files are missing."""
    images, labels = datasets.load_fashion_mnist("test", data_dir, download=False)   # looked up when called
    x = datasets.to_pixels(images[:batch], np.float64)                   # (B, D) float64 in [0, 1]
    y = labels[:batch].astype(np.int64) if num_classes else None
    return x, y


def reference_batch(config, data_dir=None, synthetic=False, test_set=first_test_images):
    """(x, y, where they came from): the test set's first batch, or synthetic_batch when told to or when
    the data files are not found (a one-line warning says so)."""
    B = config.batch_size
    if B > MAX_BATCH:
        raise ReferenceStateError(f"a reference state holds one batch of at most {MAX_BATCH:,} images, "
                                  f"not {B:,} (choose a smaller --batch-size)")
    made_up = (f"synthetic: numpyvae.reference_state.synthetic_batch({B}, {tuple(config.input_shape)}, "
               f"{config.num_classes}, seed={config.seed})")
    if synthetic:
        return (*synthetic_batch(B, config.input_shape, config.num_classes, config.seed), made_up)
    if tuple(config.input_shape) != (1, 28, 28):
        raise ReferenceStateError(f"the test set's images are 1x28x28, not {config.input_shape}: use --synthetic")
    try:
        x, y = test_set(B, config.num_classes, data_dir)
    except DataError as error:
        warnings.warn(f"no Fashion-MNIST test set ({error}); using a synthetic batch instead")
        return (*synthetic_batch(B, config.input_shape, config.num_classes, config.seed), made_up)
    return x, y, f"fashion-mnist test images 0..{B - 1}"


def compute(config, x, y=None):
    """One step of the model `config` (a TrainConfig) on x (and y), in float64: the arrays of the file.

    The weights are the initial ones of config.seed (as train starts), eps ~ N(0, I) from
    numpy.random.default_rng((seed, 1)): (B, Z) for the ELBO, (K, B, Z) for the IWAE objective.
    """
    model = VAE(**config.model_settings(), dtype=np.float64, seed=config.seed)
    B, Z, K = x.shape[0], model.latent_dim, config.samples
    # as train does: a step that cannot fit would be ended by the kernel with no message
    memory.check_step_fits(model, B, K, config.objective, "choose a smaller --batch-size or --samples")
    rng = np.random.default_rng((config.seed, EPS_STREAM))
    eps = rng.standard_normal(get_objective(config.objective).noise_shape(K, B, Z))
    loss, recon, kl = model.loss_and_grads(x, eps=eps, beta=config.beta, y=y, objective=config.objective,
                                           samples=config.samples)
    host = model.backend.to_host
    arrays = {f"params/{name}": np.array(host(value), np.float64) for name, value in model.params.items()}
    arrays.update({f"grads/{name}": np.array(host(value), np.float64) for name, value in model.grads.items()})
    arrays.update(x=np.asarray(x, np.float64), eps=eps)
    if y is not None:
        arrays["y"] = np.asarray(y, np.int64)
    arrays.update({name: np.array(float(host(value)), np.float64)
                   for name, value in (("loss", loss), ("recon", recon), ("kl", kl))})
    return arrays


def _json_bytes(value):
    """A JSON document as a uint8 array: the npz holds only plain arrays, which any language's npy reader takes."""
    return np.frombuffer(json.dumps(value, indent=1).encode(), dtype=np.uint8)


def read_json(array):
    """The JSON document that _json_bytes stored (config or info)."""
    return json.loads(bytes(np.asarray(array, np.uint8)).decode())


def is_reference_state(path):
    """True when `path` is a file this module wrote (so writing over it loses nothing else)."""
    try:
        with np.load(path) as file:
            return "info" in file.files and read_json(file["info"]).get("format", "").startswith(
                FORMAT.rsplit(" ", 1)[0])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError, UnicodeDecodeError):
        return False


def check_out_path(path):
    """Refuse an output that would replace something else: it must end in .npz, and an existing file
    there must be a reference state. Run before any work."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ReferenceStateError(f"--out must name a .npz file, not {str(path)!r}")
    if path.is_dir():
        raise ReferenceStateError(f"{shown(path)} is a directory; --out names the file to write")
    if path.exists() and not is_reference_state(path):
        raise ReferenceStateError(f"{shown(path)} exists and is not a reference state; not replacing it "
                                  "(remove it or choose another --out)")
    if not path.parent.is_dir():
        raise ReferenceStateError(f"no directory {shown(path.parent)} to write {shown(path.name)} into")
    if not os.access(path.parent, os.W_OK):
        raise ReferenceStateError(f"cannot write in {shown(path.parent)} (permission denied)")


def write(path, config, data_dir=None, synthetic=False):
    """Make the reference state of `config` and write it to `path` atomically; returns info (a dict)."""
    config = replace(config, dtype="float64")
    x, y, source = reference_batch(config, data_dir, synthetic)
    arrays = compute(config, x, y)
    info = {"format": FORMAT, "numpyvae": __version__, "data": source,
            "loss": "summed over the batch; see docs/reference-state.md"}
    arrays["config"] = _json_bytes(asdict(config))
    arrays["info"] = _json_bytes(info)
    with atomic_write(path) as file:          # a Ctrl-C or a full disk leaves no half-written file
        np.savez(file, **arrays)
    return info
