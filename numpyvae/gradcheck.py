"""Finite-difference checks of hand-written gradients: one layer (`check_layer`), or a whole model (`check_model`).

    rows = check_layer(layer, input_shape)       # dx and every parameter's gradient, as a vector-Jacobian product
    rows = check_model(model, *check_batch(model))   # the whole loss against every parameter tensor
    print(format_table([("my layer", rows)]))    # `row.passed`, and `row.reason` when it did not

The centered difference
    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)
has error O(h^2) from truncation plus about eps_machine |f| / h from rounding, so it runs in
float64 with h = H = 1e-5 (close to the best step for float64). A layer with many outputs is
checked as a vector-Jacobian product, as CS231n's eval_numerical_gradient_array does: pick a
random upstream gradient dy and check d(sum(y * dy))/dx, which is exactly what backward(dy) returns.

Error, per tensor: rel_error(a, n) = max|a - n| / max(1e-8, max(|a| + |n|)), relative to the
tensor's largest entries, because finite-difference noise is absolute: an entry of 1e-9 would
show a huge per-entry ratio even when right. (The price: an error confined to entries far smaller
than the tensor's largest goes unseen; every wrong formula we have tried moves the large ones too.)

Tolerance, per tensor: TOLERANCE[dtype], or NOISE_MARGIN times the rounding noise relative to
the tensor's gradients where that is larger (a large model's loss is in the thousands, and the
noise eps |f| / h grows with it), or, for the IWAE bound, twice the rounding of its importance
weights in the model's dtype (see `tolerance`), but never above MAX_TOLERANCE: a gradient lost
in the noise fails rather than passes.

ReLU has a kink at 0, where no finite difference is right: a step that carries a ReLU input
across 0 differences two linear pieces. A model with tens of thousands of ReLU inputs has some
within H of 0 for almost every bias, so leaving such entries out does not scale (a conv model
lost every entry of mu.b that way). Instead, each entry gets a difference that stays within
one linear piece of every ReLU: which ReLU inputs are positive is recorded at x, and at every
point a difference uses, from one forward pass of the model's own wiring (the inputs that reach
each layer that declares `kink_at_zero`, never the ReLU's own output, so a broken ReLU cannot
hide). For each step h in STEPS (1e-5, 1e-6, 1e-7), largest first:
    x - h, x, x + h all on one piece        the centered difference             (noise eps |f| / h)
    x, x + h, x + 2h on one piece           (-3 f(x) + 4 f(x + h) - f(x + 2h)) / (2 h)   (noise 4 eps |f| / h)
    x - 2h, x - h, x on one piece           the same, mirrored
Both one-sided forms are exact for quadratics, so their truncation error is O(h^2) like the
centered one's. A kink near x lies on one side only, so the one-sided difference away from it
almost always works at h = H already; smaller steps are for kinks on both sides, and the row's
tolerance counts the noise of the smallest step it used. float64 leaves room down to about 1e-7:
at 1e-8 the noise on a loss of 2,000 would be 4e-5 per entry, and the row's tolerance 1,000 times
what it is at H. (The rule this replaces left out every entry whose step crossed a kink and failed
a row that lost more than 10 % of them: `gradcheck --arch conv` failed on correct code at 7 of 10
seeds. Now such an entry is checked on the side away from the kink.)
Only an entry no step keeps on one piece is left out (the "left out" column). A row that
checks fewer than MIN_CHECKED_SHARE of its entries fails and says so, as does a row whose
checked entries are all exactly zero in both gradients (nothing was tested): leaving entries
out never hides a bug.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpyvae.backend import CHECK_DTYPE
from numpyvae.layers import leaves
from numpyvae.objectives import get_objective
from numpyvae.vae import VAE

H = 1e-5
STEPS = (H, 1e-6, 1e-7)     # for an entry near a ReLU kink, largest first (see the module docstring)
TOLERANCE = {np.dtype(np.float64): 1e-6,
             # float32 analytic gradients against float64 finite differences: measured
             # 3e-8..5e-7 on the full model; 1e-5 leaves 20x for other seeds and batches.
             np.dtype(np.float32): 1e-5}
NOISE_MARGIN = 10.0       # a row's tolerance is at least this many times its finite-difference rounding noise
MAX_TOLERANCE = 1e-3      # ... but never above this: a gradient lost in rounding noise fails, never passes
WEIGHTS_MARGIN = 2.0      # an IWAE row's tolerance is at least this many times its weights' rounding (tolerance)
KINK_MARGIN = 1e-2        # a layer checked alone gets inputs at least this far from its kink at 0
MIN_CHECKED_SHARE = 0.9   # a row must compare at least this share of the entries it sampled


class Row(NamedTuple):
    """One line of the gradient-check table: one tensor's gradient."""
    name: str
    shape: tuple
    checked: int              # entries compared
    max_rel_error: float
    tolerance: float
    kinks: int = 0            # entries left out: no step kept them within one linear piece of every ReLU
    all_zero: bool = False    # every checked entry was exactly zero in both gradients: nothing was tested
    layer: str = ""           # the layer the tensor belongs to, "Conv2d enc.conv1"
    problem: str = ""         # a failure found before any comparison (a gradient of the wrong shape)

    @property
    def reason(self):
        """Why the row fails, in a few words; "" when it passes."""
        sampled = self.checked + self.kinks
        if self.problem:
            return self.problem
        if self.checked == 0 or self.checked < MIN_CHECKED_SHARE * sampled:
            return (f"too few entries checked: {self.kinks} of {sampled} cross a ReLU kink at every step "
                    f"down to {STEPS[-1]:.0e}")
        if self.all_zero:
            return "all zero: both gradients are exactly 0 at every entry checked, so nothing was tested"
        if not self.max_rel_error < self.tolerance:     # NaN fails
            return f"error {self.max_rel_error:.1e} above the tolerance {self.tolerance:.0e}"
        return ""

    @property
    def passed(self):
        return not self.reason


def rel_error(analytic, numeric):
    """max|a - n| / max(1e-8, max(|a| + |n|)): the error relative to the tensor's largest entries."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    return float(np.max(np.abs(analytic - numeric), initial=0.0)) / gradient_scale(analytic, numeric)


def gradient_scale(analytic, numeric):
    """max(1e-8, max(|a| + |n|)): what rel_error divides by."""
    return max(1e-8, float(np.max(np.abs(np.asarray(analytic, np.float64)) + np.abs(np.asarray(numeric, np.float64)),
                                  initial=0.0)))


def tolerance(dtype, loss, scale, step=H, log_weight=0.0):
    """A row's tolerance: TOLERANCE[dtype], or NOISE_MARGIN times the finite differences' rounding
    noise, eps |loss| / step, relative to the gradients' scale where that is larger; at most MAX_TOLERANCE.
    step: the smallest effective step the row used (h, or h / 4 for a one-sided difference).
    log_weight: for the IWAE bound, the size of log w (about the loss per image): its importance weights
    are a softmax of log w, which the model rounds to its dtype, moving every weight, and every gradient
    with it, by about eps_dtype |log w| relative (measured in float32: at most 0.46 of that, 40 models)."""
    noise = np.finfo(np.float64).eps * abs(loss) / step
    weights = WEIGHTS_MARGIN * np.finfo(dtype).eps * abs(log_weight)
    return min(MAX_TOLERANCE, max(TOLERANCE[np.dtype(dtype)], NOISE_MARGIN * noise / max(scale, 1e-300), weights))


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


def describe(layer):
    """"Conv2d enc.conv1": the layer's kind and name, for the table and for errors."""
    return f"{type(layer).__name__} {layer.name}"


def check_layer(layer, input_shape, batch=2, seed=0):
    """Rows for one layer object, alone: dx, and the gradient of each parameter it owns, in float64 NumPy.

    layer: anything with the model's layer interface (layers.py): parameters() -> {name: shape},
    forward(xp, params, x) -> (y, cache), backward(xp, params, grads, dy, cache) -> dx, filling grads.
    input_shape: one example's input, without the batch axis. Parameters, x and dy are drawn at
    random; a layer that declares `kink_at_zero` gets inputs at least KINK_MARGIN away from 0.
    Each gradient is checked as a vector-Jacobian product: backward(dy) against d(sum(y * dy)).
    A gradient of the wrong shape fails its row with a reason instead of a NumPy traceback.
    """
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape) for name, shape in layer.parameters().items()}
    grads = {name: np.zeros(shape) for name, shape in layer.parameters().items()}
    x = rng.standard_normal((batch, *input_shape))
    if getattr(layer, "kink_at_zero", False):
        x = np.where(x < 0, -1.0, 1.0) * (KINK_MARGIN + np.abs(x))
    y, cache = layer.forward(np, params, x)
    dy = rng.standard_normal(np.shape(y))
    dx = layer.backward(np, params, grads, dy.copy(), cache)
    forward = lambda: layer.forward(np, params, x)[0]         # noqa: E731 (read by numerical_vjp)
    rows = []
    for name, analytic, wrt in [(f"{layer.name} dx", dx, x)] + [(name, grads[name], params[name]) for name in params]:
        if np.shape(analytic) != wrt.shape:
            problem = (f"{describe(layer)}'s backward returns {name} of shape {tuple(np.shape(analytic))} "
                       f"for {wrt.shape}")
            rows.append(Row(name, wrt.shape, 0, float("nan"), 0.0, layer=describe(layer), problem=problem))
            continue
        numeric = numerical_vjp(forward, wrt, dy)
        rows.append(Row(name, wrt.shape, wrt.size, rel_error(analytic, numeric), TOLERANCE[np.dtype(CHECK_DTYPE)],
                        layer=describe(layer)))
    return rows


class GradientShapeError(ValueError):
    """A layer's backward returned a gradient of the wrong shape."""


class KinkDisagreement(ValueError):
    """A float32 model's forward and its float64 reference disagree on which side of 0 a ReLU input lies.

    An input within float32's rounding of 0 (one in tens of thousands of a conv model's, at some
    batches) can land on either side: the float32 gradient is then exactly right for another linear
    piece than the float64 differences measure, and the rows would fail (by 1e-3 and more) on correct code."""


def layer_inputs(model):
    """(layer, one example's input shape) for every layer of the model, in forward order (vae.py's wiring),
    a composite layer (Residual) followed by the layers inside it, each checked alone too."""
    network, spec, labels = model.network, model.spec, model.num_classes
    pairs = []

    def walk(layer_list, shape):
        for layer in layer_list:
            pairs.append((layer, shape))
            if hasattr(layer, "layers"):
                walk(layer.layers, shape)
            shape = layer.output_shape(shape)
        return shape
    shape = walk(network.features, (spec.input_dim,))
    shape = walk(network.encoder, (shape[0] + labels,))            # [f, onehot(y)]
    pairs += [(head, shape) for head in network.heads]
    walk(network.decoder, (spec.latent_dim + labels,))              # [z, onehot(y)]
    return pairs


def backward_shape_problem(layer, input_shape, batch=2):
    """A one-line message if the layer's backward returns dx of another shape than its input's, else ""."""
    params = {name: np.ones(shape) for name, shape in layer.parameters().items()}
    grads = {name: np.zeros(shape) for name, shape in layer.parameters().items()}
    x = np.full((batch, *input_shape), 0.5)
    y, cache = layer.forward(np, params, x)
    dx = layer.backward(np, params, grads, np.ones(np.shape(y)), cache)
    if np.shape(dx) != x.shape:
        return f"{describe(layer)}'s backward returns dx of shape {tuple(np.shape(dx))} for an input of {x.shape}"
    return ""


def check_model(model, x, eps, y=None, *, entries=None, beta=1.0, seed=0, objective="elbo"):
    """One row per parameter tensor: the model's analytic gradient of its loss against finite differences.

    model: a VAE in any dtype on any backend. The finite differences always run on a float64
    NumPy copy with the same weights, so a float32 model is checked against the exact gradient,
    with float32's looser tolerance (KinkDisagreement if the two forwards put a ReLU input on opposite
    sides of 0 on this batch: check another). x (B, D); eps (B, Z), or (K, B, Z) with objective="iwae"
    (the negative IWAE bound); y: labels (B,) for a conditional model.
    entries: how many entries of each tensor to check (default: all), chosen at random (sample_entries).
    """
    # the reference sees the same numbers the model sees (rounded to its dtype, then widened)
    x = np.asarray(x, model.dtype).astype(np.float64)
    eps = np.asarray(eps, model.dtype).astype(np.float64)
    reference = VAE(**model.config, backend="numpy", dtype=CHECK_DTYPE)
    reference.flat_params[...] = model.backend.to_host(model.flat_params)
    try:
        model.loss_and_grads(model.backend.to_device(x, dtype=model.dtype),
                             eps=model.backend.to_device(eps, dtype=model.dtype), beta=beta, y=y, objective=objective)
    except Exception as error:      # a wrong-shaped gradient fails in the layer before: name the one at fault
        for layer, shape in layer_inputs(model):
            problem = backward_shape_problem(layer, shape)
            if problem:
                raise GradientShapeError(problem) from error
        raise
    owner = {name: describe(layer) for layer in leaves(model.layers) for name in layer.parameters()}
    owner.update({name: type(model.recon_term).__name__ for name in model.recon_term.parameters()})
    owner.update({name: type(model.prior).__name__ for name in model.prior.parameters()})
    loss_and_pattern = lambda: relu_pattern(reference, x, eps, y, beta, objective)   # noqa: E731
    base = loss_and_pattern()
    if model.dtype != CHECK_DTYPE and not np.array_equal(relu_pattern(model, x, eps, y, beta, objective)[1], base[1]):
        raise KinkDisagreement(f"the {model.dtype} forward puts a ReLU input on the other side of 0 from the float64 "
                               f"one, so its gradient is another linear piece's: check it on another batch")
    # an objective over K samples normalizes their weights, rounded at the size of |log w|, about
    # the loss per image (iwae.py): float32's tolerance allows for it
    log_weight = base[0] / x.shape[0] if get_objective(objective).takes_samples else 0.0
    rng = np.random.default_rng(seed)
    rows = []
    held = set(model.recon_term.held_parameters())     # set by a step, not learned: no gradient to check
    for name, param in reference.params.items():
        if name in held:
            continue
        analytic = model.backend.to_host(model.grads[name]).astype(np.float64).reshape(-1)
        flat = param.reshape(-1)
        idx = sample_entries(rng, analytic, entries)
        kept, numeric, step = [], [], H
        for i in idx:
            estimate = one_piece_derivative(loss_and_pattern, flat, i, base)
            if estimate is not None:
                kept.append(i)
                numeric.append(estimate[0])
                step = min(step, estimate[1])
        scale = gradient_scale(analytic[kept], numeric)
        rows.append(Row(name, param.shape, len(kept), rel_error(analytic[kept], numeric) if kept else float("nan"),
                        tolerance(model.dtype, base[0], scale, step, log_weight), kinks=len(idx) - len(kept),
                        all_zero=bool(kept) and not np.any(analytic[kept]) and not np.any(numeric),
                        layer=owner.get(name, "")))
    return rows


def sample_entries(rng, analytic, entries):
    """Flat indices to check: all (entries=None), or `entries` at random, up to half of them among the
    entries whose analytic gradient is not zero. Trained weights leave whole rows of a tensor at zero
    (a dead unit's); sampled uniformly, every entry checked could be one of those and test nothing.
    The other half is uniform, so an analytic gradient that is wrongly zero is still sampled."""
    if entries is None or entries >= analytic.size:
        return np.arange(analytic.size)
    nonzero = np.flatnonzero(analytic)
    some = rng.choice(nonzero, size=min(entries // 2, nonzero.size), replace=False)
    rest = np.setdiff1d(np.arange(analytic.size), some)
    return np.concatenate([some, rng.choice(rest, size=entries - some.size, replace=False)])


def one_piece_derivative(loss_and_pattern, flat, i, base):
    """(d loss / d flat[i], effective step) from a difference whose points all lie on one linear piece of
    every ReLU, trying STEPS largest first (see the module docstring); None if no step does."""
    base_loss, base_pattern = base
    old = flat[i]

    def at(offset):
        flat[i] = old + offset
        loss, pattern = loss_and_pattern()
        return loss, np.array_equal(pattern, base_pattern)
    try:
        for h in STEPS:
            (plus, plus_same), (minus, minus_same) = at(h), at(-h)
            if plus_same and minus_same:
                return (plus - minus) / (2 * h), h
            for side, near, same in ((1, plus, plus_same), (-1, minus, minus_same)):
                if same:
                    far, far_same = at(2 * side * h)
                    if far_same:
                        return side * (4 * near - 3 * base_loss - far) / (2 * h), h / 4
        return None
    finally:
        flat[i] = old


def relu_pattern(model, x, eps, y=None, beta=1.0, objective="elbo"):
    """(loss, which inputs are positive) for every layer of the model that declares `kink_at_zero`.

    One forward pass of the model's own wiring, watching each layer's input as it goes by: read
    from the inputs that reach each ReLU, not from the ReLU's own output or cache, so a broken
    ReLU cannot hide its own mistakes behind the kink detector. With objective="iwae", eps is
    (K, B, Z) and all K * B samples go through the decoder, each with its image's label.
    """
    loss, signs = relu_signs(model, x, eps, y, beta, objective)
    return loss, np.concatenate([positive for _, positive in signs]) if signs else np.zeros(0, bool)


def relu_signs(model, x, eps, y=None, beta=1.0, objective="elbo"):
    """(loss, [(layer, its inputs > 0, flat)]) for each layer that declares `kink_at_zero`, in forward order."""
    signs = []

    def watch(layer, a):
        if getattr(layer, "kink_at_zero", False):
            signs.append((layer, model.backend.to_host(a > 0).ravel()))
    x = model._input(x)
    goal = get_objective(objective)
    eps = model.backend.to_device(eps, dtype=model.dtype)
    (total, _, _), _ = goal.forward(model, x, eps, model._one_hot(y, x.shape[0]), beta, visit=watch)
    return float(total), signs


def dead_layers(model, x, eps, y=None, objective="elbo"):
    """Names of the kink layers none of whose inputs is positive on this batch: they pass nothing back,
    so every gradient before them is exactly zero and its rows would test nothing."""
    return [layer.name for layer, positive in relu_signs(model, x, eps, y, objective=objective)[1]
            if not positive.any()]


def check_batch(model, batch=4, seed=0, samples=None):
    """A reproducible batch for check_model: pixels in [0, 1], eps ~ N(0, I), and labels if conditional.

    samples=K draws eps (K, B, Z), for the IWAE objective."""
    rng = np.random.default_rng(seed)
    eps_shape = (batch, model.latent_dim) if samples is None else (samples, batch, model.latent_dim)
    x, eps = rng.uniform(0, 1, (batch, model.input_dim)), rng.standard_normal(eps_shape)
    if not model.conditional:
        return x, eps
    return x, eps, rng.integers(0, model.num_classes, batch)


def format_table(sections):
    """The gradient-check table as text: a title per section, then one row per checked tensor."""
    rows = [r for _, section_rows in sections for r in section_rows]
    width = {"name": max([len("gradient")] + [len(r.name) for r in rows]) + 2,
             "layer": max([len("layer")] + [len(r.layer) for r in rows]) + 2,
             "shape": max([len("shape")] + [len(_shape(r)) for r in rows]) + 2}
    lines = []
    for title, section_rows in sections:
        lines += ["", title, f"  {'gradient':<{width['name']}}{'layer':<{width['layer']}}{'shape':<{width['shape']}}"
                             f"{'checked':>8}{'left out':>9}  {'max rel error':>13}  {'tolerance':>9}  result"]
        for r in section_rows:
            result = "pass" if r.passed else f"FAIL: {r.reason}"
            lines.append(f"  {r.name:<{width['name']}}{r.layer:<{width['layer']}}{_shape(r):<{width['shape']}}"
                         f"{r.checked:>8}{r.kinks:>9}  {r.max_rel_error:>13.2e}  {r.tolerance:>9.0e}  {result}")
    return "\n".join(lines)


def _shape(row):
    return "x".join(map(str, row.shape)) or "scalar"
