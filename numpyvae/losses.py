"""The two halves of the negative ELBO: the reconstruction term (a likelihood) and the KL term.

A likelihood p(x | logits) is one class here and one line in LIKELIHOODS; everything else
(the model, evaluation, the CLI's choices, the gradient-check rows) reads the registry.
Each likelihood knows:

    forward(xp, logits, x, ws)  -> (loss, cache)   loss = -sum log p(x | logits), over batch and pixels
    backward(xp, cache, ws)     -> dlogits          d loss / d logits
    log_prob(xp, x, logits)     -> log p(x | logits) summed over pixels, for any leading axes
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

    def forward(self, xp, logits, x, ws=None):
        raise NotImplementedError

    def backward(self, xp, cache, ws=None):
        raise NotImplementedError

    def log_prob(self, xp, x, logits):
        raise NotImplementedError

    def is_density(self, binary):
        """True when p(x | logits) sums or integrates to 1 over the values the pixels can take, so
        the negative ELBO and the IWAE bound are upper bounds on -log p(x). binary: pixels are 0 or 1."""
        return self.normalized

    def mean(self, xp, logits, out=None):
        """Every likelihood here reads its mean through the sigmoid: pixel means in [0, 1]."""
        return sigmoid(xp, logits, out=out)


class BernoulliCache(NamedTuple):
    logits: object     # (B, D)
    x: object          # (B, D)


class Bernoulli(Likelihood):
    """-log p(x | logits) for pixels x in [0, 1] under independent Bernoullis, from logits.

    With p = sigmoid(l), binary cross-entropy per pixel is
        -[x log p + (1 - x) log(1 - p)] = softplus(l) - x * l,
    using log p = -softplus(-l), log(1 - p) = -softplus(l) and softplus(-l) = softplus(l) - l.
    The gradient is the famous clean one:
        d/dl [softplus(l) - x l] = sigmoid(l) - x.
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

    def forward(self, xp, logits, x, ws=None):                       # (B, D), (B, D) -> scalar
        terms = softplus(xp, logits, out=buffer(ws, "bernoulli.softplus", logits.shape),
                         work=buffer(ws, "bernoulli.work", logits.shape))
        # sum(softplus(l) - x l) = sum(softplus(l)) - x . l: the dot product needs no (B, D) pass of its own
        return terms.sum() - xp.vdot(x, logits), BernoulliCache(logits, x)

    def backward(self, xp, cache, ws=None):
        dlogits = buffer(ws, "bernoulli.dlogits", cache.logits.shape)
        if is_cupy(xp):
            return _fused_bernoulli_grad(xp)(cache.logits, cache.x, dlogits)
        return self.plain_backward(xp, cache, dlogits)

    def plain_backward(self, xp, cache, dlogits=None):
        """backward in ufuncs (what the fused CuPy kernel must equal)."""
        dlogits = sigmoid(xp, cache.logits, out=dlogits)
        dlogits -= cache.x                                           # sigmoid(l) - x
        return dlogits

    def log_prob(self, xp, x, logits):                               # (..., D) -> (...)
        return (x * logits - softplus(xp, logits)).sum(axis=-1)


@functools.cache
def _fused_bernoulli_grad(cupy):
    """CuPy only: Bernoulli.backward as one kernel (the plain code makes five passes over (B, D))."""
    return cupy.ElementwiseKernel(
        "T logits, T x", "T dlogits",
        "dlogits = (1 + tanh(logits / 2)) / 2 - x",   # sigmoid(l) - x, sigmoid written as in layers.sigmoid
        "numpyvae_bernoulli_grad")


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

    def forward(self, xp, logits, x, ws=None):
        p = sigmoid(xp, logits, out=buffer(ws, "gaussian.p", logits.shape))
        error = xp.subtract(p, x, out=buffer(ws, "gaussian.error", logits.shape))   # p - x
        return xp.vdot(error, error), GaussianCache(p, error)     # sum of squares, no (B, D) temporary

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

    def log_prob(self, xp, x, logits):                               # (..., D) -> (...)
        return -((sigmoid(xp, logits) - x) ** 2).sum(axis=-1)


@functools.cache
def _fused_gaussian_grad(cupy):
    """CuPy only: Gaussian.backward as one kernel (the plain code makes four passes over (B, D))."""
    return cupy.ElementwiseKernel(
        "T p, T error", "T dlogits",
        "dlogits = 2 * error * p * (1 - p)",
        "numpyvae_gaussian_grad")


# Adding a likelihood: write its class above, then add it here. Nothing else changes.
LIKELIHOODS = {likelihood.name: likelihood for likelihood in (Bernoulli(), Gaussian())}


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
