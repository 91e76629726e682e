"""Finite-difference checks of every hand-written gradient.

The centered difference
    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)
has error O(h^2) from truncation plus O(eps_machine * |f| / h) from rounding, so it
runs in float64 with h = 1e-5 (close to the best step for float64). A correct
gradient then agrees to ~1e-11 on single layers and to 1e-10..5e-8 on the full
model, whose loss is in the thousands so rounding dominates; the 1e-6 tolerance
leaves a margin of 20x or more. A layer with many outputs is checked as a vector-Jacobian product
(as CS231n's eval_numerical_gradient_array does): pick a random upstream gradient
dy and check d(sum(y * dy))/dx, which is exactly what backward(dy) must return.

The tolerance scales with the model. The rounding part of a centred difference's error is
absolute, about eps_machine * |f| / h, so it grows with the loss |f|, and |f| grows with the
pixels, the batch and the depth; relative to a tensor's gradients (their largest |a| + |n|,
`scale`) it is noise / scale. Each row's tolerance is therefore
    max(TOLERANCE[dtype], NOISE_MARGIN * eps_machine * |f| / (h * scale))    (`tolerance`),
at most MAX_TOLERANCE. For the 784-400-20 model (|f| about 2,200 on 4 images) that is the
plain TOLERANCE on almost every row; the conv model's mu.W, whose sampled entries can all be
small, gets a few times more. A wrong formula moves the largest entries by far more than the
cap, and a tensor whose gradients are too small to tell from rounding fails at the cap
rather than passing.

Error measure, per tensor:
    rel_error(a, n) = max|a - n| / max(1e-8, max(|a| + |n|))
relative to the tensor's largest entries. This is looser than CS231n's per-entry
ratio on purpose: finite-difference noise is absolute (about 1e-10 here), so an
entry of 1e-9 would show a huge per-entry ratio even when its gradient is right.
The price: an error confined to entries far smaller than the tensor's largest
ones goes unseen. Every wrong formula we have tried moves the large entries too.

ReLU has a kink at 0 where no finite difference is right. The layer check draws
its inputs away from 0. The whole-model check cannot (a 784-400-20 model has
thousands of ReLU inputs, a few always near 0), so for every perturbed entry it
compares which ReLU inputs are positive at x + h and x - h with the unperturbed
pattern, and leaves out the rare entry whose perturbation flips one: there the
loss is not differentiable along that direction. The pattern is recorded during
one forward pass of the model's own wiring, from the inputs that reach each ReLU,
not from the ReLU layer under test. The table counts the entries left out
("kinks"); a row with more than one of them and more than MAX_KINK_SHARE, or
whose kept entries are all zero, fails, so skipping can never hide a bug.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpyvae.backend import CHECK_DTYPE, get_backend
from numpyvae import layers, losses
from numpyvae.losses import LIKELIHOODS
from numpyvae.network import make_spec
from numpyvae.vae import VAE

H = 1e-5
TOLERANCE = {np.dtype(np.float64): 1e-6,
             # float32 analytic gradients against float64 finite differences: measured
             # 3e-8..5e-7 on the full model; 1e-5 leaves 20x for other seeds and batches.
             np.dtype(np.float32): 1e-5}
NOISE_MARGIN = 10.0     # a row's tolerance is at least this many times its finite-difference rounding noise
MAX_TOLERANCE = 1e-3    # ... but never above this: a gradient lost in rounding noise fails, never passes
KINK_MARGIN = 1e-2      # the ReLU layer check keeps |x| at least this far from 0
MAX_KINK_SHARE = 0.1    # a row fails if more than one entry, and more than this share, straddle a kink


class Row(NamedTuple):
    """One line of the gradient-check table."""
    name: str
    shape: tuple
    checked: int
    max_rel_error: float
    tolerance: float
    kinks: int = 0            # entries left out because their perturbation crossed a ReLU kink
    all_zero: bool = False    # every kept entry was exactly zero in both gradients: nothing was tested

    @property
    def passed(self):
        return (self.checked > 0 and not self.all_zero
                and self.kinks <= max(1, MAX_KINK_SHARE * (self.checked + self.kinks))
                and bool(self.max_rel_error < self.tolerance))   # NaN fails


def tolerance(dtype, loss, scale):
    """A row's tolerance: TOLERANCE[dtype], or NOISE_MARGIN times the rounding noise of the finite
    differences relative to the gradients' scale where that is larger (see the module docstring)."""
    noise = np.finfo(np.float64).eps * abs(loss) / H
    return min(MAX_TOLERANCE, max(TOLERANCE[np.dtype(dtype)], NOISE_MARGIN * noise / max(scale, 1e-300)))


def gradient_scale(analytic, numeric):
    """max(|a| + |n|): what rel_error divides by."""
    return max(1e-8, float(np.max(np.abs(np.asarray(analytic, np.float64)) + np.abs(np.asarray(numeric, np.float64)),
                                  initial=0.0)))


def rel_error(analytic, numeric):
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    scale = max(1e-8, float(np.max(np.abs(analytic) + np.abs(numeric), initial=0.0)))
    return float(np.max(np.abs(analytic - numeric), initial=0.0)) / scale


def numerical_gradient(f, x, indices=None, h=H):
    """Centered differences of the scalar f() with respect to entries of the host array x.

    x is perturbed in place and restored. Returns an array of x's shape holding the
    estimates at `indices` (flat indices; default all) and zeros elsewhere.
    """
    grad = np.zeros(x.shape)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for i in range(x.size) if indices is None else indices:
        old = flat_x[i]
        flat_x[i] = old + h
        f_plus = float(f())
        flat_x[i] = old - h
        f_minus = float(f())
        flat_x[i] = old
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_vjp(f, x, dy, h=H):
    """d(sum(f(x) * dy))/dx by centered differences: what backward(dy) must return."""
    return numerical_gradient(lambda: np.sum(f() * dy), x, h=h)


def _off_kink(rng, shape):
    # |x| uniform in [KINK_MARGIN, 2] with a random sign: a step of H never crosses 0
    magnitude = rng.uniform(KINK_MARGIN, 2.0, size=shape)
    return magnitude * rng.choice([-1.0, 1.0], size=shape)


def check_layers(seed=0, batch=4, fan_in=5, fan_out=3):
    """Rows for Linear (dx, dW, db), ReLU, Sigmoid, Reparameterize, the likelihoods, the KL, the convs; float64 NumPy."""
    rng = np.random.default_rng(seed)
    tol = TOLERANCE[np.dtype(CHECK_DTYPE)]
    rows = []

    def row(name, analytic, numeric):
        rows.append(Row(name, tuple(np.shape(analytic)), int(np.size(analytic)), rel_error(analytic, numeric), tol))

    # Linear: y = x W + b
    x, W, b = rng.standard_normal((batch, fan_in)), rng.standard_normal((fan_in, fan_out)), rng.standard_normal(fan_out)
    dW, db = np.empty_like(W), np.empty_like(b)
    dy = rng.standard_normal((batch, fan_out))
    forward = lambda: layers.linear_forward(np, x, W, b)[0]
    dx = layers.linear_backward(np, dy, layers.linear_forward(np, x, W, b)[1], W, dW, db)
    row("Linear dx", dx, numerical_vjp(forward, x, dy))
    row("Linear dW", dW, numerical_vjp(forward, W, dy))
    row("Linear db", db, numerical_vjp(forward, b, dy))

    # ReLU and Sigmoid: elementwise, checked through their vector-Jacobian products
    for name, (forward_fn, backward_fn), x in (
            ("ReLU dx", (layers.relu_forward, layers.relu_backward), _off_kink(rng, (batch, fan_in))),
            ("Sigmoid dx", (layers.sigmoid_forward, layers.sigmoid_backward), 3 * rng.standard_normal((batch, fan_in)))):
        dy = rng.standard_normal(x.shape)
        _, cache = forward_fn(np, x)
        row(name, backward_fn(np, dy, cache), numerical_vjp(lambda: forward_fn(np, x)[0], x, dy))

    # Reparameterize: z = mu + eps * exp(logvar / 2)
    mu, logvar, eps = (rng.standard_normal((batch, fan_in)) for _ in range(3))
    dz = rng.standard_normal(mu.shape)
    forward = lambda: layers.reparameterize_forward(np, mu, logvar, eps)[0]
    dmu, dlogvar = layers.reparameterize_backward(np, dz, layers.reparameterize_forward(np, mu, logvar, eps)[1])
    row("Reparameterize dmu", dmu, numerical_vjp(forward, mu, dz))
    row("Reparameterize dlogvar", dlogvar, numerical_vjp(forward, logvar, dz))

    # every likelihood in the registry, and the KL: scalar outputs, plain gradients
    logits = 4 * rng.standard_normal((batch, fan_in))
    pixels = rng.uniform(0, 1, (batch, fan_in))
    for likelihood in LIKELIHOODS.values():
        f = lambda: likelihood.forward(np, logits, pixels)[0]
        analytic = likelihood.backward(np, likelihood.forward(np, logits, pixels)[1])
        row(f"{type(likelihood).__name__} dlogits", analytic, numerical_gradient(f, logits))
    f = lambda: losses.gaussian_kl_forward(np, mu, logvar)[0]
    dmu, dlogvar = losses.gaussian_kl_backward(np, losses.gaussian_kl_forward(np, mu, logvar)[1])
    row("GaussianKL dmu", dmu, numerical_gradient(f, mu))
    row("GaussianKL dlogvar", dlogvar, numerical_gradient(f, logvar))
    return rows + check_conv_layers(seed)


def check_conv_layers(seed=0):
    """Rows for Conv2d and ConvTranspose2d (dx, dW, db), float64 NumPy, at stride 2 with padding
    and odd sizes: every kernel offset, the padding and output_padding are exercised."""
    rng = np.random.default_rng(seed)
    tol = TOLERANCE[np.dtype(CHECK_DTYPE)]
    rows = []
    cases = (("Conv2d", layers.conv2d_forward, layers.conv2d_backward, (2, 3, 7, 6), (4, 3, 3, 3), {}),
             ("ConvTranspose2d", layers.conv_transpose2d_forward, layers.conv_transpose2d_backward,
              (2, 4, 4, 3), (4, 3, 3, 3), {"output_padding": 1}))
    for name, forward_fn, backward_fn, x_shape, w_shape, extra in cases:
        x, W = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[0] if forward_fn is layers.conv2d_forward else w_shape[1])
        forward = lambda: forward_fn(np, x, W, b, stride=2, padding=1, **extra)[0]
        y, cache = forward_fn(np, x, W, b, stride=2, padding=1, **extra)
        dy = rng.standard_normal(y.shape)
        dW, db = np.empty_like(W), np.empty_like(b)
        dx = backward_fn(np, dy, cache, W, dW, db)
        for label, analytic, wrt in (("dx", dx, x), ("dW", dW, W), ("db", db, b)):
            rows.append(Row(f"{name} {label}", analytic.shape, analytic.size,
                            rel_error(analytic, numerical_vjp(forward, wrt, dy)), tol))
    return rows


def check_model(model, x, eps, y=None, *, entries=None, beta=1.0, seed=0, objective="elbo"):
    """One row per parameter tensor: analytic gradient of the negative ELBO against finite differences.

    objective="iwae" checks the negative IWAE bound instead, with eps (K, B, Z).

    model: a VAE in any dtype on any backend. Finite differences always run on a
    float64 NumPy copy with the same weights, so a float32 model is checked against
    the exact gradient, with float32's looser tolerance.
    y: integer labels (B,), for a conditional model.
    entries: how many entries of each tensor to check (default: all), chosen at random.
    """
    # the reference sees the same numbers the model sees (rounded to its dtype, then widened)
    x = np.asarray(x, model.dtype).astype(np.float64)
    eps = np.asarray(eps, model.dtype).astype(np.float64)
    reference = VAE(**model.config, backend="numpy", dtype=CHECK_DTYPE)
    reference.flat_params[...] = model.backend.to_host(model.flat_params)
    model.loss_and_grads(model.backend.to_device(x, dtype=model.dtype),
                         eps=model.backend.to_device(eps, dtype=model.dtype), beta=beta, y=y, objective=objective)

    def loss_and_relu_pattern():
        return relu_pattern(reference, x, eps, y, beta, objective)

    base_loss, base_pattern = loss_and_relu_pattern()
    rng = np.random.default_rng(seed)
    rows = []
    for name, param in reference.params.items():
        analytic = model.backend.to_host(model.grads[name]).astype(np.float64).reshape(-1)
        flat = param.reshape(-1)
        if entries is None or entries >= flat.size:
            idx = np.arange(flat.size)
        else:
            idx = rng.choice(flat.size, size=entries, replace=False)
        kept, numeric = [], []
        for i in idx:
            old = flat[i]
            flat[i] = old + H
            f_plus, pattern_plus = loss_and_relu_pattern()
            flat[i] = old - H
            f_minus, pattern_minus = loss_and_relu_pattern()
            flat[i] = old
            if (pattern_plus != base_pattern).any() or (pattern_minus != base_pattern).any():
                continue   # this step crosses a ReLU kink: no derivative to compare with
            kept.append(i)
            numeric.append((f_plus - f_minus) / (2 * H))
        error = rel_error(analytic[kept], numeric) if kept else float("nan")
        all_zero = not np.any(analytic[kept]) and not np.any(numeric)
        tol = tolerance(model.dtype, base_loss, gradient_scale(analytic[kept], numeric))
        rows.append(Row(name, param.shape, len(kept), error, tol, kinks=len(idx) - len(kept),
                        all_zero=bool(all_zero)))
    return rows


def relu_pattern(model, x, eps, y=None, beta=1.0, objective="elbo"):
    """(loss, which ReLU inputs are positive) for every layer of the model that declares `kink_at_zero`.

    One forward pass of the model's own wiring, watching each layer's input as it goes by: read
    from the inputs that reach each ReLU, not from the ReLU's own output or cache, so a broken
    ReLU cannot hide its own mistakes behind the kink detector. With objective="iwae", eps is
    (K, B, Z) and all K * B samples go through the decoder, each with its image's label.
    """
    signs = []

    def watch(layer, a):
        if getattr(layer, "kink_at_zero", False):
            signs.append((a > 0).ravel())
    x = model._input(x)
    y_hot = model._one_hot(y, x.shape[0])
    if objective == "iwae":
        (total, _, _), _ = model._iwae_forward(x, model.backend.to_device(eps, dtype=model.dtype), y_hot, visit=watch)
    else:
        (total, _, _), _ = model._forward(x, model._input(eps), beta, y_hot, visit=watch)
    return float(total), np.concatenate(signs) if signs else np.zeros(0, bool)


def check_batch(model, batch=4, seed=0, samples=None):
    """A reproducible batch for check_model: pixels in [0, 1], eps ~ N(0, I), and labels if conditional.

    samples=K draws eps (K, B, Z), for the IWAE objective."""
    rng = np.random.default_rng(seed)
    eps_shape = (batch, model.latent_dim) if samples is None else (samples, batch, model.latent_dim)
    x, eps = rng.uniform(0, 1, (batch, model.input_dim)), rng.standard_normal(eps_shape)
    if not model.conditional:
        return x, eps
    return x, eps, rng.integers(0, model.num_classes, batch)


class _Sections(list):
    """A list of (title, rows) that tells `progress(title)` of each one as it is added."""

    def __init__(self, progress):
        super().__init__()
        self.progress = progress

    def append(self, section):
        super().append(section)
        if self.progress is not None:
            self.progress(section[0])


def small_settings(settings):
    """A model of the same architecture, depth and likelihood small enough to check at every entry.

    Dense: 6 inputs and widths 5, 4, ...; conv: 7x7 images (each stride-2 convolution rounds up,
    so the transposed ones need output_padding 0 and 1 both) and 2, 3, ... channels; 3 latents, 4 classes.
    """
    spec = make_spec(**settings)
    image = len(spec.input_shape) == 3 and spec.arch != "dense"
    return {**spec.settings(),
            "input_shape": (spec.input_shape[0], 7, 7) if image else (6,),
            "hidden_dims": tuple((2 + i) if image else max(2, 5 - i) for i in range(len(spec.hidden_dims))),
            "latent_dim": 3, "num_classes": min(spec.num_classes, 4)}


def run_checks(full=True, small=True, dtype=CHECK_DTYPE, backend="numpy", entries=20, seed=0, settings=None,
               progress=None):
    """All the checks the `numpyvae gradcheck` command prints: (section title, rows) pairs.

    settings: a model's settings (VAE(**settings)): check that model and a small one like it.
    None: the default 784-400-20 model and a small 6-5-3 one, plain and conditional, for every likelihood.
    progress(title), if given, is called as each section is done.
    """
    backend = get_backend(backend)
    sections = _Sections(progress)
    sections.append(("layers and losses (float64, NumPy)", check_layers(seed)))
    dtype = np.dtype(dtype)
    where = f"({dtype.name}, {backend.name})"
    if settings is not None:
        if small:
            model = VAE(**small_settings(settings), backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), seed=seed)
            sections.append((f"small {model.spec.describe()}, {model.likelihood}, every entry {where}", rows))
        if full:
            model = VAE(**settings, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), entries=entries, seed=seed)
            sections.append((f"{model.spec.describe()}, {model.likelihood}, {entries} sampled entries per tensor "
                             f"{where}", rows))
        for section in iwae_checks(full, small, dtype, backend, entries, seed, settings):
            sections.append(section)
        return sections
    for likelihood in LIKELIHOODS:
        if small:
            model = VAE(6, 5, 3, likelihood, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), seed=seed)
            sections.append((f"small 6-5-3 VAE, {likelihood}, every entry {where}", rows))
            model = VAE(6, 5, 3, likelihood, num_classes=4, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), seed=seed)
            sections.append((f"small 6-5-3 conditional VAE (4 classes), {likelihood}, every entry {where}", rows))
        if full:
            model = VAE(likelihood=likelihood, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), entries=entries, seed=seed)
            sections.append((f"784-400-20 VAE, {likelihood}, {entries} sampled entries per tensor {where}", rows))
    for section in iwae_checks(full, small, dtype, backend, entries, seed):
        sections.append(section)
    return sections


IWAE_SAMPLES = 3    # K for the IWAE rows: more than one, so the weights are not all 1


def iwae_checks(full=True, small=True, dtype=CHECK_DTYPE, backend="numpy", entries=20, seed=0, settings=None):
    """(title, rows) for the IWAE objective: every likelihood, plain and conditional, K = IWAE_SAMPLES.

    settings: a model's settings, as for run_checks: check that model (and a small one like it) instead.
    """
    sections, K = [], IWAE_SAMPLES
    dtype, backend = np.dtype(dtype), get_backend(backend)
    where = f"({dtype.name}, {backend.name})"
    if settings is not None:
        models = [("small ", small_settings(settings), None)] if small else []
        models += [("", settings, entries)] if full else []
        for size, model_settings, checked in models:
            model = VAE(**model_settings, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed, samples=K), entries=checked, seed=seed,
                               objective="iwae")
            sampled = "every entry" if checked is None else f"{entries} sampled entries per tensor"
            sections.append((f"{size}{model.spec.describe()}, IWAE bound K = {K}, {model.likelihood}, {sampled} "
                             f"{where}", rows))
        return sections
    for likelihood in LIKELIHOODS:
        if small:
            for classes in (0, 4):
                model = VAE(6, 5, 3, likelihood, num_classes=classes, backend=backend, dtype=dtype, seed=seed)
                rows = check_model(model, *check_batch(model, seed=seed, samples=K), seed=seed, objective="iwae")
                kind = f"conditional VAE ({classes} classes)" if classes else "VAE"
                sections.append((f"small 6-5-3 {kind}, IWAE bound K = {K}, {likelihood}, every entry "
                                 f"({dtype.name}, {backend.name})", rows))
        if full:
            model = VAE(likelihood=likelihood, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed, samples=K), entries=entries, seed=seed,
                               objective="iwae")
            sections.append((f"784-400-20 VAE, IWAE bound K = {K}, {likelihood}, {entries} sampled entries per "
                             f"tensor ({dtype.name}, {backend.name})", rows))
    return sections


def format_table(sections):
    """The gradient-check table as text, one row per checked tensor."""
    lines = []
    # columns as wide as their longest entry (names like "ContinuousBernoulli dlogits" run long)
    name_width = max([len("gradient")] + [len(r.name) for _, rows in sections for r in rows]) + 2
    shapes = [["x".join(map(str, r.shape)) or "scalar" for r in rows] for _, rows in sections]
    shape_width = max([len("shape")] + [len(shape) for column in shapes for shape in column]) + 2
    for (title, rows), row_shapes in zip(sections, shapes):
        lines += ["", title, f"  {'gradient':<{name_width}}{'shape':<{shape_width}}{'checked':>8}{'kinks':>6}  "
                             f"{'max rel error':>13}  {'tolerance':>9}  result"]
        for r, shape in zip(rows, row_shapes):
            lines.append(f"  {r.name:<{name_width}}{shape:<{shape_width}}{r.checked:>8}{r.kinks:>6}  "
                         f"{r.max_rel_error:>13.2e}  {r.tolerance:>9.0e}  {'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)
