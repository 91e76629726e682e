"""numpyvae: a variational autoencoder with hand-written backprop on NumPy and CuPy."""
from numpyvae.backend import get_backend
from numpyvae.optim import Adam
from numpyvae.vae import VAE

__all__ = ["VAE", "Adam", "get_backend"]
