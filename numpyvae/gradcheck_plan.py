"""What `numpyvae gradcheck` checks, section by section: the plan the command runs and prints.

    for section in plan(settings):         # Section(title, run): nothing is computed until run()
        rows = section.run()               # gradcheck.Row per tensor

The checks themselves are gradcheck.py's. With no settings: every distinct layer of every
registered architecture alone, the losses and the reparameterization, then the small 6-5-3
model (plain and conditional) and the 784-400-20 one for every likelihood, under the ELBO and
the IWAE bound. With a model's settings: its layers alone, a small model of its architecture at
every entry, and the model itself at sampled entries, under the objective asked for.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from numpyvae import gradcheck, layers, losses
from numpyvae.backend import CHECK_DTYPE, get_backend
from numpyvae.gradcheck import Row, check_batch, check_layer, check_model, layer_inputs, rel_error
from numpyvae.network import ARCHITECTURES, ModelSpec, build_network, make_spec
from numpyvae.objectives import DEFAULT as DEFAULT_OBJECTIVE, OBJECTIVES, get_objective
from numpyvae.priors import PRIORS
from numpyvae.vae import VAE

IWAE_SAMPLES = 3     # K for the IWAE rows when no run says otherwise: more than one, so the weights are not all 1
MAX_DRAWS = 20       # weights (or batches) drawn before a small model with no dead ReLU layer is given up on
PRIOR_COMPONENTS = 4  # pseudo-inputs of the checked models with a learned prior: a few, each checked at every entry


class Section(NamedTuple):
    title: str
    run: Callable        # () -> list of gradcheck.Row


def small_settings(settings):
    """A model of the same architecture, depth and likelihood, small enough to check at every entry.

    Built from the architecture's own description: a network with convolutions (a layer with a
    kernel_size) reads 7x7 images (each stride-2 convolution rounds up, so the transposed ones need
    output_padding 0 and 1 both) with 2, 3, ... channels; any other reads 6 numbers, with hidden
    widths 5, 4, ... (or, if its builder needs an image, a 7x7 one). 3 latents, at most 4 classes.
    """
    spec = make_spec(**settings)
    convolutional = any(hasattr(layer, "kernel_size") for layer in build_network(spec).layers)
    depth = range(len(spec.hidden_dims))
    image = (spec.input_shape[0], 7, 7) if len(spec.input_shape) == 3 else (6,)
    small = {**spec.settings(), "latent_dim": 3, "num_classes": min(spec.num_classes, 4)}
    if convolutional:
        return {**small, "input_shape": image, "hidden_dims": tuple(2 + i for i in depth)}
    small["hidden_dims"] = tuple(max(2, 5 - i) for i in depth)
    try:
        build_network(make_spec(**{**small, "input_shape": (6,)}))
        return {**small, "input_shape": (6,)}
    except (ValueError, TypeError):       # a builder that reads images: keep one, small
        return {**small, "input_shape": image}


def distinct_layers(model):
    """(layer, input shape) for each layer of the model unlike any before it (two heads of one shape are one)."""
    seen, pairs = set(), []
    for layer, shape in layer_inputs(model):
        key = (type(layer), shape, tuple(sorted((k, repr(v)) for k, v in vars(layer).items() if k != "name")))
        if key not in seen:
            seen.add(key)
            pairs.append((layer, shape))
    return pairs


def check_layers(models, seed=0):
    """Rows for every distinct layer of `models`, each alone (gradcheck.check_layer), then the pieces
    the layer lists do not hold: Sigmoid, the reparameterization, every likelihood and the KL."""
    rows = []
    for model in models:
        for layer, shape in distinct_layers(model):
            layer_rows = check_layer(layer, shape, seed=seed)
            if len(models) > 1:      # two architectures may both have an "enc": say whose
                layer_rows = [row._replace(layer=f"{row.layer} ({model.arch})") for row in layer_rows]
            rows += layer_rows
    return rows + check_pieces(seed)


def check_pieces(seed=0, batch=4, width=5):
    """Rows for Sigmoid, Reparameterize, every registered likelihood and the Gaussian KL; float64 NumPy."""
    rng = np.random.default_rng(seed)
    tol = gradcheck.TOLERANCE[np.dtype(CHECK_DTYPE)]
    rows = []

    def row(name, analytic, numeric, owner):
        rows.append(Row(name, tuple(np.shape(analytic)), int(np.size(analytic)), rel_error(analytic, numeric), tol,
                        layer=owner))

    x, dy = 3 * rng.standard_normal((batch, width)), rng.standard_normal((batch, width))
    row("dx", layers.sigmoid_backward(np, dy, layers.sigmoid_forward(np, x)[1]),
        gradcheck.numerical_vjp(lambda: layers.sigmoid_forward(np, x)[0], x, dy), "Sigmoid")
    # z = mu + eps * exp(logvar / 2)
    mu, logvar, eps = (rng.standard_normal((batch, width)) for _ in range(3))
    forward = lambda: layers.reparameterize_forward(np, mu, logvar, eps)[0]       # noqa: E731
    dmu, dlogvar = layers.reparameterize_backward(np, dy, layers.reparameterize_forward(np, mu, logvar, eps)[1])
    row("dmu", dmu, gradcheck.numerical_vjp(forward, mu, dy), "Reparameterize")
    row("dlogvar", dlogvar, gradcheck.numerical_vjp(forward, logvar, dy), "Reparameterize")
    # every likelihood in the registry, and the KL: scalar outputs, plain gradients
    logits, pixels = 4 * rng.standard_normal((batch, width)), rng.uniform(0, 1, (batch, width))
    for likelihood in losses.LIKELIHOODS.values():
        f = lambda: likelihood.forward(np, logits, pixels)[0]                     # noqa: E731
        analytic = likelihood.backward(np, likelihood.forward(np, logits, pixels)[1])
        row("dlogits", analytic, gradcheck.numerical_gradient(f, logits), type(likelihood).__name__)
    f = lambda: losses.gaussian_kl_forward(np, mu, logvar)[0]                     # noqa: E731
    dmu, dlogvar = losses.gaussian_kl_backward(np, losses.gaussian_kl_forward(np, mu, logvar)[1])
    row("dmu", dmu, gradcheck.numerical_gradient(f, mu), "GaussianKL")
    row("dlogvar", dlogvar, gradcheck.numerical_gradient(f, logvar), "GaussianKL")
    return rows


class Where(NamedTuple):
    """How the models are checked: on which backend, in which dtype, against which objective."""
    backend: object              # a backend.Backend
    dtype: np.dtype
    objective: str = "elbo"      # or "iwae", the K-sample bound
    samples: int = IWAE_SAMPLES  # K, for the IWAE bound
    beta: float = 1.0            # the KL's weight, for the ELBO


def model_section(title, settings, where, entries=None, seed=0, weights=None, data=None):
    """A Section checking VAE(**settings) every entry (entries=None: a small model, whose weights are
    drawn live, see live_seed) or at `entries` per tensor, at fresh weights or the flat `weights` given,
    on check_batch's uniform pixels or on `data`, (x (4, D) pixels, labels (4,))."""
    def run():
        samples = where.samples if get_objective(where.objective).takes_samples else None
        weights_seed = seed if entries is not None else live_seed(settings, seed, where.objective, samples)
        model = VAE(**settings, backend=where.backend, dtype=where.dtype, seed=weights_seed)
        if weights is not None:
            model.flat_params[...] = where.backend.to_device(np.asarray(weights), dtype=where.dtype)
        for batch_seed in range(seed, seed + MAX_DRAWS):
            batch = check_batch(model, seed=batch_seed, samples=samples)
            if data is not None:      # the run's images (and their labels) for the pixels
                batch = (data[0], batch[1]) + ((data[1],) if model.conditional else ())
            try:
                return check_model(model, *batch, entries=entries, seed=seed, objective=where.objective,
                                   beta=where.beta)
            except gradcheck.KinkDisagreement:    # a float32 model on a kink at this batch: draw another
                if batch_seed == seed + MAX_DRAWS - 1:
                    raise
    return Section(title, run)


def live_seed(settings, seed, objective="elbo", samples=None):
    """The first of seed, seed + 1, ... whose weights leave no ReLU layer of the model dead on the check's batch.

    A small model is a test point, not a trained one, and with a few units per layer a whole layer
    is dead often enough (every input negative: 4 % of draws at three hidden layers of 5, 4 and 3)
    to leave nothing to test before it. Judged from the forward pass alone, so no mistake in a
    backward can choose its own test point; after MAX_DRAWS draws the last is checked as it is
    (and the rows its dead layer silences fail as all zero).
    """
    for weights_seed in range(seed, seed + MAX_DRAWS):
        model = VAE(**settings, dtype=CHECK_DTYPE, seed=weights_seed)
        if not gradcheck.dead_layers(model, *check_batch(model, seed=seed, samples=samples), objective=objective):
            break
    return weights_seed


def plan(settings=None, full=True, small=True, dtype=CHECK_DTYPE, backend="numpy", entries=20, seed=0,
         objectives=None, samples=IWAE_SAMPLES, beta=1.0, trained=None):
    """The sections `numpyvae gradcheck` prints, in order: a list of Section(title, run).

    settings: a model's settings (VAE(**settings)): that model and a small one like it; None: the
    default models for every likelihood. objectives: every registered one by default; a run's own objective, with
    its K (samples) and beta, when checking a run. trained: (flat parameters, what they are, e.g.
    "trained weights (epoch 10)", (x, labels) of a few of the run's images or None): check the
    full-size model at those weights, on those images, instead of fresh weights on noise.
    """
    backend, dtype = get_backend(backend), np.dtype(dtype)
    objectives = tuple(OBJECTIVES) if objectives is None else objectives     # every registered one by default
    device = f"({dtype.name}, {backend.name})"
    # the layers of the model asked for, or of every registered architecture
    layer_owners = [settings] if settings is not None else [make_spec(arch=arch).settings() for arch in ARCHITECTURES]
    sections = [Section("layers and losses (float64, NumPy)", lambda: check_layers(
        [VAE(**small_settings(s), dtype=CHECK_DTYPE, seed=seed) for s in layer_owners], seed))]
    for objective in objectives:
        where = Where(backend, dtype, objective, samples, beta)
        goal = get_objective(objective)      # sections name every objective but the default ELBO
        bound = "" if objective == DEFAULT_OBJECTIVE else f"{goal.title(samples if goal.takes_samples else None)}, "
        if settings is not None:
            spec, small_spec = make_spec(**settings), make_spec(**small_settings(settings))
            if small:
                sections.append(model_section(f"small {small_spec.describe()}, {bound}{spec.likelihood}, every entry "
                                              f"{device}", small_spec.settings(), where, seed=seed))
            if full:
                weights, label, data = None, "", None
                if trained is not None:
                    weights, data = trained[0], trained[2]
                    on = "noise pixels (the run's test images were not found)" if data is None else \
                        f"{len(data[0])} test images"
                    label = f"{trained[1]} on {on}, "
                sections.append(model_section(f"{spec.describe()}, {bound}{label}{spec.likelihood}, {entries} "
                                              f"sampled entries per tensor {device}", settings, where, entries, seed,
                                              weights, data))
            continue
        # every likelihood, and each of its settings beyond the first (the Gaussian's learned and optimal sigma)
        for likelihood, term in losses.LIKELIHOODS.items():
            for sigma in term.sigmas:
                name = likelihood if sigma == term.sigmas[0] else f"{likelihood} ({sigma} sigma)"
                chosen = {"likelihood": likelihood} if sigma == term.sigmas[0] else {"likelihood": likelihood,
                                                                                     "sigma": sigma}
                if small:
                    for classes in (0, 4):
                        kind = f"conditional VAE ({classes} classes)" if classes else "VAE"
                        sections.append(model_section(
                            f"small 6-5-3 {kind}, {bound}{name}, every entry {device}",
                            {"input_dim": 6, "hidden_dim": 5, "latent_dim": 3, "num_classes": classes, **chosen},
                            where, seed=seed))
                if full:
                    sections.append(model_section(f"784-400-20 VAE, {bound}{name}, {entries} sampled entries per "
                                                  f"tensor {device}", chosen, where, entries, seed))
        for prior in PRIORS:            # every other prior, on the default likelihood, dense and conv
            if prior == ModelSpec().prior:
                continue
            components = {"pseudo_inputs": PRIOR_COMPONENTS} if "pseudo_inputs" in PRIORS[prior].settings else {}
            for arch_settings in ({"input_dim": 6, "hidden_dim": 5}, {"arch": "conv", "input_shape": (1, 6, 6),
                                                                       "hidden_dims": (3, 4)}):
                small_prior = {**arch_settings, "latent_dim": 3, "prior": prior, **components}
                if small:
                    sections.append(model_section(f"small {make_spec(**small_prior).describe()}, {bound}bernoulli, "
                                                  f"every entry {device}", small_prior, where, seed=seed))
            if full:
                full_prior = {"prior": prior, **components}
                sections.append(model_section(f"{make_spec(**full_prior).describe()}, {bound}bernoulli, {entries} "
                                              f"sampled entries per tensor {device}", full_prior, where, entries, seed))
    return sections
