"""The variational autoencoder: encode -> (mu, logvar), reparameterize, decode, and its gradients.

    encoder  x (B, D) -> h = relu(x @ enc.W + enc.b) (B, H) -> mu, logvar (B, Z) each
    sample   z = mu + eps * exp(logvar / 2), eps ~ N(0, I)          (B, Z)
    decoder  z -> g = relu(z @ dec.W + dec.b) (B, H) -> logits (B, D) -> sigmoid = pixel means

The loss is the negative ELBO, summed over the batch,
    loss = reconstruction(x, logits) + beta * KL(N(mu, exp(logvar)) || N(0, I)),
with beta = 1 for the plain VAE. `loss_and_grads` runs forward and then backward
through the same layers in exactly the reverse order, filling `model.grads`.

Parameters live in ONE flat buffer (`flat_params`) and gradients in another with
the same layout (`flat_grads`); `params` and `grads` are dicts of named views into
them, so the optimizer can update everything in a few passes over flat memory.

Shapes: B = batch, D = input (pixels), H = hidden, Z = latent.
"""
from __future__ import annotations

import math

import numpy as np

from numpyvae.backend import TRAIN_DTYPE, get_backend
from numpyvae.layers import Linear, ReLU, Reparameterize, sigmoid
from numpyvae.losses import BernoulliLoss, GaussianKL, GaussianLoss

LIKELIHOODS = {"bernoulli": BernoulliLoss, "gaussian": GaussianLoss}


def parameter_shapes(input_dim, hidden_dim, latent_dim):
    """Name -> shape of every parameter, in flat-buffer order. Every W is (fan_in, fan_out)."""
    D, H, Z = input_dim, hidden_dim, latent_dim
    return {
        "enc.W": (D, H), "enc.b": (H,),
        "mu.W": (H, Z), "mu.b": (Z,),
        "logvar.W": (H, Z), "logvar.b": (Z,),
        "dec.W": (Z, H), "dec.b": (H,),
        "out.W": (H, D), "out.b": (D,),
    }


def flat_views(flat, shapes):
    """Name -> view of `flat` with that shape, laid end to end in the order of `shapes`."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        views[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return views


class VAE:
    """A fully connected VAE with hand-written backprop.

    Args:
        input_dim, hidden_dim, latent_dim: D, H, Z (the seed's 784, 400, 20).
        likelihood: "bernoulli" (binary cross-entropy from logits, the default) or
                    "gaussian" (the seed's sum of squared errors on sigmoid outputs).
        backend: a Backend or its name ("numpy", "cupy", "auto", "fakegpu").
        dtype: float32 to train (the default), float64 to check gradients.
        seed: seeds the initial weights (drawn on the host, so every backend starts
              from the same numbers) and the default eps stream.
    """

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, likelihood="bernoulli",
                 backend="numpy", dtype=TRAIN_DTYPE, seed=0):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, not {likelihood!r}")
        for name, size in (("input_dim", input_dim), ("hidden_dim", hidden_dim), ("latent_dim", latent_dim)):
            if not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"{name} must be a positive integer, not {size!r}")
        self.input_dim, self.hidden_dim, self.latent_dim = int(input_dim), int(hidden_dim), int(latent_dim)
        self.likelihood = likelihood
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        xp = self.xp = self.backend.xp

        self.shapes = parameter_shapes(self.input_dim, self.hidden_dim, self.latent_dim)
        self.num_params = sum(math.prod(s) for s in self.shapes.values())
        self.flat_params = self.backend.to_device(init_params(self.shapes, seed), dtype=self.dtype)
        self.flat_grads = xp.zeros(self.num_params, dtype=self.dtype)
        self.params = flat_views(self.flat_params, self.shapes)
        self.grads = flat_views(self.flat_grads, self.shapes)
        self.rng = self.backend.rng(seed)

        def linear(name):
            return Linear(xp, self.dtype, self.params[name + ".W"], self.params[name + ".b"],
                          self.grads[name + ".W"], self.grads[name + ".b"])

        self.enc, self.enc_relu = linear("enc"), ReLU(xp, self.dtype)
        self.mu_head, self.logvar_head = linear("mu"), linear("logvar")
        self.reparameterize = Reparameterize(xp, self.dtype)
        self.dec, self.dec_relu = linear("dec"), ReLU(xp, self.dtype)
        self.out = linear("out")
        self.recon_loss = LIKELIHOODS[likelihood](xp, self.dtype)
        self.kl_loss = GaussianKL(xp, self.dtype)
        self._eps = {}   # batch size -> reused eps buffer

    @property
    def config(self):
        return {"input_dim": self.input_dim, "hidden_dim": self.hidden_dim,
                "latent_dim": self.latent_dim, "likelihood": self.likelihood}

    # -- the training step ----------------------------------------------------
    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None):
        """Forward and backward on a batch; fills self.grads and returns (total, recon, kl).

        x: (B, D) pixels in [0, 1]. eps: (B, Z) standard normal noise, drawn from
        `rng` (default: the model's own) when not given. The three losses are summed
        over the batch and returned as 0-d backend arrays, so reading them is up to
        the caller (on a GPU each read waits for the device).
        """
        x = self._input(x)
        eps = self._noise(x.shape[0], eps, rng)
        total, recon, kl = self._forward(x, eps, beta)
        self._backward(beta)
        return total, recon, kl

    def loss(self, x, eps=None, beta=1.0, rng=None):
        """Forward only: (total, recon, kl) summed over the batch, as loss_and_grads returns them."""
        x = self._input(x)
        losses = self._forward(x, self._noise(x.shape[0], eps, rng), beta)
        self._forget()
        return losses

    def _forward(self, x, eps, beta):
        h = self.enc_relu.forward(self.enc.forward(x))                      # (B, H)
        mu = self.mu_head.forward(h)                                        # (B, Z)
        logvar = self.logvar_head.forward(h)                                # (B, Z)
        z = self.reparameterize.forward(mu, logvar, eps)                    # (B, Z)
        g = self.dec_relu.forward(self.dec.forward(z))                      # (B, H)
        logits = self.out.forward(g)                                        # (B, D)
        recon = self.recon_loss.forward(logits, x)
        kl = self.kl_loss.forward(mu, logvar)
        return recon + beta * kl, recon, kl

    def _backward(self, beta):
        """Backward through _forward's layers in exactly the reverse order."""
        dmu_kl, dlogvar_kl = self.kl_loss.backward(scale=beta)              # (B, Z) each
        dlogits = self.recon_loss.backward()                                # (B, D)
        dg = self.out.backward(dlogits)                                     # (B, H)
        dz = self.dec.backward(self.dec_relu.backward(dg))                  # (B, Z)
        dmu, dlogvar = self.reparameterize.backward(dz)                     # (B, Z) each
        # mu and logvar feed both the decoder (through z) and the KL: their gradients add
        dmu += dmu_kl
        dlogvar += dlogvar_kl
        # h feeds both heads: its gradient is the sum of what each head sends back
        dh = self.mu_head.backward(dmu)                                     # (B, H)
        dh += self.logvar_head.backward(dlogvar)
        self.enc.backward(self.enc_relu.backward(dh), need_dx=False)        # x is data: no dx

    # -- using the model ----------------------------------------------------------
    def encode(self, x):
        """x (B, D) -> (mu, logvar), each (B, Z), as new arrays."""
        h = self.enc_relu.forward(self.enc.forward(self._input(x)))
        mu, logvar = self.mu_head.forward(h).copy(), self.logvar_head.forward(h).copy()
        self._forget()
        return mu, logvar

    def decode(self, z):
        """z (B, Z) -> pixel means sigmoid(logits) in [0, 1], (B, D), as a new array."""
        logits = self.out.forward(self.dec_relu.forward(self.dec.forward(self._input(z))))
        self._forget()
        return sigmoid(self.xp, logits, out=self.xp.empty_like(logits))

    def reconstruct(self, x, sample=False, rng=None):
        """Decode the posterior mean (or, with sample=True, a posterior sample) of each x."""
        mu, logvar = self.encode(x)
        if not sample:
            return self.decode(mu)
        eps = self._noise(mu.shape[0], None, rng)
        return self.decode(mu + eps * self.xp.exp(0.5 * logvar))

    def sample(self, n, rng=None):
        """n new images from the prior: decode z ~ N(0, I). Returns (n, D) pixel means."""
        z = self.xp.empty((n, self.latent_dim), dtype=self.dtype)
        self.backend.standard_normal(rng if rng is not None else self.rng, z)
        return self.decode(z)

    # -- helpers ------------------------------------------------------------------
    def _input(self, x):
        # no copy when x is already a backend array of our dtype
        x = self.backend.to_device(x, dtype=self.dtype)
        if x.ndim != 2:
            raise ValueError(f"expected a (batch, features) array, got shape {tuple(x.shape)}")
        return x

    def _noise(self, batch, eps, rng):
        if eps is not None:
            eps = self._input(eps)
            if eps.shape != (batch, self.latent_dim):
                raise ValueError(f"eps must have shape {(batch, self.latent_dim)}, got {tuple(eps.shape)}")
            return eps
        buffer = self._eps.get(batch)
        if buffer is None:
            buffer = self._eps[batch] = self.xp.empty((batch, self.latent_dim), dtype=self.dtype)
        return self.backend.standard_normal(rng if rng is not None else self.rng, buffer)

    def _forget(self):
        # inference calls forward without backward; drop what forward saved
        for layer in (self.enc, self.enc_relu, self.mu_head, self.logvar_head, self.reparameterize,
                      self.dec, self.dec_relu, self.out, self.recon_loss, self.kl_loss):
            layer._saved = None


def init_params(shapes, seed):
    """Initial weights as PyTorch's nn.Linear draws them: W and b uniform in +-1/sqrt(fan_in).

    (PyTorch's kaiming_uniform_ with a = sqrt(5) works out to the same bound for W.)
    Drawn in float64 on the host from a seeded generator; returns one flat array.
    """
    rng = np.random.default_rng(seed)
    pieces = []
    for name, shape in shapes.items():
        fan_in = shapes[name[:-1] + "W"][0]
        bound = 1.0 / math.sqrt(fan_in)
        pieces.append(rng.uniform(-bound, bound, size=math.prod(shape)))
    return np.concatenate(pieces)
