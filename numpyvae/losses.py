"""The two halves of the negative ELBO: the reconstruction term (a likelihood) and the KL term.

A likelihood p(x | logits) is one class here and one line in LIKELIHOODS; everything else
(the model, evaluation, the CLI's choices, the gradient-check rows) reads the registry.
Each likelihood knows:

    forward_rows(xp, logits, x, ws) -> (losses, cache)   -log p(x | logits) summed over pixels, one
                                per row: logits (..., D) against x (..., D) broadcast to them, e.g.
                                (K, B, D) against (B, D) for the IWAE bound (iwae.py). The one place
                                a likelihood's formula is written: the two below follow from it.
    backward(xp, cache, ws)     -> dlogits          d loss / d logits, the same shape as the logits
    forward(xp, logits, x, ws)  -> (loss, cache)   the rows summed: the batch's loss (the base class)
    log_prob(xp, x, logits)     -> minus the rows: log p(x | logits) (the base class)
    backward_rows(xp, cache, drows, ws) -> dlogits of sum_r drows_r * loss_r: each row's gradient
                                scaled, as the IWAE bound weighs its samples (the base class: backward,
                                scaled; a likelihood with parameters weighs their gradients too)
    mean(xp, logits)            -> E[x | logits]: what the decoder's pictures show
    normalized                  True when p(x | logits) is a density over pixels in [0, 1], so the
                                negative ELBO is an upper bound on -log p(x) (is_density(binary)
                                also counts a probability mass over binarized pixels)

forward/backward are a pair like the layers' (layers.py): no state, the cache is returned,
and buffers come from the workspace `ws` when one is given (training) or are allocated.
Losses are summed over the batch; divide by the batch size for the per-image numbers.

A likelihood may own parameters, like a layer or a prior: `parameters()` names them, `init(rng)`
gives their first values, and the model lays them out in its flat buffer between the layers
and the prior. A model builds its own likelihood from its settings (`make_likelihood(spec)`,
e.g. the Gaussian's sigma), and one with parameters is `bind`-ed to the model's parameter and
gradient views: it reads the first and writes the second (with layers.gradients_into), so its
forward/backward keep the signatures above. The registry's entries own none and are shared.

Shapes: B = batch, D = pixels, Z = latent.
"""
from __future__ import annotations

import copy
import functools
import math
from typing import NamedTuple

import numpy as np

from numpyvae.layers import buffer, gradients_into, sigmoid


def is_cupy(xp):
    """True when `xp` is the cupy module: there, fused kernels replace some chains of ufuncs."""
    return getattr(xp, "__name__", None) == "cupy"


def softplus(xp, logits, out=None, work=None):
    """softplus(l) = log(1 + exp(l)), computed as max(l, 0) + log1p(exp(-|l|)) so it never overflows."""
    work = xp.abs(logits, out=work)
    xp.negative(work, out=work)
    xp.exp(work, out=work)                # exp(-|l|) <= 1 always
    xp.log1p(work, out=work)
    out = xp.maximum(logits, 0, out=out)
    out += work
    return out


class Likelihood:
    """The interface every reconstruction term implements (see the module docstring)."""
    name = ""              # the key in LIKELIHOODS and the value of --likelihood
    description = ""       # one line for --help and the README
    normalized = False     # is p(x | logits) a density over pixels in [0, 1] (it integrates to 1)?
    sigmas = ("fixed",)    # the --sigma settings it takes (only the Gaussian has a sigma to choose)

    def build(self, spec):
        """The likelihood a model with these settings (a network.ModelSpec) uses: this one, unless a
        setting (the Gaussian's sigma) makes another."""
        return self

    def parameters(self):
        """Name -> shape of what it learns or keeps ({} for most)."""
        return {}

    def init(self, rng):
        """The parameters' initial values, flat, in parameters()' order (rng: the model's init draws)."""
        return np.zeros(0)

    def held_parameters(self):
        """The names among parameters() that no gradient moves: values a step sets, kept for evaluation."""
        return ()

    def bind(self, params, grads):
        """The likelihood reading its parameters from `params` and writing their gradients into `grads`
        (the model's named views): a copy of this one if it owns any, this one itself otherwise."""
        if not self.parameters():
            return self
        bound = copy.copy(self)
        bound.params, bound.grads = params, grads
        return bound

    def held(self):
        """The likelihood evaluation and generation use: every parameter read as stored, nothing solved
        from the batch being scored (an optimal-sigma Gaussian keeps its last training batch's sigma)."""
        return self

    def backward_rows(self, xp, cache, drows=None, ws=None):
        """d (sum_r drows_r * loss_r) / d logits, drows (...,) the upstream gradient of each row's loss
        (the IWAE bound's normalized weights; None: every row 1, the batch sum's gradient)."""
        dlogits = self.backward(xp, cache, ws)
        if drows is not None:
            dlogits *= drows[..., None]
        return dlogits

    def forward_rows(self, xp, logits, x, ws=None):
        """(losses (...,), cache): -log p(x | logits) of each row, logits (..., D) against x broadcast."""
        raise NotImplementedError

    def backward(self, xp, cache, ws=None):
        raise NotImplementedError

    def forward(self, xp, logits, x, ws=None):
        """(-log p(x | logits) summed over the batch and pixels, cache): the rows' losses, summed."""
        rows, cache = self.forward_rows(xp, logits, x, ws)
        return rows.sum(), cache

    def log_prob(self, xp, x, logits):
        """log p(x | logits) summed over pixels, for any leading axes: minus forward_rows' losses."""
        return -self.forward_rows(xp, logits, x)[0]

    def is_density(self, binary):
        """True when p(x | logits) sums or integrates to 1 over the values the pixels can take, so
        the negative ELBO and the IWAE bound are upper bounds on -log p(x). binary: pixels are 0 or 1."""
        return self.normalized

    def mean(self, xp, logits, out=None):
        """The pixel means in [0, 1]: the sigmoid of the logits, unless a likelihood says otherwise."""
        return sigmoid(xp, logits, out=out)


class BernoulliCache(NamedTuple):
    p: object          # (B, D) sigmoid(logits)
    x: object          # (B, D)


class Bernoulli(Likelihood):
    """-log p(x | logits) for pixels x in [0, 1] under independent Bernoullis, from logits.

    With p = sigmoid(l), binary cross-entropy per pixel is
        -[x log p + (1 - x) log(1 - p)] = softplus(l) - x * l,
    using log p = -softplus(-l), log(1 - p) = -softplus(l) and softplus(-l) = softplus(l) - l.
    The gradient is the famous clean one:
        d/dl [softplus(l) - x l] = sigmoid(l) - x.
    Forward computes t = tanh(l / 2) once and gets both from it: sigmoid(l) = (1 + t) / 2 (see
    layers.sigmoid), kept for backward, and, since sigmoid(|l|) = (1 + |t|) / 2,
        softplus(l) = max(l, 0) - log sigmoid(|l|) = max(l, 0) + log 2 - log1p(|t|),
    two transcendental functions per pixel where exp, log1p and a later tanh made three.
    (|t| rounds to 1 for |l| > 17 in float32, losing the log1p(exp(-|l|)) < 1e-7 it stands
    for: an absolute error far below the loss's own rounding.)
    For x in {0, 1} this is a probability mass, and the negative ELBO bounds -log p(x).
    For grey pixels it is not a density on [0, 1] (it does not integrate to 1 over x), so
    its numbers are not log-likelihoods of grey images: a known abuse, kept because it
    trains well and is what the seed and every peer report.
    """
    name = "bernoulli"
    description = "binary cross-entropy from logits (a true likelihood only for binarized pixels)"
    normalized = False

    def is_density(self, binary):
        return binary                     # a probability mass over {0, 1}^D

    def forward_rows(self, xp, logits, x, ws=None):                  # (..., D), (..., D) -> (...)
        t = xp.multiply(logits, 0.5, out=buffer(ws, "bernoulli.t", logits.shape))
        xp.tanh(t, out=t)
        p = xp.add(t, 1, out=buffer(ws, "bernoulli.p", logits.shape))
        p *= 0.5                                                     # sigmoid(l), for backward
        xp.abs(t, out=t)
        xp.log1p(t, out=t)                                           # log 2 + log sigmoid(|l|)
        terms = xp.maximum(logits, 0, out=buffer(ws, "bernoulli.relu", logits.shape))
        terms -= t
        terms -= xp.multiply(x, logits, out=t)                       # max(l, 0) - log1p(|t|) - x l
        rows = terms.sum(axis=-1, out=buffer(ws, "bernoulli.rows", logits.shape[:-1]))
        rows += logits.shape[-1] * math.log(2)                       # + D log 2: softplus(l) - x l, per row
        return rows, BernoulliCache(p, x)

    def backward(self, xp, cache, ws=None):
        return xp.subtract(cache.p, cache.x, out=buffer(ws, "bernoulli.dlogits", cache.p.shape))   # sigmoid(l) - x


class GaussianCache(NamedTuple):
    p: object          # (B, D) sigmoid(logits)
    error: object      # (B, D) p - x


class Gaussian(Likelihood):
    """The seed blog post's reconstruction term: sum of squared errors of sigmoid(logits) against x.

    This is -log N(x | p, variance 1/2) less the constant (D/2) log(pi) per image, with p = sigmoid(l):
        loss = sum (p - x)^2,   dloss/dl = 2 (p - x) * p (1 - p)   (chain rule through the sigmoid).
    Without that constant it is no normalized density, so its bounds are not on -log p(x).
    This is sigma "fixed"; "learned" and "optimal" build the calibrated decoders below (build).
    """
    name = "gaussian"
    description = ("a Gaussian on sigmoid outputs: with --sigma fixed (the default) the seed's sum of squared "
                   "errors (no normalizing constant); --sigma learned or optimal calibrates it")
    normalized = False
    sigmas = ("fixed", "learned", "optimal")

    def build(self, spec):
        return self if spec.sigma == "fixed" else CALIBRATED[spec.sigma]()

    def forward_rows(self, xp, logits, x, ws=None):                  # (..., D), (..., D) -> (...)
        p = sigmoid(xp, logits, out=buffer(ws, "gaussian.p", logits.shape))
        error = xp.subtract(p, x, out=buffer(ws, "gaussian.error", logits.shape))   # p - x
        squares = xp.multiply(error, error, out=buffer(ws, "gaussian.squares", logits.shape))
        return squares.sum(axis=-1, out=buffer(ws, "gaussian.rows", logits.shape[:-1])), GaussianCache(p, error)

    def backward(self, xp, cache, ws=None):
        dlogits = buffer(ws, "gaussian.dlogits", cache.p.shape)
        if is_cupy(xp):
            return _fused_gaussian_grad(xp)(cache.p, cache.error, dlogits)
        return self.plain_backward(xp, cache, dlogits)

    def plain_backward(self, xp, cache, dlogits=None):
        p = cache.p
        dlogits = xp.subtract(1, p, out=dlogits)                     # 1 - p
        dlogits *= p                                                 # p (1 - p)
        dlogits *= cache.error
        dlogits *= 2                                                 # 2 (p - x) p (1 - p)
        return dlogits


@functools.cache
def _fused_gaussian_grad(cupy):
    """CuPy only: Gaussian.backward as one kernel (the plain code makes four passes over (B, D))."""
    return cupy.ElementwiseKernel(
        "T p, T error", "T dlogits",
        "dlogits = 2 * error * p * (1 - p)",
        "numpyvae_gaussian_grad")


# -- the calibrated Gaussian decoder: sigma learned, or solved for ---------------------------------

LOG_2PI = math.log(2 * math.pi)


class CalibratedGaussianCache(NamedTuple):
    p: object          # (..., D) sigmoid(logits)
    error: object      # (..., D) p - x
    squares: object    # (...,) s_r: each row's sum of squared errors
    u: object          # (1,) log sigma before the floor
    inv_var: object    # (1,) 1 / sigma^2
    total: object      # () S = sum_r s_r (floored at the smallest normal float), which the optimal sigma reads


class CalibratedGaussian(Likelihood):
    """-log N(x; p, sigma^2) per pixel, constant included, p = sigmoid(l), one sigma for every pixel:
    the learned sigma (--sigma learned).

    Rybkin, Daniilidis & Levine 2021, "Simple and Effective VAE Training with Calibrated Decoders"
    (the sigma-VAE; their code: orybkin/sigma-vae-pytorch). Per row r (an image, or one IWAE sample of
    it), with e = p - x and s_r = sum_d e_rd^2 over its D pixels:
        loss_r = s_r / (2 sigma^2) + D log sigma + (D/2) log(2 pi).
    log sigma is kept softly above -6, as the reference code does ("learning the variance can become
    unstable"): from u, the value before the floor,
        log sigma = c(u) = -6 + softplus(u + 6),     c'(u) = sigmoid(u + 6),
    which is u far above -6 (u + 0.0025 at u = 0; u + 0.025 at u = -2.3, a mean squared error of 0.01).

    The gradient, of sum_r w_r loss_r (w_r = 1 for the ELBO; for the IWAE bound, the normalized
    importance weights, backward_rows' drows):
        d/dl_rd      = w_r e_rd / sigma^2 * p_rd (1 - p_rd)      (d loss_r/dp = e/sigma^2, then the sigmoid)
        d/dlog sigma = G = sum_r w_r (D - s_r / sigma^2)        (d loss_r/dlog sigma: 1/sigma^2 = e^(-2 log sigma))
    Here u is the parameter `likelihood.log_sigma`, shape (1,), and d/du = G c'(u).
    It starts at u = 0, sigma = 1 (plus the floor's 0.25%), as the reference code does: a sigma above
    every pixel's error, so reconstruction weighs little at first and sigma falls as the decoder learns.

    A density over the reals, not over [0, 1]: part of each pixel's mass lies outside [0, 1], so it is
    no likelihood of grey images (`normalized` False). Its bounds are still upper bounds on -log p(x)
    of the same decoder truncated to [0, 1]^D and renormalized (dividing by a mass <= 1 only raises
    p(x | z)), a looser bound than that model's own: numbers to compare between Gaussian runs, not
    with the continuous Bernoulli's.
    """
    name = "gaussian"
    description = "the calibrated Gaussian: -log N(x; sigmoid(logits), sigma^2) with one shared sigma"
    normalized = False
    PARAM = "likelihood.log_sigma"
    MIN_LOG_SIGMA = -6.0       # the reference code's soft floor on log sigma

    def parameters(self):
        return {self.PARAM: (1,)}

    def init(self, rng):
        return np.zeros(1)

    def log_sigma_before_floor(self, xp, squares, D, ws=None):
        """(u (1,), S or None): the learned parameter (S is the optimal sigma's, below)."""
        return self.params[self.PARAM], None

    def sigma(self, xp):
        """sigma as the model holds it now, a (1,) array: what evaluation and the figures report."""
        return xp.exp(self._floor(xp, self.params[self.PARAM]))

    def _floor(self, xp, u):
        """c(u) = MIN + softplus(u - MIN): log sigma, softly above MIN_LOG_SIGMA."""
        return softplus(xp, u - self.MIN_LOG_SIGMA) + self.MIN_LOG_SIGMA

    def forward_rows(self, xp, logits, x, ws=None):                  # (..., D), (..., D) -> (...)
        D = logits.shape[-1]
        p = sigmoid(xp, logits, out=buffer(ws, "calibrated.p", logits.shape))
        error = xp.subtract(p, x, out=buffer(ws, "calibrated.error", logits.shape))       # e = p - x
        work = xp.multiply(error, error, out=buffer(ws, "calibrated.work", logits.shape))
        squares = work.sum(axis=-1, out=buffer(ws, "calibrated.squares", logits.shape[:-1]))   # s_r
        u, total = self.log_sigma_before_floor(xp, squares, D, ws)                        # (1,)
        log_sigma = self._floor(xp, u)
        inv_var = xp.exp(-2 * log_sigma)                                                   # 1 / sigma^2
        rows = xp.multiply(squares, 0.5 * inv_var, out=buffer(ws, "calibrated.rows", squares.shape))
        rows += D * (log_sigma + 0.5 * LOG_2PI)                      # s_r / (2 sigma^2) + D log sigma + D/2 log 2 pi
        return rows, CalibratedGaussianCache(p, error, squares, u, inv_var, total)

    def backward(self, xp, cache, ws=None):
        return self.backward_rows(xp, cache, None, ws)

    def backward_rows(self, xp, cache, drows=None, ws=None):
        c = cache
        D = c.p.shape[-1]
        # G = sum_r w_r (D - s_r / sigma^2) = D sum_r w_r - (sum_r w_r s_r) / sigma^2
        if drows is None:
            G = D * c.squares.size - c.inv_var * c.squares.sum()
            coef = buffer(ws, "calibrated.coef", c.squares.shape)
            coef = xp.empty_like(c.squares) if coef is None else coef
            coef[...] = c.inv_var                                                          # 1 / sigma^2
        else:
            G = D * drows.sum() - c.inv_var * (drows * c.squares).sum()
            coef = xp.multiply(drows, c.inv_var, out=buffer(ws, "calibrated.coef", c.squares.shape))   # w_r / sigma^2
        dlog_sigma_du = sigmoid(xp, c.u - self.MIN_LOG_SIGMA)                              # c'(u)
        self._through_sigma(xp, coef, G * dlog_sigma_du, c, ws)
        dlogits = xp.subtract(1, c.p, out=buffer(ws, "calibrated.dlogits", c.p.shape))   # 1 - p
        dlogits *= c.p
        dlogits *= c.error
        dlogits *= coef[..., None]                                   # coef_r e p (1 - p)
        return dlogits

    def _through_sigma(self, xp, coef, du, cache, ws=None):
        """Where d loss / du goes: into the parameter's gradient (the optimal sigma: into the errors)."""
        with gradients_into(xp, self.grads, (self.PARAM,), ws) as (g,):
            g[...] = du


class OptimalSigmaGaussian(CalibratedGaussian):
    """The calibrated Gaussian with sigma solved for on each batch (--sigma optimal): sigma^2 = the MSE.

    For fixed decoder outputs, sum_r loss_r is smallest where its derivative in log sigma vanishes,
    sum_r (D - s_r / sigma^2) = 0, at
        sigma^2 = S / (N D),    S = sum_r s_r over the N rows,
    the batch's mean squared error per pixel (over all K samples of the IWAE bound). So
    u = log(S / (N D)) / 2, then floored as for the learned sigma. The reference code computes it so,
    and does not detach it: the gradient flows through sigma.

    The gradient. sigma now moves with every error through S. Besides each row's own term, s_r reaches
    the loss through u: d loss/ds_r gains G * c'(u) * du/dS = G c'(u) / (2 S), and ds_r/dp_rd = 2 e_rd:
        d/dl_rd = (w_r / sigma^2 + G c'(u) / S) e_rd p_rd (1 - p_rd).
    ELBO (w_r = 1), without the floor (c(u) = u): G = N D - S / sigma^2 = N D - N D = 0. sigma sits
    where the loss is flat in sigma, so sigma moving with the logits changes the loss by nothing to
    first order (the envelope theorem): the gradient is the one with sigma held at its value. The floor
    moves sigma a little off the optimum, leaving the small G this computes exactly.
    IWAE (w_r the normalized weights, sum_k w_kb = 1, N = K B): G = D sum_r w_r - sum_r w_r s_r / sigma^2
    = N D (1/K - sum_r w_r s_r / S), NOT zero: the bound weighs its rows unevenly, and the rows it weighs
    need not have the batch's mean error. The term stays, and both objectives run this same code.

    sigma is no learned parameter: `likelihood.log_sigma` holds the last training step's u, written by
    backward (which only a training step runs), with a zero gradient, so Adam leaves it exactly as
    written and checkpoints carry it bit for bit. Evaluation and generation read it (held()): a test
    batch is scored with the sigma training ended with, never with one solved from itself.
    """
    description = "the calibrated Gaussian with sigma^2 solved per batch: the batch's mean squared error"

    def held_parameters(self):
        return (self.PARAM,)

    def held(self):
        return CalibratedGaussian().bind(self.params, self.grads)

    def log_sigma_before_floor(self, xp, squares, D, ws=None):
        """u = log(S / (N D)) / 2, with S floored at the smallest normal float: a batch decoded perfectly
        gets the floor's sigma, not log 0."""
        total = xp.maximum(squares.sum(), np.finfo(squares.dtype).tiny)                  # S
        u = xp.log(total / (squares.size * D)).reshape(1)
        u *= 0.5
        return u, total

    def _through_sigma(self, xp, coef, du, cache, ws=None):
        coef += du / cache.total                                     # + G c'(u) / S
        with gradients_into(xp, self.grads, (self.PARAM,), ws) as (g,):
            g[...] = 0                                               # held, not learned
        self.params[self.PARAM][...] = cache.u                       # the sigma evaluation will use


CALIBRATED = {"learned": CalibratedGaussian, "optimal": OptimalSigmaGaussian}   # Gaussian.build's sigmas


# -- the continuous Bernoulli's normalizer, log C(l), and its derivative --------------------------

# d/dl log C(l) = 1/l - 1/sinh(l) has the Taylor series (from 1/sinh's, whose coefficients are
# Bernoulli numbers B_2n: 1/sinh(l) = 1/l - sum_n 2 (2^(2n-1) - 1) B_2n l^(2n-1) / (2n)!)
#     1/l - 1/sinh(l) = l/6 - 7 l^3/360 + 31 l^5/15120 - 127 l^7/604800 + ...
# Here are its first eight coefficients, of l, l^3, ..., l^15.
DLOG_C_SERIES = (1 / 6, -7 / 360, 31 / 15120, -127 / 604800, 73 / 3421440, -1414477 / 653837184000,
                 8191 / 37362124800, -16931177 / 762187345920000)
# log C(l) = log 2 + the integral from 0 to l of that series, term by term: l^(2n-1) -> l^(2n) / (2n),
#     log C(l) = log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720 - 127 l^8/4838400 + ...
LOG_C_SERIES = tuple(c / (2 * n) for n, c in enumerate(DLOG_C_SERIES, start=1))   # of l^2, l^4, ..., l^16
LOG_2 = 0.6931471805599453
# Where the series takes over from the closed forms. 1/l - 1/sinh(l) subtracts two numbers near 1/l to
# get one near l/6, losing digits as 1/l^2 does (relative error about 12 eps / l^2); the series' first
# left-out term grows as l^16. At |l| = 0.4 the two errors meet: both branches agree with the exact
# value to 1.6e-14 relative, 1.1e-15 absolute (measured against 50-digit mpmath, float64).
SERIES_BELOW = 0.4


def _polynomial(xp, y, coefficients, out=None):
    """c[0] + c[1] y + c[2] y^2 + ... by Horner's rule: (((c[K] y + c[K-1]) y + ...) y + c[0])."""
    out = xp.multiply(y, coefficients[-1], out=out)
    for c in coefficients[-2:0:-1]:
        out += c
        out *= y
    out += coefficients[0]
    return out


def log_normalizer(xp, logits, out=None, work=None, series=None, small=None):
    """log C(l) = log(l / tanh(l / 2)) elementwise, for every logit (see ContinuousBernoulli).

    Both branches run on every entry (there is no cheap "if" per element), each on a copy of l
    clamped to where it is accurate, and `small` picks: no 0/0 at l = 0, no overflow at l = 1e4.
        |l| >= SERIES_BELOW:  log|l| - log tanh(|l| / 2)   (tanh saturates at 1 quietly: log 1 = 0)
        |l| <  SERIES_BELOW:  log 2 + l^2/12 - 7 l^4/1440 + ...
    out, work, series: buffers of logits' shape (None: allocate); small: a bool buffer.
    """
    a = xp.abs(logits, out=out)                                      # log C is even: work with |l|
    small = xp.less(a, SERIES_BELOW, out=small)                      # where the series is the answer
    xp.maximum(a, SERIES_BELOW, out=a)                               # the closed form never sees l near 0
    log_tanh = xp.multiply(a, 0.5, out=work)
    xp.tanh(log_tanh, out=log_tanh)
    xp.log(log_tanh, out=log_tanh)                                   # log tanh(|l| / 2)
    log_c = xp.log(a, out=a)
    log_c -= log_tanh                                                # log |l| - log tanh(|l| / 2)
    l2 = xp.clip(logits, -SERIES_BELOW, SERIES_BELOW, out=work)      # the series never sees l far from 0
    l2 *= l2
    near_zero = _polynomial(xp, l2, LOG_C_SERIES, out=series)
    near_zero *= l2
    near_zero += LOG_2                                               # log 2 + l^2 (1/12 - 7 l^2/1440 + ...)
    xp.copyto(log_c, near_zero, where=small)
    return log_c


def log_normalizer_grad(xp, logits, out=None, work=None, series=None, small=None):
    """d/dl log C(l) = 1/l - 1/sinh(l) elementwise, for every logit (see ContinuousBernoulli).

    Odd in l, so computed at |l| and given l's sign. As in log_normalizer, both branches run
    on clamped copies of l and `small` picks:
        |l| >= SERIES_BELOW:  1/|l| - 2 t / (1 - t^2),  t = exp(-|l|) <= exp(-0.4)
                              (1/sinh(a) = 2 e^-a / (1 - e^-2a): no overflow, and 1 - t^2 >= 0.55
                              cancels nothing; for |l| > 745, t underflows to 0 and 1/sinh to 0)
        |l| <  SERIES_BELOW:  l/6 - 7 l^3/360 + 31 l^5/15120 - ...
    """
    a = xp.abs(logits, out=out)
    small = xp.less(a, SERIES_BELOW, out=small)
    xp.maximum(a, SERIES_BELOW, out=a)
    t = xp.negative(a, out=work)
    xp.exp(t, out=t)                                                 # t = exp(-|l|)
    one_minus_t2 = xp.multiply(t, t, out=series)
    xp.subtract(1, one_minus_t2, out=one_minus_t2)                   # 1 - t^2
    csch = xp.divide(t, one_minus_t2, out=t)
    csch *= 2                                                        # 1/sinh(|l|)
    grad = xp.reciprocal(a, out=a)
    grad -= csch                                                     # 1/|l| - 1/sinh(|l|)
    xp.copysign(grad, logits, out=grad)                              # ... with the sign of l
    l2 = xp.clip(logits, -SERIES_BELOW, SERIES_BELOW, out=work)
    l2 *= l2
    near_zero = _polynomial(xp, l2, DLOG_C_SERIES, out=series)
    near_zero *= xp.clip(logits, -SERIES_BELOW, SERIES_BELOW, out=work)   # l (1/6 - 7 l^2/360 + ...)
    xp.copyto(grad, near_zero, where=small)
    return grad


class ContinuousBernoulliCache(NamedTuple):
    logits: object     # (B, D)
    x: object          # (B, D)


class ContinuousBernoulli(Likelihood):
    """-log p(x | logits) under independent continuous Bernoullis: a true density for grey pixels.

    Loaiza-Ganem & Cunningham, "The continuous Bernoulli: fixing a pervasive error in variational
    autoencoders", NeurIPS 2019. With s = sigmoid(l), the Bernoulli's s^x (1 - s)^(1 - x) is no
    density on [0, 1]: since s / (1 - s) = e^l and (1 - s)(e^l - 1) = tanh(l / 2),
        integral_0^1 s^x (1 - s)^(1 - x) dx = (1 - s) integral_0^1 e^(l x) dx = (1 - s)(e^l - 1) / l
                                            = tanh(l / 2) / l,
    which is at most 1/2. Dividing by it makes a density:
        log p(x | l) = x log s + (1 - x) log(1 - s) + log C(l),   C(l) = l / tanh(l / 2),   C(0) = 2.
    (The paper writes C = 2 artanh(1 - 2s) / (1 - 2s); as 1 - 2s = -tanh(l / 2), artanh(1 - 2s) = -l / 2,
    which is the same thing.) Per pixel, with the Bernoulli's algebra:
        loss = softplus(l) - x l - log C(l),     log C(l) = log|l| - log tanh(|l| / 2),
        d loss / dl = sigmoid(l) - x - d log C / dl,
        d log C / dl = 1/l - (1/2) sech^2(l/2) / tanh(l/2) = 1/l - 1 / (2 sinh(l/2) cosh(l/2))
                     = 1/l - 1/sinh(l).
    Both are 0/0 at l = 0 (and lose digits near it), so below |l| = SERIES_BELOW they come from
    their Taylor series (log_normalizer, log_normalizer_grad):
        log C(l)     = log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720 - ...
        d log C / dl = l/6 - 7 l^3/360 + 31 l^5/15120 - ...
    The mean, what decode shows, is E[x] = integral x p(x | l) dx = 1/(1 - e^-l) - 1/l, and it equals
    sigmoid(l) - d log C / dl: p(x | l) = exp(l x - A(l)) with A(l) = softplus(l) - log C(l)
    = log((e^l - 1) / l), an exponential family, so dA/dl = E[x] and the gradient is, as for the
    Bernoulli, mean minus data: d loss / dl = E[x] - x. Near 0, E[x] = 1/2 + l/12 - l^3/720 + ...
    The negative ELBO is then a true upper bound on -log p(x) for grey pixels. A density can
    exceed 1, so this loss can be negative, and it is a different number from the Bernoulli's
    (smaller by sum log C >= D log 2): never compare the two side by side.
    """
    name = "continuous-bernoulli"
    description = "the continuous Bernoulli: cross-entropy made a density on [0, 1] (a true likelihood for grey pixels)"
    normalized = True

    def _scratch(self, ws, shape):
        """The buffers log_normalizer and its gradient work in (shared by forward and backward)."""
        return {"work": buffer(ws, "continuous-bernoulli.work", shape),
                "series": buffer(ws, "continuous-bernoulli.series", shape),
                "small": buffer(ws, "continuous-bernoulli.small", shape, bool)}

    def forward_rows(self, xp, logits, x, ws=None):                  # (..., D), (..., D) -> (...)
        scratch = self._scratch(ws, logits.shape)
        terms = softplus(xp, logits, out=buffer(ws, "continuous-bernoulli.terms", logits.shape),
                         work=scratch["work"])
        terms -= log_normalizer(xp, logits, out=buffer(ws, "continuous-bernoulli.log_c", logits.shape),
                                **scratch)                           # softplus(l) - log C(l)
        terms -= xp.multiply(x, logits, out=scratch["work"])         # ... - x l
        rows = terms.sum(axis=-1, out=buffer(ws, "continuous-bernoulli.rows", logits.shape[:-1]))
        return rows, ContinuousBernoulliCache(logits, x)

    def backward(self, xp, cache, ws=None):
        shape = cache.logits.shape
        dlog_c = log_normalizer_grad(xp, cache.logits, out=buffer(ws, "continuous-bernoulli.dlog_c", shape),
                                     **self._scratch(ws, shape))
        dlogits = sigmoid(xp, cache.logits, out=buffer(ws, "continuous-bernoulli.dlogits", shape))
        dlogits -= cache.x
        dlogits -= dlog_c                                            # sigmoid(l) - x - d log C / dl
        return dlogits

    def mean(self, xp, logits, out=None):
        """E[x | l] = sigmoid(l) - d log C / dl = 1/(1 - e^-l) - 1/l, in [0, 1]; 1/2 at l = 0."""
        dlog_c = log_normalizer_grad(xp, logits)                     # first: `out` may be `logits` itself
        out = sigmoid(xp, logits, out=out)
        out -= dlog_c
        return out


# Adding a likelihood: write its class above, then add it here. Nothing else changes.
LIKELIHOODS = {likelihood.name: likelihood for likelihood in (Bernoulli(), Gaussian(), ContinuousBernoulli())}


def get_likelihood(name):
    """The registered likelihood called `name`; ValueError naming the choices otherwise."""
    if not isinstance(name, str) or name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, not {name!r}")
    return LIKELIHOODS[name]


SIGMAS = ("fixed", "learned", "optimal")   # --sigma: the Gaussian decoder's (Gaussian.build)


def make_likelihood(spec):
    """The likelihood a network.ModelSpec names, built with its settings (not yet bound to a model)."""
    return get_likelihood(spec.likelihood).build(spec)


# -- the KL term -----------------------------------------------------------------------------

class KLCache(NamedTuple):
    mu: object             # (B, Z)
    var_minus_1: object    # (B, Z) exp(logvar) - 1


def gaussian_kl_forward(xp, mu, logvar, ws=None):
    """KL(q(z|x) || N(0, I)) for q = N(mu, diag(exp(logvar))), summed over the batch: (kl, cache).

    Kingma & Welling (2014), Appendix B: for one example,
        KL = -1/2 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))
           =  1/2 * sum_j (mu_j^2 + (exp(logvar_j) - 1) - logvar_j).
    exp(logvar) - 1 is computed as expm1(logvar): when a latent dimension is unused its
    logvar sits near 0, and exp(logvar) - 1 in float32 would cancel down to a few digits.
    """
    per_latent, var_minus_1 = gaussian_kl_per_latent(xp, mu, logvar, out=buffer(ws, "kl.per_latent", mu.shape),
                                                     var_minus_1=buffer(ws, "kl.var_minus_1", mu.shape))
    return per_latent.sum(), KLCache(mu, var_minus_1)


def gaussian_kl_per_latent(xp, mu, logvar, out=None, var_minus_1=None):
    """(KL of each latent dimension of each example (B, Z), exp(logvar) - 1): the terms the KL sums."""
    var_minus_1 = xp.expm1(logvar, out=var_minus_1)     # exp(logvar) - 1, accurate near logvar = 0
    out = xp.multiply(mu, mu, out=out)
    out += var_minus_1
    out -= logvar                                       # mu^2 + (exp(logvar) - 1) - logvar
    out *= 0.5
    return out, var_minus_1


def gaussian_kl_backward(xp, cache, scale=1.0, ws=None):
    """(scale * dKL/dmu, scale * dKL/dlogvar), each (B, Z); `scale` is the KL weight beta.

        dKL/dmu     = mu
        dKL/dlogvar = (exp(logvar) - 1) / 2
    """
    dmu = xp.multiply(cache.mu, scale, out=buffer(ws, "kl.dmu", cache.mu.shape))
    dlogvar = xp.multiply(cache.var_minus_1, 0.5 * scale, out=buffer(ws, "kl.dlogvar", cache.mu.shape))
    return dmu, dlogvar
