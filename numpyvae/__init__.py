"""numpyvae: a variational autoencoder with hand-written backprop on NumPy and CuPy."""
from numpyvae.backend import get_backend

__all__ = ["get_backend"]
