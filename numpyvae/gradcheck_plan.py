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
from numpyvae.network import ARCHITECTURES, build_network, make_spec
from numpyvae.vae import VAE

IWAE_SAMPLES = 3     # K for the IWAE rows when no run says otherwise: more than one, so the weights are not all 1


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
            rows += check_layer(layer, shape, seed=seed)
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


def model_section(title, make_model, entries, seed, objective="elbo", samples=IWAE_SAMPLES, beta=1.0):
    """A Section checking the model make_model() builds: every entry (entries=None) or that many per tensor."""
    def run():
        model = make_model()
        batch = check_batch(model, seed=seed, samples=samples if objective == "iwae" else None)
        return check_model(model, *batch, entries=entries, seed=seed, objective=objective, beta=beta)
    return Section(title, run)


def plan(settings=None, full=True, small=True, dtype=CHECK_DTYPE, backend="numpy", entries=20, seed=0,
         objectives=None, samples=IWAE_SAMPLES, beta=1.0, trained=None):
    """The sections `numpyvae gradcheck` prints, in order: a list of Section(title, run).

    settings: a model's settings (VAE(**settings)): that model and a small one like it; None: the
    default models for every likelihood. objectives: ("elbo", "iwae") by default; a run's own
    objective, with its K (samples) and beta, when checking a run. trained: (flat parameters,
    what they are, e.g. "trained weights, epoch 10") to check the full-size model at instead of fresh ones.
    """
    backend, dtype = get_backend(backend), np.dtype(dtype)
    objectives = objectives or ("elbo", "iwae")
    where = f"({dtype.name}, {backend.name})"
    build = lambda model_settings, weights=None: lambda: _model(model_settings, backend, dtype, seed, weights)  # noqa
    if settings is None:
        models = [make_spec(arch=arch).settings() for arch in ARCHITECTURES]
    else:
        models = [settings]
    sections = [Section("layers and losses (float64, NumPy)", lambda: check_layers(
        [VAE(**small_settings(s), dtype=CHECK_DTYPE, seed=seed) for s in models], seed))]
    for objective in objectives:
        iwae = objective == "iwae"
        what = f"IWAE bound K = {samples}, " if iwae else ""
        options = {"objective": objective, "samples": samples, "beta": beta}
        if settings is not None:
            spec = make_spec(**settings)
            if small:
                small_spec = make_spec(**small_settings(settings))
                sections.append(model_section(f"small {small_spec.describe()}, {what}{spec.likelihood}, every entry "
                                              f"{where}", build(small_spec.settings()), None, seed, **options))
            if full:
                weights = "" if trained is None else f"{trained[1]}, "
                sections.append(model_section(f"{spec.describe()}, {what}{weights}{spec.likelihood}, {entries} sampled "
                                              f"entries per tensor {where}",
                                              build(settings, None if trained is None else trained[0]),
                                              entries, seed, **options))
            continue
        for likelihood in losses.LIKELIHOODS:
            if small:
                for classes in (0, 4):
                    kind = f"conditional VAE ({classes} classes)" if classes else "VAE"
                    sections.append(model_section(f"small 6-5-3 {kind}, {what}{likelihood}, every entry {where}",
                                                  build({"input_dim": 6, "hidden_dim": 5, "latent_dim": 3,
                                                         "likelihood": likelihood, "num_classes": classes}),
                                                  None, seed, **options))
            if full:
                sections.append(model_section(f"784-400-20 VAE, {what}{likelihood}, {entries} sampled entries per "
                                              f"tensor {where}", build({"likelihood": likelihood}), entries, seed,
                                              **options))
    return sections


def _model(settings, backend, dtype, seed, weights=None):
    model = VAE(**settings, backend=backend, dtype=dtype, seed=seed)
    if weights is not None:
        model.flat_params[...] = backend.to_device(np.asarray(weights), dtype=dtype)
    return model


def run_checks(*args, progress=None, **kwargs):
    """Every section of plan(*args, **kwargs), run: a list of (title, rows); progress(title) after each."""
    done = []
    for section in plan(*args, **kwargs):
        done.append((section.title, section.run()))
        if progress is not None:
            progress(section.title)
    return done
