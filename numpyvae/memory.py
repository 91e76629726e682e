"""Will it fit? The memory a training step needs, against the memory the machine has free.

An IWAE step with a large K builds (K * B, D) arrays, and a conv model's step with a large batch
its patch matrices; when they do not fit, the kernel ends the process (the out-of-memory killer
sends SIGKILL: no message, no clean-up) long before Python could raise MemoryError. So the step's
memory is estimated before the first step, and a step that cannot fit is refused in one line.

First a floor is counted from the decoder's shapes (decoder_numbers_per_row); a step far below
what is free goes ahead with no more ado. Near the limit the estimate is measured, not derived:
on the host (NumPy, fakegpu), two tiny steps of a throwaway copy of the model, of r and 2 r
decoded rows, run under tracemalloc (NumPy reports its arrays to it), and the difference of
their peaks, over r, is what one row costs; a step of K * B rows costs K * B times that (2% from
the real peak for the default dense and conv models, 16% over it for a small conditional one; a
test holds it within -20% and +25%). It follows the code as it is, whatever the architecture.
On a GPU, where tracemalloc sees nothing, the floor stands in: a step refused by it could not
have run; one it lets through may still be too big.

Shapes: K = samples per image, B = batch, D = pixels, Z = latent.
"""
from __future__ import annotations

import math
import os
import tracemalloc
from pathlib import Path

import numpy as np

from numpyvae.objectives import get_objective
from numpyvae.vae import VAE

PROBE_ROWS = 4      # r: the smaller probe step decodes r rows, the larger 2 r
# Measured steps took 1.5 (IWAE) and 2.0 (ELBO) times the floor for the dense 784-400-20 model, 5.9 and
# 11.8 times for the conv one (its encoder's patch matrices are not in the floor): a step whose floor
# is below 1/FLOOR_MARGIN of the free memory fits without measuring (and nothing extra runs)
FLOOR_MARGIN = 30


class WontFit(MemoryError):
    """The work asked for needs more memory than is free; the one-line message says how much."""


def decoder_numbers_per_row(spec, network):
    """Numbers one decoded row keeps alive through a step: the output of each decoder layer with
    weights and its gradient (activations such as ReLU may work in place: not counted), and the
    logits' gradient and the likelihood's cache of them (the logits are the last layer's output)."""
    total, shape = 0, (spec.latent_dim + spec.num_classes,)
    for layer in network.decoder:
        shape = layer.output_shape(shape)
        if layer.parameters():
            total += 2 * math.prod(shape)
    return total + 2 * spec.input_dim


def decoded_rows(batch, samples, objective):
    """Rows a training step decodes: K * B for the IWAE bound, B for the ELBO (objectives.py)."""
    return batch * get_objective(objective).rows_per_image(samples)


def floor_bytes(model, rows):
    """The shapes' floor (decoder_numbers_per_row) of a step decoding `rows` rows, in bytes."""
    return rows * decoder_numbers_per_row(model.spec, model.network) * model.dtype.itemsize


def step_bytes(model, batch, samples=1, objective="elbo"):
    """The bytes a training step of `batch` images (and `samples` samples each, for IWAE) needs.

    Measured per decoded row on the host (see the module docstring); on a GPU, the shapes' floor.
    """
    rows = decoded_rows(batch, samples, objective)
    if model.backend.name in ("numpy", "fakegpu"):
        return rows * measured_bytes_per_row(model, objective)
    return floor_bytes(model, rows)


def measured_bytes_per_row(model, objective):
    """What one more decoded row adds to the peak of a model's first training step, measured."""
    peaks = [_probe_peak(model, objective, rows) for rows in (PROBE_ROWS, 2 * PROBE_ROWS)]
    return max(1, (peaks[1] - peaks[0]) // PROBE_ROWS)


def _probe_peak(model, objective, rows):
    """Peak traced bytes of one training step of a fresh copy of `model` decoding `rows` rows."""
    spec = model.spec
    copy = VAE(**model.config, backend=model.backend, dtype=model.dtype, seed=0)
    goal = get_objective(objective)
    samples, batch = (rows, 1) if goal.takes_samples else (1, rows)     # IWAE: K samples of one image
    rng = np.random.default_rng(0)
    x = rng.random((batch, spec.input_dim), dtype=np.float32).astype(model.dtype)
    eps = rng.standard_normal(goal.noise_shape(samples, batch, spec.latent_dim))
    y = np.zeros(batch, dtype=np.int64) if spec.num_classes else None
    x, eps = model.backend.to_device(x, dtype=model.dtype), model.backend.to_device(eps, dtype=model.dtype)
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        copy.loss_and_grads(x, eps=eps, y=y, objective=objective)
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        if not tracing:
            tracemalloc.stop()


def free_bytes(backend):
    """Bytes this process can still allocate on `backend`'s device, or None where that cannot be told."""
    if backend.name == "cupy":
        try:
            return int(backend.xp.cuda.Device().mem_info[0])
        except Exception:      # a driver that will not say: no refusal on a guess
            return None
    return host_free_bytes()


def host_free_bytes():
    """MemAvailable plus free swap (Linux; elsewhere the free pages sysconf reports, if it does),
    capped by this container's cgroup limit; None where nothing says."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        free = (int(fields["MemAvailable"].split()[0]) + int(fields.get("SwapFree", "0 kB").split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:        # cgroup v2: a container's own ceiling, below the machine's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def check_step_fits(model, batch, samples, objective, advice):
    """Raise WontFit (one line) if a training step of `batch` images (x `samples` for IWAE) cannot fit."""
    free = free_bytes(model.backend)
    if free is None or floor_bytes(model, decoded_rows(batch, samples, objective)) * FLOOR_MARGIN <= free:
        return
    needed = step_bytes(model, batch, samples, objective)
    if needed > free:
        what = f"a training step of {batch} images" + (f" x {samples} samples" if samples > 1 else "")
        raise WontFit(f"{what} needs about {_size(needed)} of memory, and {_size(free)} is free on "
                      f"{model.backend.name}; {advice}")


def _size(n):
    return f"{n / 2 ** 30:,.1f} GB" if n >= 2 ** 30 else f"{n / 2 ** 20:,.0f} MB"
