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

The network is a description, a network.ModelSpec (input shape, arch, hidden_dims, latent_dim,
likelihood, num_classes), built into four ordered layer lists (`features`, `encoder`, `heads`,
`decoder`; network.py); the parameter shapes, the forward order and the reverse backward order
all follow from them. The dense model has no features; a conv model's features are its
convolutions, so its labels join after the flatten. The loss is the negative ELBO, summed over the batch,
    loss = reconstruction(x, logits) + beta * KL(N(mu, exp(logvar)) || N(0, I)),
with beta = 1 for the plain VAE and the reconstruction term from losses.LIKELIHOODS.
`loss_and_grads(x, eps=eps, objective="iwae")`, with eps (K, B, Z), trains on the tighter
importance-weighted bound instead: the decoder runs once on all K * B samples, and the bound's
math, forward and backward, is in iwae.py.

Parameters live in ONE flat buffer (`flat_params`) and gradients in another with
the same layout (`flat_grads`); `params` and `grads` are dicts of named views into
them, so the optimizer can update everything in a few passes over flat memory.
Each backward writes its gradients (`out=`), rather than adding into zeroed ones as
llm.c does: NumPy's matmul cannot accumulate into its output, so adding would cost a
temporary and a pass per tensor, and in these networks no layer is used twice. The one
input that fans out, h into the two heads, has its two gradients summed in _backward.

A model is built from its settings, `VAE(**model.config, backend=..., dtype=..., seed=...)`,
and `check_settings` is the one place those settings are validated.

Shapes: B = batch, D = input (pixels), F = features, H = hidden, Z = latent.
"""
from __future__ import annotations

import math

import numpy as np

from numpyvae.backend import TRAIN_DTYPE, get_backend
from numpyvae import iwae, layers, losses
from numpyvae.layers import Workspace, buffer, sequence_backward, sequence_forward
from numpyvae.network import SETTINGS, build_network, make_spec

MODEL_SETTINGS = SETTINGS    # VAE.config: the network, not where or how it runs
OBJECTIVES = ("elbo", "iwae")     # what loss_and_grads trains on: the ELBO, or the K-sample IWAE bound (iwae.py)
# Parameters, gradients and Adam's two moments are each one flat buffer of this many floats:
# 100 million of them take 1.6 GB in float32 before any activation, more than a student's machine has.
MAX_PARAMETERS = 100_000_000


def check_settings(**settings):
    """The network.ModelSpec of these settings (older names too); ValueError naming the first that cannot work."""
    spec = make_spec(**settings)
    count = num_parameters(build_network(spec))
    if count > MAX_PARAMETERS:
        raise ValueError(f"a {spec.describe()} would have {count:,} parameters; numpyvae trains at most "
                         f"{MAX_PARAMETERS:,} (choose smaller hidden_dims or latent_dim)")
    return spec


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
    """A VAE with hand-written backprop, built from a description (network.ModelSpec).

    Args:
        input_dim, hidden_dim: the older way to say input_shape and hidden_dims: D pixels (784 is a
                    1x28x28 image) and one hidden width H, as in VAE(784, 400, 20).
        latent_dim: Z (the seed's 20).
        likelihood: a name in losses.LIKELIHOODS: "bernoulli" (binary cross-entropy from
                    logits, the default), "gaussian" (the seed's squared error) or
                    "continuous-bernoulli" (cross-entropy normalized into a density on [0, 1]).
        num_classes: C > 0 makes a conditional VAE whose every call takes labels y (B,)
                    in 0..C-1; 0 (the default) is the plain VAE.
        input_shape: one image's shape, (1, 28, 28) by default; the model reads each as a row of D numbers.
        arch: "dense" (the default, the seed's model) or "conv" (TensorFlow's CVAE shape); network.ARCHITECTURES.
        hidden_dims: dense: the hidden layers' widths, (400,) by default; conv: the channels, (32, 64).
        backend: a Backend or its name ("numpy", "cupy", "auto", "fakegpu").
        dtype: float32 to train (the default), float64 to check gradients.
        seed: seeds the initial weights (drawn on the host, so every backend starts
              from the same numbers) and the default eps stream.
    """

    def __init__(self, input_dim=None, hidden_dim=None, latent_dim=20, likelihood="bernoulli",
                 num_classes=0, backend="numpy", dtype=TRAIN_DTYPE, seed=0, *, input_shape=None, arch="dense",
                 hidden_dims=None):
        self.spec = check_settings(input_dim=input_dim, hidden_dim=hidden_dim, input_shape=input_shape, arch=arch,
                                   hidden_dims=hidden_dims, latent_dim=latent_dim, likelihood=likelihood,
                                   num_classes=num_classes)
        self.input_shape, self.arch, self.hidden_dims = self.spec.input_shape, self.spec.arch, self.spec.hidden_dims
        self.input_dim, self.latent_dim = self.spec.input_dim, int(latent_dim)
        self.num_classes = int(num_classes)
        self.likelihood = likelihood
        self.recon_term = losses.LIKELIHOODS[likelihood]
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        xp = self.xp = self.backend.xp

        self.network = build_network(self.spec)
        self.features, self.encoder, self.heads, self.decoder = self.network
        self.layers = self.network.layers
        self.shapes = parameter_shapes(self.layers)
        self.num_params = sum(math.prod(s) for s in self.shapes.values())
        self.flat_params = self.backend.to_device(init_params(self.layers, seed), dtype=self.dtype)
        self.flat_grads = xp.zeros(self.num_params, dtype=self.dtype)
        self.params = flat_views(self.flat_params, self.shapes)
        self.grads = flat_views(self.flat_grads, self.shapes)
        self.rng = self.backend.rng(seed)
        self.workspace = Workspace(xp, self.dtype)   # the training step's buffers, reused every step
        self._classes = xp.arange(self.num_classes)  # (C,) for one_hot, made once
        self._pixels_seen = False                    # loss_and_grads scans x's values on its first batch

    @property
    def config(self):
        """The settings that define the network: VAE(**model.config) builds another like it."""
        return self.spec.settings()

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
        ws = self.workspace
        _check_beta(beta)
        # the training step's hot loop scans x's values only on the model's first batch and when x
        # arrives in another dtype or from the host (it is converted then anyway): each scan is a
        # pass over x and, on a GPU, a wait for it. Every other public call scans every time.
        trusted = self._pixels_seen and isinstance(x, self.xp.ndarray) and x.dtype == self.dtype
        x = self._pixels(x, scan=not trusted)
        self._pixels_seen = self._pixels_seen or x.size > 0
        y_hot = self._one_hot(y, x.shape[0], ws)
        if self._is_iwae(objective, beta, samples):
            totals, caches = self._iwae_forward(x, self._iwae_noise(x.shape[0], eps, rng, samples, ws), y_hot, ws)
            self._iwae_backward(caches, ws)
            return totals
        eps = self._noise(x.shape[0], eps, rng, ws)
        totals, caches = self._forward(x, eps, beta, y_hot, ws)
        self._backward(caches, beta, ws)
        return totals

    def loss(self, x, eps=None, beta=1.0, rng=None, y=None, objective="elbo", samples=1):
        """Forward only: (total, recon, kl) summed over the batch, as loss_and_grads returns them.

        x's values are checked every call (pixels in [0, 1]): one min/max pass over x.
        """
        _check_beta(beta)
        x = self._pixels(x)
        y_hot = self._one_hot(y, x.shape[0])
        if self._is_iwae(objective, beta, samples):
            totals, _ = self._iwae_forward(x, self._iwae_noise(x.shape[0], eps, rng, samples), y_hot)
            return totals
        totals, _ = self._forward(x, self._noise(x.shape[0], eps, rng), beta, y_hot)
        return totals

    def _forward(self, x, eps, beta, y_hot=None, ws=None, visit=None):
        xp, p = self.xp, self.params
        mu, logvar, enc_caches = self._encoder_forward(x, y_hot, ws, visit)      # (B, Z) each
        z, z_cache = layers.reparameterize_forward(xp, mu, logvar, eps, std=buffer(ws, "z.std", mu.shape),
                                                   z=buffer(ws, "z", mu.shape))  # (B, Z)
        z_in, z_in_cache = self._with_labels(z, y_hot, "dec.in", ws)             # (B, Z + C)
        logits, dec_caches = sequence_forward(xp, self.decoder, p, z_in, ws, visit)   # (B, D)
        recon, recon_cache = self.recon_term.forward(xp, logits, x, ws)
        kl, kl_cache = losses.gaussian_kl_forward(xp, mu, logvar, ws)
        caches = (enc_caches, z_cache, z_in_cache, dec_caches, recon_cache, kl_cache)
        return (recon + beta * kl, recon, kl), caches

    def _backward(self, caches, beta, ws=None):
        """Backward through _forward's steps in exactly the reverse order; fills self.grads."""
        xp, p, g = self.xp, self.params, self.grads
        enc_caches, z_cache, z_in_cache, dec_caches, recon_cache, kl_cache = caches
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
        self._encoder_backward(dmu, dlogvar, enc_caches, ws)

    def _iwae_forward(self, x, eps, y_hot=None, ws=None, visit=None):
        """The IWAE objective's forward: the encoder, K samples per image, the decoder on all K * B of
        them as one batch, then iwae.forward. eps (K, B, Z). Returns ((total, recon, kl), caches)."""
        xp, p = self.xp, self.params
        K, B, Z = eps.shape
        mu, logvar, enc_caches = self._encoder_forward(x, y_hot, ws, visit)      # (B, Z) each
        z, std = iwae.sample(xp, mu, logvar, eps, ws)                            # (K, B, Z)
        # every sample of image b keeps b's label: row k * B + b of the decoder's batch
        z_in, z_in_cache = self._with_labels(z.reshape(K * B, Z), self._repeat_rows(y_hot, K, ws),
                                             "iwae.dec.in", ws)                  # (K * B, Z + C)
        logits, dec_caches = sequence_forward(xp, self.decoder, p, z_in, ws, visit)   # (K * B, D)
        loss, recon, kl, cache = iwae.forward(xp, mu, logvar, eps, z, std, logits, x, self.recon_term, ws)
        return (loss, recon, kl), (enc_caches, z_in_cache, dec_caches, cache)

    def _iwae_backward(self, caches, ws=None):
        """Backward through _iwae_forward's steps in exactly the reverse order; fills self.grads."""
        xp, p, g = self.xp, self.params, self.grads
        enc_caches, z_in_cache, dec_caches, cache = caches
        dlogits = iwae.backward_logits(xp, cache, self.recon_term, ws)          # (K * B, D), each row weighted
        dz = sequence_backward(xp, self.decoder, p, g, dlogits, dec_caches, ws)  # (K * B, Z + C)
        if z_in_cache is not None:
            dz, _ = layers.concat_backward(xp, dz, z_in_cache)                   # (K * B, Z)
        dmu, dlogvar = iwae.backward_latents(xp, dz, cache, ws)                  # (B, Z) each
        self._encoder_backward(dmu, dlogvar, enc_caches, ws)

    def _encoder_forward(self, x, y_hot, ws=None, visit=None):
        """x (B, D) -> mu, logvar (B, Z) each, and the caches _encoder_backward needs."""
        xp, p = self.xp, self.params
        f, feature_caches = sequence_forward(xp, self.features, p, x, ws, visit)   # (B, F); x itself if dense
        f_in, f_in_cache = self._with_labels(f, y_hot, "enc.in", ws)             # (B, F + C)
        h, enc_caches = sequence_forward(xp, self.encoder, p, f_in, ws, visit)   # (B, H)
        (mu, mu_cache), (logvar, logvar_cache) = (head.forward(xp, p, h, ws) for head in self.heads)  # (B, Z)
        return mu, logvar, (feature_caches, f_in_cache, enc_caches, (mu_cache, logvar_cache))

    def _encoder_backward(self, dmu, dlogvar, caches, ws=None):
        """From dmu, dlogvar (B, Z) back through the heads, the encoder and the features; fills their grads."""
        xp, p, g = self.xp, self.params, self.grads
        feature_caches, f_in_cache, enc_caches, head_caches = caches
        # h feeds both heads: its gradient is the sum of what each head sends back
        mu_head, logvar_head = self.heads
        dh = mu_head.backward(xp, p, g, dmu, head_caches[0], ws)                     # (B, H)
        dh += logvar_head.backward(xp, p, g, dlogvar, head_caches[1], ws)
        # x is data: the first layer to see it computes no dx
        df = sequence_backward(xp, self.encoder, p, g, dh, enc_caches, ws, need_dx=bool(self.features))
        if self.features:
            if f_in_cache is not None:
                df, _ = layers.concat_backward(xp, df, f_in_cache)   # (B, F): the label columns are data
            sequence_backward(xp, self.features, p, g, df, feature_caches, ws, need_dx=False)

    # -- using the model: fresh arrays, any number of rows, nothing kept ----------
    def encode(self, x, y=None):
        """x (B, D) pixels in [0, 1] (and labels y (B,) if conditional) -> (mu, logvar), each (B, Z).

        x's values are checked every call: one min/max pass over x (ValueError for 0-255 pixels).
        """
        x = self._pixels(x)
        f, _ = sequence_forward(self.xp, self.features, self.params, x)             # (B, F)
        f_in, _ = self._with_labels(f, self._one_hot(y, x.shape[0]))
        h, _ = sequence_forward(self.xp, self.encoder, self.params, f_in)
        mu, logvar = (head.forward(self.xp, self.params, h)[0] for head in self.heads)
        return mu, logvar

    def decode_logits(self, z, y=None):
        """z (B, Z) (and labels y (B,) if conditional) -> logits (B, D), before the likelihood's mean.

        z is a latent code, any real numbers: no pixel check applies to it.
        """
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
        return self.decode(self.prior_noise(n, rng), y)

    def prior_noise(self, n, rng=None):
        """z ~ N(0, I), (n, Z) on the backend, from `rng` (default: the model's): the codes sample decodes."""
        return self._noise(n, None, rng)

    # -- helpers ------------------------------------------------------------------
    def _pixels(self, x, scan=True):
        """x (B, D) as the model takes it; TypeError or ValueError for what cannot be pixels.

        The dtype is checked every call, at no cost. The values (finite, in [0, 1]) take a pass over
        x and, on a GPU, a wait for it; scan=False skips them (the training step's hot loop, only).
        Scanning catches the most common mistake: 0-255 pixels not divided by 255.
        """
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        if dtype.kind not in "buif":
            raise TypeError(f"x must hold real numbers, pixels in [0, 1], not {dtype}")
        x = self._input(x)
        if scan and x.size:
            low, high = self.backend.to_host(self.xp.stack([x.min(), x.max()]))
            if not (0 <= low and high <= 1):       # NaN fails both comparisons
                raise ValueError(f"x must be pixels in [0, 1] (divide 0-255 images by 255), but it holds values "
                                 f"from {low} to {high}")
        return x

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
    def _is_iwae(objective, beta=1.0, samples=1):
        """Whether to run the IWAE objective; ValueError for settings that would silently mean nothing."""
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
        if objective == "iwae" and beta != 1:
            raise ValueError(f"the IWAE objective has no KL weight: beta must be 1, not {beta!r}")
        if objective == "elbo" and samples != 1:
            raise ValueError(f"the ELBO takes one sample per image: samples={samples!r} is for objective='iwae'")
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


def _check_beta(beta):
    """ValueError unless beta, the KL weight, is a finite number >= 0."""
    try:
        finite = math.isfinite(beta)
    except (TypeError, OverflowError):       # not a number, or an integer no float holds (10**400)
        finite = False
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not (finite and beta >= 0):
        raise ValueError(f"the KL weight beta must be a finite number >= 0, not {beta!r:.40}")


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
