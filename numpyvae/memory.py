"""Will it fit? The memory a training step needs, against the memory the machine has free.

An IWAE step with a large K builds (K * B, D) arrays; when they do not fit, the kernel ends the
process (the out-of-memory killer sends SIGKILL: no message, no clean-up) long before Python
could raise MemoryError. So the step's arrays are counted before the first step, and a step that
cannot fit is refused in one line.

The count is a floor, not a forecast: only the arrays that must exist at once (the decoder's
activations and their gradients on every one of the K * B rows, and the logits with their
gradient). A step refused by it could not have run; one it lets through may still be too big
(then MemoryError or the kernel decides, as before).

Shapes: K = samples per image, B = batch, D = pixels.
"""
from __future__ import annotations

import math
import os
from pathlib import Path


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


def step_bytes(model, batch, samples=1):
    """A floor on the bytes a training step of `batch` images and `samples` samples each builds."""
    rows = batch * samples
    return rows * decoder_numbers_per_row(model.spec, model.network) * model.dtype.itemsize


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


def check_fits(what, needed, backend, advice):
    """Raise WontFit (one line) if `needed` bytes are more than `backend` has free."""
    free = free_bytes(backend)
    if free is not None and needed > free:
        raise WontFit(f"{what} needs at least {_size(needed)} of memory, and {_size(free)} is free on "
                      f"{backend.name}; {advice}")


def _size(n):
    return f"{n / 2 ** 30:,.1f} GB" if n >= 2 ** 30 else f"{n / 2 ** 20:,.0f} MB"
