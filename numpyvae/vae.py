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
likelihood, num_classes, prior), built into four ordered layer lists (`features`, `encoder`, `heads`,
`decoder`; network.py); the parameter shapes, the forward order and the reverse backward order
all follow from them. The dense model has no features; a conv model's features are its
convolutions, so its labels join after the flatten. What a step minimizes is an objective
(objectives.py): the negative ELBO, summed over the batch,
    loss = reconstruction(x, logits) + beta * KL(q(z|x) || p(z)),
with beta = 1 for the plain VAE, the reconstruction term from losses.LIKELIHOODS and the prior
from priors.PRIORS (N(0, I), or the VampPrior); or, with `objective="iwae"` and eps (K, B, Z),
the tighter importance-weighted bound (iwae.py). This file holds the pieces every objective
wires together: the encoder, the decoder, the labels, the noise, and the parameters.

Parameters live in ONE flat buffer (`flat_params`) and gradients in another with
the same layout (`flat_grads`); `params` and `grads` are dicts of named views into
them, so the optimizer can update everything in a few passes over flat memory. The owners of
parameters are the layers, then the likelihood (a calibrated Gaussian's log sigma), then the
prior (a VampPrior's pseudo-inputs); a model whose likelihood and prior own none has the layers'
layout alone. Backward accumulates (layers.Gradients): the first use of a parameter in a step
writes its gradient, a later use adds, so the encoder run on the images and again on a
VampPrior's pseudo-inputs gets the sum. The one activation that fans out, h into the two heads,
has its two gradients summed where it forks, in encoder_backward.

A model is built from its settings, `VAE(**model.config, backend=..., dtype=..., seed=...)`,
and `check_settings` is the one place those settings are validated.

Shapes: B = batch, D = input (pixels), F = features, H = hidden, Z = latent.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from numpyvae.backend import TRAIN_DTYPE, get_backend
from numpyvae import layers
from numpyvae.layers import Gradients, Workspace, buffer, leaves, sequence_backward, sequence_forward
from numpyvae.losses import make_likelihood
from numpyvae.network import SETTINGS, build_network, make_spec
from numpyvae.objectives import get_objective
from numpyvae.priors import DEFAULT_PSEUDO_INPUTS, make_prior

MODEL_SETTINGS = SETTINGS    # VAE.config: the network, not where or how it runs
# Parameters, gradients and Adam's two moments are each one flat buffer of this many floats:
# 100 million of them take 1.6 GB in float32 before any activation, more than a student's machine has.
MAX_PARAMETERS = 100_000_000


def check_settings(**settings):
    """The network.ModelSpec of these settings (older names too); ValueError naming the first that cannot work."""
    spec = make_spec(**settings)
    prior = make_prior(spec)
    in_prior = num_parameters([[prior]])
    count = num_parameters(build_network(spec)) + num_parameters([[make_likelihood(spec)]]) + in_prior
    if count > MAX_PARAMETERS:
        shrink = (f"the prior holds {in_prior:,} of them: choose a smaller {' or '.join(prior.settings)}"
                  if 2 * in_prior > count and prior.settings else "choose smaller hidden_dims or latent_dim")
        raise ValueError(f"a {spec.describe()} would have {count:,} parameters; numpyvae trains at most "
                         f"{MAX_PARAMETERS:,} ({shrink})")
    return spec


def parameter_shapes(owners):
    """Name -> shape of every parameter of `owners` (layers, a likelihood, a prior), in flat-buffer order."""
    return {name: shape for owner in owners for name, shape in owner.parameters().items()}


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
        sigma:      the Gaussian's: "fixed" (the default, the seed's squared error), "learned" (one
                    shared log sigma, a parameter) or "optimal" (sigma^2 = each batch's mean squared
                    error); the calibrated decoders of the sigma-VAE (losses.CalibratedGaussian).
        num_classes: C > 0 makes a conditional VAE whose every call takes labels y (B,)
                    in 0..C-1; 0 (the default) is the plain VAE.
        input_shape: one image's shape, (1, 28, 28) by default; the model reads each as a row of D numbers.
        arch: "dense" (the default, the seed's model) or "conv" (TensorFlow's CVAE shape); network.ARCHITECTURES.
        hidden_dims: dense: the hidden layers' widths, (400,) by default; conv: the channels, (32, 64).
        prior: a name in priors.PRIORS: "normal" (N(0, I), the default) or "vamp" (the VampPrior, with
                    `pseudo_inputs` learned pseudo-inputs, 500 by default; not for a conditional VAE).
        backend: a Backend or its name ("numpy", "cupy", "auto", "fakegpu").
        dtype: float32 to train (the default), float64 to check gradients.
        seed: seeds the initial weights (drawn on the host, so every backend starts
              from the same numbers) and the default eps stream.
    """

    def __init__(self, input_dim=None, hidden_dim=None, latent_dim=20, likelihood="bernoulli",
                 num_classes=0, backend="numpy", dtype=TRAIN_DTYPE, seed=0, *, input_shape=None, arch="dense",
                 hidden_dims=None, prior="normal", pseudo_inputs=DEFAULT_PSEUDO_INPUTS, sigma="fixed"):
        self.spec = check_settings(input_dim=input_dim, hidden_dim=hidden_dim, input_shape=input_shape, arch=arch,
                                   hidden_dims=hidden_dims, latent_dim=latent_dim, likelihood=likelihood,
                                   num_classes=num_classes, prior=prior, pseudo_inputs=pseudo_inputs, sigma=sigma)
        self.input_shape, self.arch, self.hidden_dims = self.spec.input_shape, self.spec.arch, self.spec.hidden_dims
        self.input_dim, self.latent_dim = self.spec.input_dim, int(latent_dim)
        self.num_classes = int(num_classes)
        self.likelihood = likelihood
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        xp = self.xp = self.backend.xp

        self.network = build_network(self.spec)
        self.features, self.encoder, self.heads, self.decoder = self.network
        self.layers = self.network.layers
        term = make_likelihood(self.spec)            # the reconstruction term, built with its settings (sigma)
        self.prior = make_prior(self.spec)
        self.shapes = parameter_shapes(self.layers + [term, self.prior])
        self.num_params = sum(math.prod(s) for s in self.shapes.values())
        self.flat_params = self.backend.to_device(init_params(self.layers, seed, self.prior, term), dtype=self.dtype)
        self.flat_grads = xp.zeros(self.num_params, dtype=self.dtype)
        self.params = flat_views(self.flat_params, self.shapes)
        self.grads = Gradients(flat_views(self.flat_grads, self.shapes))
        self.recon_term = term.bind(self.params, self.grads)   # reads and writes its parameters there
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

        objective: a name in objectives.OBJECTIVES. "elbo" (the default) trains on the negative
        ELBO, recon + beta * KL, the KL being the prior's (in closed form for N(0, I), else the
        one-sample estimate log q(z|x) - log p(z)). "iwae" trains on the negative IWAE bound with
        K samples per image (iwae.py): eps is then (K, B, Z) (or K = `samples` fresh draws), beta
        plays no part, and total is the negative bound while recon and kl are averaged over the K
        samples (kl as log q - log p).
        """
        ws = self.workspace
        goal = self._objective(objective, beta, samples)
        # the training step's hot loop scans x's values only on the model's first batch and when x
        # arrives in another dtype or from the host (it is converted then anyway): each scan is a
        # pass over x and, on a GPU, a wait for it. Every other public call scans every time.
        trusted = self._pixels_seen and isinstance(x, self.xp.ndarray) and x.dtype == self.dtype
        x = self._pixels(x, scan=not trusted)
        self._pixels_seen = self._pixels_seen or x.size > 0
        y_hot = self._one_hot(y, x.shape[0], ws)
        eps = self._noise(goal, x.shape[0], eps, rng, samples, ws)
        totals, cache = goal.forward(self, x, eps, y_hot, beta, ws)
        self.grads.start_step()
        goal.backward(self, cache, beta, ws)
        return totals

    def loss(self, x, eps=None, beta=1.0, rng=None, y=None, objective="elbo", samples=1):
        """Forward only: (total, recon, kl) summed over the batch, as loss_and_grads returns them.

        x's values are checked every call (pixels in [0, 1]): one min/max pass over x.
        """
        goal = self._objective(objective, beta, samples)
        x = self._pixels(x)
        totals, _ = goal.forward(self, x, self._noise(goal, x.shape[0], eps, rng, samples),
                                 self._one_hot(y, x.shape[0]), beta)
        return totals

    # -- the pieces every objective wires together (objectives.py) ---------------
    def encoder_forward(self, x, y_hot, ws=None, visit=None):
        """x (B, D) -> mu, logvar (B, Z) each, and the caches encoder_backward needs.

        visit(layer, input), if given, sees every layer's input (gradcheck reads the ReLUs')."""
        xp, p = self.xp, self.params
        f, feature_caches = sequence_forward(xp, self.features, p, x, ws, visit)   # (B, F); x itself if dense
        f_in, f_in_cache = self._with_labels(f, y_hot, "enc.in", ws)             # (B, F + C)
        h, enc_caches = sequence_forward(xp, self.encoder, p, f_in, ws, visit)   # (B, H)
        (mu, mu_cache), (logvar, logvar_cache) = (head.forward(xp, p, h, ws) for head in self.heads)  # (B, Z)
        return mu, logvar, (feature_caches, f_in_cache, enc_caches, (mu_cache, logvar_cache))

    def encoder_backward(self, dmu, dlogvar, caches, ws=None, need_dx=False):
        """From dmu, dlogvar (B, Z) back through the heads, the encoder and the features; fills their grads.

        The input is data when it is the images, so no dx is computed (None is returned); need_dx=True
        gives back dx (B, D), for an input that is learned (a VampPrior's pseudo-inputs)."""
        xp, p, g = self.xp, self.params, self.grads
        feature_caches, f_in_cache, enc_caches, head_caches = caches
        # h feeds both heads: its gradient is the sum of what each head sends back
        mu_head, logvar_head = self.heads
        dh = mu_head.backward(xp, p, g, dmu, head_caches[0], ws)                     # (B, H)
        dh += logvar_head.backward(xp, p, g, dlogvar, head_caches[1], ws)
        # x is data: the first layer to see it computes no dx
        df = sequence_backward(xp, self.encoder, p, g, dh, enc_caches, ws, need_dx=bool(self.features) or need_dx)
        if df is not None and f_in_cache is not None:
            df, _ = layers.concat_backward(xp, df, f_in_cache)   # (B, F): the label columns are data
        if self.features:
            df = sequence_backward(xp, self.features, p, g, df, feature_caches, ws, need_dx=need_dx)
        return df

    def decoder_forward(self, z, y_hot, ws=None, visit=None):
        """z (N, Z) (labels y_hot (N, C) if conditional) -> logits (N, D), and the caches decoder_backward needs."""
        z_in, z_in_cache = self._with_labels(z, y_hot, "dec.in", ws)                      # (N, Z + C)
        logits, caches = sequence_forward(self.xp, self.decoder, self.params, z_in, ws, visit)   # (N, D)
        return logits, (z_in_cache, caches)

    def decoder_backward(self, dlogits, caches, ws=None):
        """dlogits (N, D) -> dz (N, Z) through the decoder; fills its grads. The label columns are data."""
        z_in_cache, dec_caches = caches
        dz = sequence_backward(self.xp, self.decoder, self.params, self.grads, dlogits, dec_caches, ws)   # (N, Z + C)
        if z_in_cache is not None:
            dz, _ = layers.concat_backward(self.xp, dz, z_in_cache)      # (N, Z)
        return dz

    # -- using the model: fresh arrays, any number of rows, nothing kept ----------
    def encode(self, x, y=None):
        """x (B, D) pixels in [0, 1] (and labels y (B,) if conditional) -> (mu, logvar), each (B, Z).

        x's values are checked every call: one min/max pass over x (ValueError for 0-255 pixels).
        """
        x = self._pixels(x)
        mu, logvar, _ = self.encoder_forward(x, self._one_hot(y, x.shape[0]))
        return mu, logvar

    def decode_logits(self, z, y=None):
        """z (B, Z) (and labels y (B,) if conditional) -> logits (B, D), before the likelihood's mean.

        z is a latent code, any real numbers: no pixel check applies to it.
        """
        z = self._input(z)
        return self.decoder_forward(z, self._one_hot(y, z.shape[0]))[0]

    def decode(self, z, y=None):
        """z (B, Z) -> the likelihood's mean given z, in [0, 1] (for most, sigmoid(logits)), (B, D)."""
        logits = self.decode_logits(z, y)
        return self.recon_term.mean(self.xp, logits, out=logits)

    def reconstruct(self, x, sample=False, rng=None, y=None):
        """Decode the posterior mean (or, with sample=True, a posterior sample) of each x."""
        mu, logvar = self.encode(x, y)
        if not sample:
            return self.decode(mu, y)
        eps = self.standard_normal(mu.shape, rng)
        return self.decode(layers.reparameterize_forward(self.xp, mu, logvar, eps)[0], y)

    def sample(self, n, rng=None, y=None):
        """n new images from the prior: decode z ~ p(z) (with labels y (n,) if conditional). (n, D)."""
        return self.decode(self.prior_noise(n, rng), y)

    def prior_noise(self, n, rng=None):
        """z ~ p(z), (n, Z) on the backend, from `rng` (default: the model's): the codes sample decodes."""
        return self.prior.sample(self, n, rng)

    def held(self):
        """This model as evaluation scores it, sharing its weights: every parameter read as stored, none
        solved from the batch being scored (an optimal-sigma decoder keeps its last training batch's sigma),
        and what depends on the weights alone computed once (a VampPrior's components)."""
        term, prior = self.recon_term.held(), self.prior.held(self)
        if term is self.recon_term and prior is self.prior:
            return self
        twin = copy.copy(self)
        twin.recon_term, twin.prior = term, prior
        return twin

    def standard_normal(self, shape, rng=None):
        """Fresh N(0, I) noise of `shape` on the backend, from `rng` (default: the model's)."""
        return self.backend.standard_normal(rng if rng is not None else self.rng,
                                            self.xp.empty(shape, dtype=self.dtype))

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

    @staticmethod
    def _objective(name, beta, samples):
        """The objective called `name`, once beta and samples are checked against it."""
        _check_beta(beta)
        objective = get_objective(name)
        objective.check(beta, samples)
        return objective

    def _noise(self, objective, batch, eps, rng, samples, ws=None):
        """The given eps, checked to have the objective's shape, or fresh N(0, I) draws of that shape."""
        if eps is None:
            if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
                raise ValueError(f"samples must be a positive integer, not {samples!r}")
            shape = objective.noise_shape(int(samples), batch, self.latent_dim)
            out = buffer(ws, "eps", shape)
            return self.backend.standard_normal(rng if rng is not None else self.rng,
                                                self.xp.empty(shape, dtype=self.dtype) if out is None else out)
        eps = self.backend.to_device(eps, dtype=self.dtype)
        objective.check_noise(eps, batch, self.latent_dim)
        return eps

    def repeat_rows(self, y_hot, times, ws=None):
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


def init_params(layer_list, seed, prior=None, likelihood=None):
    """Initial weights as PyTorch's nn.Linear draws them: W and b uniform in +-1/sqrt(fan_in).

    (PyTorch's kaiming_uniform_ with a = sqrt(5) works out to the same bound for W.)
    Drawn in float64 on the host from a seeded generator, in flat-buffer order: the layers, the
    likelihood's, the prior's last (priors.py: after the layers, so adding a prior or a likelihood
    with parameters leaves the layers' draws as they were); returns one flat array.
    """
    rng = np.random.default_rng(seed)
    pieces = []
    for layer in leaves(layer_list):            # the layers inside a composite (Residual) draw their own
        for shape in layer.parameters().values():
            bound = 1.0 / math.sqrt(layer.fan_in)
            pieces.append(rng.uniform(-bound, bound, size=math.prod(shape)))
    for owner in (likelihood, prior):
        if owner is not None:
            pieces.append(owner.init(rng))
    return np.concatenate(pieces)
