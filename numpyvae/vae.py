"""The variational autoencoder: encode -> (mu, logvar), reparameterize, decode, and its gradients.

    encoder  x (B, D) -> h = relu(x @ enc.W + enc.b) (B, H) -> mu, logvar (B, Z) each
    sample   z = mu + eps * exp(logvar / 2), eps ~ N(0, I)          (B, Z)
    decoder  z -> g = relu(z @ dec.W + dec.b) (B, H) -> logits (B, D) -> the likelihood's mean
             (sigmoid(logits) for the Bernoulli and the Gaussian): pixel means in [0, 1]

A conditional VAE (Sohn, Lee & Yan 2015; num_classes = C > 0) also reads each image's
label y: the encoder sees [x, onehot(y)] (B, D + C) and the decoder [z, onehot(y)]
(B, Z + C), so enc.W is (D + C, H) and dec.W is (Z + C, H). The one-hot columns are data,
so the gradient through each concatenation keeps only the columns of x and z: the
decoder's input gradient (B, Z + C) is cut to its first Z columns to give dL/dz, and the
encoder's input needs no gradient at all. p(x | z, y) is then a model of each class, and
decoding z ~ N(0, I) with a chosen y draws new clothes of that class.

The network is declared once, as three ordered layer lists (`encoder`, `heads`,
`decoder`); the parameter shapes, the forward order and the reverse backward order all
follow from them. The loss is the negative ELBO, summed over the batch,
    loss = reconstruction(x, logits) + beta * KL(N(mu, exp(logvar)) || N(0, I)),
with beta = 1 for the plain VAE and the reconstruction term from losses.LIKELIHOODS.
`loss_and_grads(x, eps=eps, objective="iwae")`, with eps (K, B, Z), trains on the tighter
importance-weighted bound instead: the decoder runs once on all K * B samples, and the bound's
math, forward and backward, is in iwae.py.

Parameters live in ONE flat buffer (`flat_params`) and gradients in another with
the same layout (`flat_grads`); `params` and `grads` are dicts of named views into
them, so the optimizer can update everything in a few passes over flat memory.

A model is built from its settings, `VAE(**model.config, backend=..., dtype=..., seed=...)`,
and `check_settings` is the one place those settings are validated.

Shapes: B = batch, D = input (pixels), H = hidden, Z = latent.
"""
from __future__ import annotations

import math

import numpy as np

from numpyvae.backend import TRAIN_DTYPE, get_backend
from numpyvae import iwae, layers, losses
from numpyvae.layers import Linear, ReLU, Workspace, buffer, sequence_backward, sequence_forward

SIZES = ("input_dim", "hidden_dim", "latent_dim")
OBJECTIVES = ("elbo", "iwae")     # what loss_and_grads trains on: the ELBO, or the K-sample IWAE bound (iwae.py)
MODEL_SETTINGS = SIZES + ("likelihood", "num_classes")   # VAE.config: the network, not where or how it runs
# Parameters, gradients and Adam's two moments are each one flat buffer of this many floats:
# 100 million of them take 1.6 GB in float32 before any activation, more than a student's machine has.
MAX_PARAMETERS = 100_000_000


def check_settings(input_dim, hidden_dim, latent_dim, likelihood, num_classes=0):
    """Raise ValueError naming the first model setting that cannot work."""
    losses.get_likelihood(likelihood)
    for name, size in zip(SIZES, (input_dim, hidden_dim, latent_dim)):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{name} must be a positive integer, not {size!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 0:
        raise ValueError(f"num_classes must be 0 (no labels) or a positive integer, not {num_classes!r}")
    count = num_parameters(build_layers(int(input_dim), int(hidden_dim), int(latent_dim), int(num_classes)))
    if count > MAX_PARAMETERS:
        classes = f" with {num_classes} classes" if num_classes else ""
        raise ValueError(f"a {input_dim}-{hidden_dim}-{latent_dim} VAE{classes} would have {count:,} parameters; "
                         f"numpyvae trains at most {MAX_PARAMETERS:,} (choose a smaller hidden_dim or latent_dim)")


def build_layers(input_dim, hidden_dim, latent_dim, num_classes=0):
    """(encoder, heads, decoder): the whole network, as the layer lists everything else reads.

    C = num_classes one-hot columns join the encoder's and the decoder's input (0: no labels).
    """
    D, H, Z, C = input_dim, hidden_dim, latent_dim, num_classes
    encoder = [Linear("enc", D + C, H), ReLU("enc.relu")]        # [x, y] (B, D + C) -> h (B, H)
    heads = [Linear("mu", H, Z), Linear("logvar", H, Z)]          # h -> mu, logvar (B, Z) each
    decoder = [Linear("dec", Z + C, H), ReLU("dec.relu"), Linear("out", H, D)]   # [z, y] (B, Z + C) -> logits
    return encoder, heads, decoder


def parameter_shapes(layers):
    """Name -> shape of every parameter of `layers`, in flat-buffer order."""
    return {name: shape for layer in layers for name, shape in layer.parameters().items()}


def num_parameters(layer_lists):
    return sum(math.prod(shape) for layers in layer_lists for shape in parameter_shapes(layers).values())


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
        likelihood: a name in losses.LIKELIHOODS: "bernoulli" (binary cross-entropy from
                    logits, the default), "gaussian" (the seed's squared error) or
                    "continuous-bernoulli" (cross-entropy normalized into a density on [0, 1]).
        num_classes: C > 0 makes a conditional VAE whose every call takes labels y (B,)
                    in 0..C-1; 0 (the default) is the plain VAE.
        backend: a Backend or its name ("numpy", "cupy", "auto", "fakegpu").
        dtype: float32 to train (the default), float64 to check gradients.
        seed: seeds the initial weights (drawn on the host, so every backend starts
              from the same numbers) and the default eps stream.
    """

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, likelihood="bernoulli",
                 num_classes=0, backend="numpy", dtype=TRAIN_DTYPE, seed=0):
        check_settings(input_dim, hidden_dim, latent_dim, likelihood, num_classes)
        self.input_dim, self.hidden_dim, self.latent_dim = int(input_dim), int(hidden_dim), int(latent_dim)
        self.num_classes = int(num_classes)
        self.likelihood = likelihood
        self.recon_term = losses.LIKELIHOODS[likelihood]
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        xp = self.xp = self.backend.xp

        self.encoder, self.heads, self.decoder = build_layers(self.input_dim, self.hidden_dim, self.latent_dim,
                                                              self.num_classes)
        self.layers = self.encoder + self.heads + self.decoder
        self.shapes = parameter_shapes(self.layers)
        self.num_params = sum(math.prod(s) for s in self.shapes.values())
        self.flat_params = self.backend.to_device(init_params(self.layers, seed), dtype=self.dtype)
        self.flat_grads = xp.zeros(self.num_params, dtype=self.dtype)
        self.params = flat_views(self.flat_params, self.shapes)
        self.grads = flat_views(self.flat_grads, self.shapes)
        self.rng = self.backend.rng(seed)
        self.workspace = Workspace(xp, self.dtype)   # the training step's buffers, reused every step
        self._classes = xp.arange(self.num_classes)  # (C,) for one_hot, made once

    @property
    def config(self):
        """The settings that define the network: VAE(**model.config) builds another like it."""
        return {name: getattr(self, name) for name in MODEL_SETTINGS}

    @property
    def conditional(self):
        return self.num_classes > 0

    # -- the training step ----------------------------------------------------
    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None, y=None, objective="elbo", samples=1):
        """Forward and backward on a batch; fills self.grads and returns (total, recon, kl).

        x: (B, D) pixels in [0, 1]. eps: (B, Z) standard normal noise, drawn from
        `rng` (default: the model's own) when not given. y: (B,) integer labels, for a
        conditional model only. The three losses are summed over the batch and returned
        as 0-d backend arrays, so reading them is up to the caller (on a GPU each read
        waits for the device). Every intermediate array lives in the model's workspace:
        after the first step of a batch size, a step allocates nothing.

        objective="iwae" trains on the negative IWAE bound with K samples per image (iwae.py):
        eps is then (K, B, Z) (or K = `samples` fresh draws), beta plays no part, and total is
        the negative bound while recon and kl are averaged over the K samples (kl as log q - log p).
        """
        if self._is_iwae(objective):
            return self._iwae_step(x, eps, rng, y, samples, backward=True)
        ws = self.workspace
        x = self._input(x)
        y_hot = self._one_hot(y, x.shape[0], ws)
        eps = self._noise(x.shape[0], eps, rng, ws)
        totals, caches = self._forward(x, eps, beta, y_hot, ws)
        self._backward(caches, beta, ws)
        return totals

    def loss(self, x, eps=None, beta=1.0, rng=None, y=None, objective="elbo", samples=1):
        """Forward only: (total, recon, kl) summed over the batch, as loss_and_grads returns them."""
        if self._is_iwae(objective):
            return self._iwae_step(x, eps, rng, y, samples, backward=False)
        x = self._input(x)
        y_hot = self._one_hot(y, x.shape[0])
        totals, _ = self._forward(x, self._noise(x.shape[0], eps, rng), beta, y_hot)
        return totals

    def _forward(self, x, eps, beta, y_hot=None, ws=None):
        xp, p = self.xp, self.params
        x_in, _ = self._with_labels(x, y_hot, "enc.in", ws)                      # (B, D + C)
        h, enc_caches = sequence_forward(xp, self.encoder, p, x_in, ws)          # (B, H)
        (mu, mu_cache), (logvar, logvar_cache) = (head.forward(xp, p, h, ws) for head in self.heads)  # (B, Z)
        z, z_cache = layers.reparameterize_forward(xp, mu, logvar, eps, std=buffer(ws, "z.std", mu.shape),
                                                   z=buffer(ws, "z", mu.shape))  # (B, Z)
        z_in, z_in_cache = self._with_labels(z, y_hot, "dec.in", ws)             # (B, Z + C)
        logits, dec_caches = sequence_forward(xp, self.decoder, p, z_in, ws)     # (B, D)
        recon, recon_cache = self.recon_term.forward(xp, logits, x, ws)
        kl, kl_cache = losses.gaussian_kl_forward(xp, mu, logvar, ws)
        caches = (enc_caches, (mu_cache, logvar_cache), z_cache, z_in_cache, dec_caches, recon_cache, kl_cache)
        return (recon + beta * kl, recon, kl), caches

    def _backward(self, caches, beta, ws=None):
        """Backward through _forward's steps in exactly the reverse order; fills self.grads."""
        xp, p, g = self.xp, self.params, self.grads
        enc_caches, head_caches, z_cache, z_in_cache, dec_caches, recon_cache, kl_cache = caches
        dmu_kl, dlogvar_kl = losses.gaussian_kl_backward(xp, kl_cache, scale=beta, ws=ws)   # (B, Z) each
        dlogits = self.recon_term.backward(xp, recon_cache, ws)                             # (B, D)
        dz = sequence_backward(xp, self.decoder, p, g, dlogits, dec_caches, ws)             # (B, Z + C)
        if z_in_cache is not None:
            dz, _ = layers.concat_backward(xp, dz, z_in_cache)   # (B, Z): the label columns are data
        dmu, dlogvar = layers.reparameterize_backward(xp, dz, z_cache, dmu=buffer(ws, "z.dmu", dz.shape),
                                                      dlogvar=buffer(ws, "z.dlogvar", dz.shape))
        # mu and logvar feed both the decoder (through z) and the KL: their gradients add
        dmu += dmu_kl
        dlogvar += dlogvar_kl
        # h feeds both heads: its gradient is the sum of what each head sends back
        mu_head, logvar_head = self.heads
        dh = mu_head.backward(xp, p, g, dmu, head_caches[0], ws)                     # (B, H)
        dh += logvar_head.backward(xp, p, g, dlogvar, head_caches[1], ws)
        sequence_backward(xp, self.encoder, p, g, dh, enc_caches, ws, need_dx=False)   # x is data: no dx

    def _iwae_step(self, x, eps, rng, y, samples, backward):
        """The IWAE objective: encoder, K samples, the decoder on all K * B of them, iwae.forward,
        and with backward=True the way back, filling self.grads. Returns (total, recon, kl)."""
        xp, p, g = self.xp, self.params, self.grads
        ws = self.workspace if backward else None       # forward-only calls leave the training buffers alone
        x = self._input(x)
        eps = self._iwae_noise(x.shape[0], eps, rng, samples, ws)                   # (K, B, Z)
        K, B, Z = eps.shape
        y_hot = self._one_hot(y, B, ws)
        x_in, _ = self._with_labels(x, y_hot, "enc.in", ws)                         # (B, D + C)
        h, enc_caches = sequence_forward(xp, self.encoder, p, x_in, ws)             # (B, H)
        (mu, mu_cache), (logvar, logvar_cache) = (head.forward(xp, p, h, ws) for head in self.heads)  # (B, Z)
        z, std = iwae.sample(xp, mu, logvar, eps, ws)                               # (K, B, Z)
        # every sample of image b keeps b's label: row k * B + b of the decoder's batch
        z_in, z_in_cache = self._with_labels(z.reshape(K * B, Z), self._repeat_rows(y_hot, K, ws),
                                             "iwae.dec.in", ws)                     # (K * B, Z + C)
        logits, dec_caches = sequence_forward(xp, self.decoder, p, z_in, ws)        # (K * B, D)
        loss, recon, kl, cache = iwae.forward(xp, mu, logvar, eps, z, std, logits, x, self.recon_term, ws)
        if not backward:
            return loss, recon, kl
        dlogits = iwae.backward_logits(xp, cache, self.recon_term, ws)             # (K * B, D)
        dz = sequence_backward(xp, self.decoder, p, g, dlogits, dec_caches, ws)     # (K * B, Z + C)
        if z_in_cache is not None:
            dz, _ = layers.concat_backward(xp, dz, z_in_cache)                      # (K * B, Z)
        dmu, dlogvar = iwae.backward_latents(xp, dz, cache, ws)                     # (B, Z) each
        mu_head, logvar_head = self.heads
        dh = mu_head.backward(xp, p, g, dmu, mu_cache, ws)                          # (B, H)
        dh += logvar_head.backward(xp, p, g, dlogvar, logvar_cache, ws)
        sequence_backward(xp, self.encoder, p, g, dh, enc_caches, ws, need_dx=False)
        return loss, recon, kl

    # -- using the model: fresh arrays, any number of rows, nothing kept ----------
    def encode(self, x, y=None):
        """x (B, D) (and labels y (B,) if conditional) -> (mu, logvar), each (B, Z)."""
        x = self._input(x)
        x_in, _ = self._with_labels(x, self._one_hot(y, x.shape[0]))
        h, _ = sequence_forward(self.xp, self.encoder, self.params, x_in)
        mu, logvar = (head.forward(self.xp, self.params, h)[0] for head in self.heads)
        return mu, logvar

    def decode_logits(self, z, y=None):
        """z (B, Z) (and labels y (B,) if conditional) -> logits (B, D), before the likelihood's mean."""
        z = self._input(z)
        z_in, _ = self._with_labels(z, self._one_hot(y, z.shape[0]))
        return sequence_forward(self.xp, self.decoder, self.params, z_in)[0]

    def decode(self, z, y=None):
        """z (B, Z) -> the likelihood's mean given z, in [0, 1] (for most, sigmoid(logits)), (B, D)."""
        logits = self.decode_logits(z, y)
        return self.recon_term.mean(self.xp, logits, out=logits)

    def reconstruct(self, x, sample=False, rng=None, y=None):
        """Decode the posterior mean (or, with sample=True, a posterior sample) of each x."""
        mu, logvar = self.encode(x, y)
        if not sample:
            return self.decode(mu, y)
        eps = self._noise(mu.shape[0], None, rng)
        return self.decode(layers.reparameterize_forward(self.xp, mu, logvar, eps)[0], y)

    def sample(self, n, rng=None, y=None):
        """n new images from the prior: decode z ~ N(0, I) (with labels y (n,) if conditional). (n, D)."""
        return self.decode(self._noise(n, None, rng), y)

    # -- helpers ------------------------------------------------------------------
    def _input(self, x):
        # no copy when x is already a backend array of our dtype
        x = self.backend.to_device(x, dtype=self.dtype)
        if x.ndim != 2:
            raise ValueError(f"expected a (batch, features) array, got shape {tuple(x.shape)}")
        return x

    def _one_hot(self, y, batch, ws=None):
        """Labels y (batch,) -> (batch, C) one-hot rows, or None for an unconditional model."""
        if not self.conditional:
            if y is not None:
                raise ValueError("this VAE is not conditional (num_classes = 0): it takes no labels y")
            return None
        if y is None:
            raise ValueError(f"a conditional VAE (num_classes = {self.num_classes}) needs labels y")
        on_device = self.backend.is_device and isinstance(y, self.xp.ndarray)
        if not on_device:
            # labels from the host (arrays, lists) are checked; labels already on a device are
            # trusted, since reading them there would make the step wait for the device
            y = np.asarray(y)
            in_range = y.size == 0 or (y.min() >= 0 and y.max() < self.num_classes)
            if y.shape != (batch,) or y.dtype.kind not in "iu" or not in_range:
                raise ValueError(f"labels y must be {batch} integers in 0..{self.num_classes - 1}, "
                                 f"got {y.dtype} of shape {y.shape}")
        y = self.backend.to_device(y)
        return layers.one_hot(self.xp, y, self._classes, out=buffer(ws, "y.onehot", (batch, self.num_classes), bool))

    def _with_labels(self, a, y_hot, name=None, ws=None):
        """[a, onehot(y)] and its cache for a conditional model; (a, None) for a plain one."""
        if y_hot is None:
            return a, None
        out = buffer(ws, name, (a.shape[0], a.shape[1] + self.num_classes))
        return layers.concat_forward(self.xp, a, y_hot, out=out)

    def _noise(self, batch, eps, rng, ws=None):
        """The given eps, checked, or fresh N(0, I) noise (batch, Z) from `rng` (default: the model's)."""
        if eps is not None:
            eps = self._input(eps)
            if eps.shape != (batch, self.latent_dim):
                raise ValueError(f"eps must have shape {(batch, self.latent_dim)}, got {tuple(eps.shape)}")
            return eps
        out = buffer(ws, "eps", (batch, self.latent_dim))
        if out is None:
            out = self.xp.empty((batch, self.latent_dim), dtype=self.dtype)
        return self.backend.standard_normal(rng if rng is not None else self.rng, out)

    @staticmethod
    def _is_iwae(objective):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
        return objective == "iwae"

    def _iwae_noise(self, batch, eps, rng, samples, ws=None):
        """The given eps, checked to be (K, B, Z), or `samples` fresh draws of (batch, Z) noise."""
        if eps is not None:
            eps = self.backend.to_device(eps, dtype=self.dtype)
            if eps.ndim != 3 or eps.shape[1:] != (batch, self.latent_dim) or eps.shape[0] < 1:
                raise ValueError(f"eps for the IWAE objective must have shape (K, {batch}, {self.latent_dim}), "
                                 f"got {tuple(eps.shape)}")
            return eps
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ValueError(f"samples must be a positive integer, not {samples!r}")
        shape = (int(samples), batch, self.latent_dim)
        out = buffer(ws, "iwae.eps", shape)
        return self.backend.standard_normal(rng if rng is not None else self.rng,
                                            self.xp.empty(shape, dtype=self.dtype) if out is None else out)

    def _repeat_rows(self, y_hot, times, ws=None):
        """(B, C) one-hot rows -> (times * B, C), the whole block repeated; None stays None."""
        if y_hot is None:
            return None
        B, C = y_hot.shape
        out = buffer(ws, "iwae.y.onehot", (times * B, C), bool)
        if out is None:
            out = self.xp.empty((times * B, C), dtype=bool)
        self.xp.copyto(out.reshape(times, B, C), y_hot)
        return out

def init_params(layers, seed):
    """Initial weights as PyTorch's nn.Linear draws them: W and b uniform in +-1/sqrt(fan_in).

    (PyTorch's kaiming_uniform_ with a = sqrt(5) works out to the same bound for W.)
    Drawn in float64 on the host from a seeded generator, in flat-buffer order; returns one flat array.
    """
    rng = np.random.default_rng(seed)
    pieces = []
    for layer in layers:
        for shape in layer.parameters().values():
            bound = 1.0 / math.sqrt(layer.fan_in)
            pieces.append(rng.uniform(-bound, bound, size=math.prod(shape)))
    return np.concatenate(pieces)
