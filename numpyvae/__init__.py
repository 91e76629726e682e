"""numpyvae: a variational autoencoder with hand-written backprop on NumPy and CuPy."""
from numpyvae.backend import get_backend
from numpyvae.datasets import load_fashion_mnist
from numpyvae.idx import read_idx, write_idx
from numpyvae.optim import Adam
from numpyvae.vae import VAE

__all__ = ["VAE", "Adam", "get_backend", "load_fashion_mnist", "read_idx", "write_idx"]
