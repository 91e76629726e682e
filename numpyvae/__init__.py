"""numpyvae: a variational autoencoder with hand-written backprop on NumPy and CuPy."""
from numpyvae.backend import get_backend
from numpyvae.datasets import load_fashion_mnist
from numpyvae.idx import read_idx, write_idx
from numpyvae.optim import Adam
from numpyvae.trained import load_run
from numpyvae.vae import VAE

__version__ = "0.1.0"         # setup.cfg reads it from here

__all__ = ["VAE", "Adam", "get_backend", "load_fashion_mnist", "load_run", "read_idx", "write_idx"]
