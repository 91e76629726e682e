"""Array backend: NumPy or CuPy, chosen once, explicitly, and passed down.

Model code never imports numpy or cupy itself; it asks a `Backend` for its array
namespace `xp` and for the few things that differ between a host and a device:
moving arrays across (`to_device`, `to_host`), random numbers, and waiting for
queued work (`synchronize`). Choosing a backend is explicit:

    backend = get_backend("numpy")   # or "cupy", or "auto" (CuPy if a GPU is usable)

There is no module-level "current backend": a VAE holds the backend it was built
with, so two models on two backends can live in one process.

Dtype policy: float32 for training (fast, and what the GPU wants), float64 for
gradient checks (finite differences need the extra digits).

The third backend, "fakegpu", is a supported tool for people changing numpyvae: NumPy
dressed as a separate device (see `fakegpu.py`). Its arrays refuse to mix with host arrays
exactly where CuPy's would and it counts every transfer, so code that would copy data
between host and GPU behind your back fails on a machine with no GPU too
(`numpyvae train --backend fakegpu` trains that way; it is as slow as NumPy, no faster).
"""
from __future__ import annotations

import numpy as np

TRAIN_DTYPE = np.float32   # what training runs in
CHECK_DTYPE = np.float64   # what gradient checks run in

BACKEND_NAMES = ("numpy", "cupy", "auto", "fakegpu")


class BackendError(RuntimeError):
    """A backend was asked for where it cannot run; the message says why and what to do."""


class Backend:
    """One array library plus the host<->device glue around it.

    Attributes:
        name: "numpy", "cupy" or "fakegpu".
        xp:   the array namespace model code calls (numpy, cupy, or the fake device's).
        is_device: True when arrays live somewhere other than host memory, so
                   `to_host` is a copy and reading a number is a sync point.
    """

    def __init__(self, name, xp, is_device):
        self.name = name
        self.xp = xp
        self.is_device = is_device

    def __repr__(self):
        return f"Backend({self.name!r})"

    # -- transfers ----------------------------------------------------------
    def to_device(self, array, dtype=None):
        """Host array -> backend array (a copy on a device, no copy on NumPy when dtype matches)."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array):
        """Backend array -> NumPy array. On a device this is a transfer and a sync point."""
        if self.name == "numpy":
            return np.asarray(array)
        return self.xp.asnumpy(array)

    def scalar(self, array):
        """A 0-d backend array -> Python float. On a device this waits for the GPU: keep it out of the step."""
        return float(self.to_host(array))

    def synchronize(self):
        """Wait until all queued device work is done (a no-op on the host). Needed for honest GPU timings."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()

    # -- random numbers -----------------------------------------------------
    def rng(self, seed):
        """A seeded generator living where the arrays live.

        `seed` may be an int or a tuple of ints (e.g. (seed, epoch)); the same seed
        gives the same stream on every run of the same backend. NumPy's Generator, CuPy's
        (cuRAND's XORWOW, seeded through the same SeedSequence) and the fake device's share
        one interface, so the draws below are the same line on every backend.
        """
        seed = np.random.SeedSequence(seed)
        if self.name == "numpy":
            return np.random.default_rng(seed)
        return self.xp.random.default_rng(seed)

    def standard_normal(self, rng, out):
        """Fill `out` with N(0, 1) samples of out's dtype, in place: no temporary, on a GPU either."""
        rng.standard_normal(out.shape, dtype=out.dtype, out=out)
        return out

    def uniform(self, rng, out):
        """Fill `out` with U[0, 1) samples of out's dtype, in place.

        The size is given, though `out` implies it: CuPy 14's Generator.random without it draws ONE
        number and copies it into every element of `out`. It also draws into a temporary of its own
        and copies that into `out`: one (B, D) allocation a step when binarizing, from CuPy's pool.
        """
        rng.random(out.shape, dtype=out.dtype, out=out)
        return out


def cuda_unavailable_reason():
    """None if CuPy can run here, else one sentence saying why not."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    except Exception as error:  # a broken install raises all sorts of things at import
        return f"CuPy failed to import ({type(error).__name__}: {error})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        text = str(error)
        if "insufficient" in text.lower() or "driver" in text.lower():
            return f"the NVIDIA driver is missing or too old for this CuPy ({text})"
        return f"no usable CUDA device ({text})"
    if count == 0:
        return "no CUDA device was found"
    try:
        _first_kernels(cupy)
    except Exception as error:   # a driver alone, without the CUDA libraries CuPy loads lazily
        return (f"CuPy sees a GPU but cannot run on it ({type(error).__name__}: {error}); the CUDA "
                f"libraries it loads on first use (cuBLAS, cuRAND, NVRTC) may be missing")
    return None


def _first_kernels(cupy):
    """Run, tiny, each kind of GPU work numpyvae does: a compiled elementwise kernel, a matrix
    product and random numbers. A device count alone says nothing about the libraries they need."""
    a = cupy.arange(4, dtype=cupy.float32).reshape(2, 2)
    b = cupy.ElementwiseKernel("T x", "T y", "y = x * 2 + 1", "numpyvae_probe")(a)
    (b @ a).sum()
    cupy.random.default_rng(0).standard_normal(dtype=cupy.float32, out=cupy.empty(2, dtype=cupy.float32))
    cupy.cuda.get_current_stream().synchronize()


def check_cuda_available():
    """Raise BackendError, saying why and what to do, unless CuPy can run here."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise BackendError(
            f"--backend cupy cannot run: {reason}. Install the 'cuda' extra "
            "(from a checkout: pip install -e '.[cuda]'; from a wheel made by python -m build: pip install 'dist/<the wheel>.whl[cuda]') "
            "on a machine with an NVIDIA GPU and a current driver, or use --backend numpy.")


def get_backend(name="auto"):
    """Return the Backend called `name`: "numpy", "cupy", "auto" or "fakegpu".

    "auto" is CuPy when a CUDA device is usable and NumPy otherwise; it never fails.
    An explicit "cupy" where CuPy cannot run raises BackendError saying why.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        name = "cupy" if cuda_unavailable_reason() is None else "numpy"
    if name == "numpy":
        return Backend("numpy", np, is_device=False)
    if name == "fakegpu":
        from numpyvae import fakegpu
        return Backend("fakegpu", fakegpu.namespace, is_device=True)
    check_cuda_available()
    import cupy
    return Backend("cupy", cupy, is_device=True)
