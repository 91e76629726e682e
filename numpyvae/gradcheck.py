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
loss is not differentiable along that direction. The pattern is computed here,
from the parameters, not read from the ReLU layer under test. The table counts
the entries left out ("kinks"); a row with more than MAX_KINK_SHARE of them, or
whose kept entries are all zero, fails, so skipping can never hide a bug.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpyvae.backend import CHECK_DTYPE, get_backend
from numpyvae import layers, losses
from numpyvae.losses import LIKELIHOODS
from numpyvae.vae import VAE

H = 1e-5
TOLERANCE = {np.dtype(np.float64): 1e-6,
             # float32 analytic gradients against float64 finite differences: measured
             # 3e-8..5e-7 on the full model; 1e-5 leaves 20x for other seeds and batches.
             np.dtype(np.float32): 1e-5}
KINK_MARGIN = 1e-2      # the ReLU layer check keeps |x| at least this far from 0
MAX_KINK_SHARE = 0.1    # a row fails if more than this share of its entries straddle a kink


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
                and self.kinks <= MAX_KINK_SHARE * (self.checked + self.kinks)
                and bool(self.max_rel_error < self.tolerance))   # NaN fails


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
    """Rows for Linear (dx, dW, db), ReLU, Sigmoid, Reparameterize, every likelihood and the KL, float64 NumPy."""
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
        total = float(reference.loss(x, eps=eps, beta=beta, y=y, objective=objective)[0])
        return total, relu_pattern(reference, x, eps, y)

    _, base_pattern = loss_and_relu_pattern()
    rng = np.random.default_rng(seed)
    tol = TOLERANCE[np.dtype(model.dtype)]
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
        rows.append(Row(name, param.shape, len(kept), error, tol, kinks=len(idx) - len(kept),
                        all_zero=bool(all_zero)))
    return rows


def relu_pattern(model, x, eps, y=None):
    """Which ReLU inputs are positive, for every layer of the model that declares `kink_at_zero`.

    Read from the inputs that reach each ReLU, not from the ReLU's own output or cache, so a
    broken ReLU cannot hide its own mistakes behind the kink detector. eps (K, B, Z), for the
    IWAE objective, sends all K * B samples through the decoder, each with its image's label.
    """
    signs = []

    def run(layer_list, a):
        for layer in layer_list:
            if getattr(layer, "kink_at_zero", False):
                signs.append((a > 0).ravel())
            a, _ = layer.forward(np, model.params, a)
        return a
    y_hot = model._one_hot(y, x.shape[0])
    h = run(model.encoder, model._with_labels(x, y_hot)[0])                  # (B, H)
    mu, logvar = (head.forward(np, model.params, h)[0] for head in model.heads)
    z = layers.reparameterize_forward(np, mu, logvar, eps)[0]                # ([K,] B, Z)
    K = eps.shape[0] if eps.ndim == 3 else 1
    y_rows = None if y_hot is None else np.tile(y_hot, (K, 1))               # ([K *] B, C)
    run(model.decoder, model._with_labels(z.reshape(-1, model.latent_dim), y_rows)[0])
    return np.concatenate(signs)


def check_batch(model, batch=4, seed=0, samples=None):
    """A reproducible batch for check_model: pixels in [0, 1], eps ~ N(0, I), and labels if conditional.

    samples=K draws eps (K, B, Z), for the IWAE objective."""
    rng = np.random.default_rng(seed)
    eps_shape = (batch, model.latent_dim) if samples is None else (samples, batch, model.latent_dim)
    x, eps = rng.uniform(0, 1, (batch, model.input_dim)), rng.standard_normal(eps_shape)
    if not model.conditional:
        return x, eps
    return x, eps, rng.integers(0, model.num_classes, batch)


def run_checks(full=True, small=True, dtype=CHECK_DTYPE, backend="numpy", entries=20, seed=0):
    """All the checks the `numpyvae gradcheck` command prints: (section title, rows) pairs."""
    backend = get_backend(backend)
    sections = [("layers and losses (float64, NumPy)", check_layers(seed))]
    dtype = np.dtype(dtype)
    for likelihood in LIKELIHOODS:
        if small:
            model = VAE(6, 5, 3, likelihood, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), seed=seed)
            sections.append((f"small 6-5-3 VAE, {likelihood}, every entry ({dtype.name}, {backend.name})", rows))
            model = VAE(6, 5, 3, likelihood, num_classes=4, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), seed=seed)
            sections.append((f"small 6-5-3 conditional VAE (4 classes), {likelihood}, every entry "
                             f"({dtype.name}, {backend.name})", rows))
        if full:
            model = VAE(likelihood=likelihood, backend=backend, dtype=dtype, seed=seed)
            rows = check_model(model, *check_batch(model, seed=seed), entries=entries, seed=seed)
            sections.append((f"784-400-20 VAE, {likelihood}, {entries} sampled entries per tensor "
                             f"({dtype.name}, {backend.name})", rows))
    sections += iwae_checks(full, small, dtype, backend, entries, seed)
    return sections


IWAE_SAMPLES = 3    # K for the IWAE rows: more than one, so the weights are not all 1


def iwae_checks(full=True, small=True, dtype=CHECK_DTYPE, backend="numpy", entries=20, seed=0):
    """(title, rows) for the IWAE objective: every likelihood, plain and conditional, K = IWAE_SAMPLES."""
    sections, K = [], IWAE_SAMPLES
    dtype, backend = np.dtype(dtype), get_backend(backend)
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
    for title, rows in sections:
        lines += ["", title, f"  {'gradient':<24}{'shape':<10}{'checked':>8}{'kinks':>6}  "
                             f"{'max rel error':>13}  {'tolerance':>9}  result"]
        for r in rows:
            shape = "x".join(map(str, r.shape)) or "scalar"
            lines.append(f"  {r.name:<24}{shape:<10}{r.checked:>8}{r.kinks:>6}  {r.max_rel_error:>13.2e}  "
                         f"{r.tolerance:>9.0e}  {'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)
