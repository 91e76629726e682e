"""numpyvae: a variational autoencoder with hand-written backprop on NumPy and CuPy."""
import importlib

__version__ = "0.1.0"         # setup.cfg reads it from here

# Loaded on first use (PEP 562), so that `import numpyvae` and the `numpyvae` command start
# without importing NumPy: a Ctrl-C that early then reaches the command's own handler.
_EXPORTS = {"VAE": "numpyvae.vae", "Adam": "numpyvae.optim", "get_backend": "numpyvae.backend",
            "load_fashion_mnist": "numpyvae.datasets", "load_run": "numpyvae.trained",
            "read_idx": "numpyvae.idx", "write_idx": "numpyvae.idx"}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'numpyvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value            # looked up once
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
