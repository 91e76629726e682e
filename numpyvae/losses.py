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
    mean(xp, logits)            -> E[x | logits]: what the decoder's pictures show
    normalized                  True when p(x | logits) is a density over pixels in [0, 1], so the
                                negative ELBO is an upper bound on -log p(x) (is_density(binary)
                                also counts a probability mass over binarized pixels)

forward/backward are a pair like the layers' (layers.py): no state, the cache is returned,
and buffers come from the workspace `ws` when one is given (training) or are allocated.
Losses are summed over the batch; divide by the batch size for the per-image numbers.

Shapes: B = batch, D = pixels, Z = latent.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

from numpyvae.layers import buffer, sigmoid


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
    """
    name = "gaussian"
    description = "the seed's sum of squared errors on sigmoid outputs (no normalizing constant)"
    normalized = False

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
