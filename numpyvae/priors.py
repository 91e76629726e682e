"""The prior p(z): the standard normal and the VampPrior, each one entry in PRIORS.

A prior is what the KL term of the ELBO and the log-weight of the IWAE bound measure the
encoder's q(z|x) against, and what `generate` and the figures sample new codes from. Each knows:

    parameters()                      name -> shape of what it learns ({} for N(0, I))
    init(rng)                         its initial values, flat, in that order
    log_prob_forward(model, z, ws)    -> (log p(z) (N,), cache), z (N, Z)
    log_prob_backward(model, dlog_p, cache, ws) -> dz (N, Z), given dlog_p (N,) = d loss / d log p(z_n);
                                      fills the gradients of the prior's own parameters
    kl_forward(model, mu, logvar, z, eps, std, ws)  -> (KL summed over the batch, cache)
    kl_backward(model, cache, scale, ws)            -> (dmu, dlogvar, dz), dz None if the KL has no z
    sample(model, n, rng)             -> z (n, Z), n codes drawn from p(z)

The KL of the ELBO. In general it has no closed form, and the base class estimates it at the
sample the decoder sees, z = mu + eps * std (the same estimate the IWAE bound is made of):

    KL(q(z|x) || p(z)) ~ log q(z|x) - log p(z),   log q(z|x) = sum_j (-eps_j^2/2 - logvar_j/2) - Z/2 log(2 pi).

Its gradient: log q at the reparameterized z depends on mu not at all (z - mu = eps * std moves
with mu) and on logvar through its -logvar/2 alone (eps is held fixed), so
    d log q / d mu = 0,   d log q / d logvar = -1/2,
and -log p(z) sends its gradient back through z (into the reparameterization, with the
decoder's). The standard normal overrides this with the closed form (Kingma & Welling, App. B).

Shapes: N = codes (B, or K * B for the IWAE bound), B = batch, K = pseudo-inputs, D = pixels, Z = latent.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np

from numpyvae import losses
from numpyvae.layers import buffer, gradients_into, scoped, sigmoid

LOG_2PI = math.log(2 * math.pi)


class EstimatedKLCache(NamedTuple):
    log_p_cache: object    # the prior's log_prob cache at z
    shape: tuple           # (B, Z)


class Prior:
    """The interface every prior implements (see the module docstring)."""
    name = ""              # the key in PRIORS and the value of --prior
    description = ""       # one line for --help
    kl_closed_form = False  # its KL is exact (never negative), not an estimate at the sample
    settings = ()          # the network.ModelSpec settings it reads (pseudo_inputs for the VampPrior)
    formula = "p(z)"       # how a figure's title writes it: "z ~ N(0, I)"

    def parameters(self):
        return {}

    def init(self, rng):
        return np.zeros(0)

    def log_prob_forward(self, model, z, ws=None, visit=None):
        raise NotImplementedError

    def log_prob_backward(self, model, dlog_p, cache, ws=None):
        raise NotImplementedError

    def sample(self, model, n, rng=None):
        raise NotImplementedError

    def inputs(self, model):
        """The images the prior is built on, (K, D) pixels on the host, for a figure to show; None if none."""
        return None

    def mixture(self, model):
        """p(z) as an equal-weight mixture of diagonal Gaussians, (means (K, Z), log-variances (K, Z)) on the
        host: what a page that samples the prior without numpyvae (the explorer) needs."""
        raise NotImplementedError

    def held(self, model):
        """This prior as evaluation scores with it, at the model's weights as they are now (model.held):
        itself, unless it has work that need not be done again at every batch scored."""
        return self

    @classmethod
    def build(cls, spec):
        """The prior for a network.ModelSpec (a prior with settings reads them from it)."""
        return cls()

    @classmethod
    def check(cls, spec):
        """ValueError for a spec this prior cannot serve, or a prior's setting it would silently ignore."""
        if "pseudo_inputs" not in cls.settings and spec.pseudo_inputs != DEFAULT_PSEUDO_INPUTS:
            raise ValueError(f"pseudo_inputs ({spec.pseudo_inputs}) are the VampPrior's: they mean nothing for "
                             f"prior {spec.prior!r} (ask for prior 'vamp', --prior vamp)")

    @classmethod
    def describe(cls, spec):
        """Words a model's description ends with: " with the NAME prior" ("" for the standard normal)."""
        return f" with the {cls.name} prior"

    def kl_forward(self, model, mu, logvar, z, eps, ws=None, visit=None):
        """log q(z|x) - log p(z) at the sample z = mu + eps * std, summed over the batch."""
        xp = model.xp
        log_p, cache = self.log_prob_forward(model, z, ws, visit)                  # (B,)
        log_q = log_q_forward(xp, logvar, eps, ws)                                 # (B,)
        return log_q.sum() - log_p.sum(), EstimatedKLCache(cache, z.shape)

    def kl_backward(self, model, cache, scale=1.0, ws=None):
        """(dmu, dlogvar, dz) of scale * (log q - log p): 0, -scale/2, and -log p's gradient at z."""
        B, Z = cache.shape
        dlog_p = filled(model, buffer(ws, "prior.dlog_p", (B,)), (B,), -scale)         # d loss / d log p(z_b)
        dz = self.log_prob_backward(model, dlog_p, cache.log_p_cache, ws)           # (B, Z)
        dlogvar = filled(model, buffer(ws, "prior.dlogvar", (B, Z)), (B, Z), -0.5 * scale)
        return None, dlogvar, dz


def filled(model, out, shape, value):
    """`out` (a workspace buffer, or None: a fresh array of `shape`) filled with `value`."""
    if out is None:
        return model.xp.full(shape, value, dtype=model.dtype)
    out.fill(value)
    return out


def log_q_forward(xp, logvar, eps, ws=None):
    """log q(z|x) (..., B) at z = mu + eps * std: sum_j (-eps_j^2 - logvar_j) / 2 - Z/2 log(2 pi).

    logvar (B, Z) and eps (..., B, Z): with (z - mu) / std = eps, the Gaussian's exponent is -eps^2/2.
    """
    terms = xp.multiply(eps, eps, out=buffer(ws, "log_q.terms", eps.shape))
    terms += logvar                                                          # eps^2 + logvar
    log_q = terms.sum(axis=-1, out=buffer(ws, "log_q", eps.shape[:-1]))
    log_q *= -0.5
    log_q -= 0.5 * eps.shape[-1] * LOG_2PI
    return log_q


# -- the standard normal ----------------------------------------------------------------------

class StandardNormalCache(NamedTuple):
    z: object              # (N, Z)


class StandardNormal(Prior):
    """p(z) = N(0, I): the plain VAE's prior, with nothing to learn and its KL in closed form.

        log p(z) = -sum_j z_j^2 / 2 - Z/2 log(2 pi),   d log p / dz = -z.
    """
    name = "normal"
    description = "the standard normal N(0, I) (the plain VAE's)"
    kl_closed_form = True
    formula = "N(0, I)"

    def log_prob_forward(self, model, z, ws=None, visit=None):
        xp = model.xp
        squares = xp.multiply(z, z, out=buffer(ws, "prior.z2", z.shape))
        log_p = squares.sum(axis=-1, out=buffer(ws, "prior.log_p", z.shape[:-1]))
        log_p *= -0.5
        log_p -= 0.5 * z.shape[-1] * LOG_2PI
        return log_p, StandardNormalCache(z)

    def log_prob_backward(self, model, dlog_p, cache, ws=None):
        """dz = dlog_p * (-z): each code's share of the loss pulls it towards 0."""
        dz = model.xp.multiply(cache.z, dlog_p[..., None], out=buffer(ws, "prior.dz", cache.z.shape))
        dz *= -1
        return dz

    def kl_forward(self, model, mu, logvar, z, eps, ws=None, visit=None):
        """The closed form, KL(N(mu, exp(logvar)) || N(0, I)) (losses.gaussian_kl_forward)."""
        return losses.gaussian_kl_forward(model.xp, mu, logvar, ws)

    def kl_backward(self, model, cache, scale=1.0, ws=None):
        dmu, dlogvar = losses.gaussian_kl_backward(model.xp, cache, scale=scale, ws=ws)
        return dmu, dlogvar, None

    @classmethod
    def describe(cls, spec):
        return ""                          # the VAE's own prior: a description names only the others

    def sample(self, model, n, rng=None):
        return model.standard_normal((n, model.latent_dim), rng)

    def mixture(self, model):
        zeros = np.zeros((1, model.latent_dim))                    # one component, N(0, I)
        return zeros, zeros.copy()


# -- the VampPrior ------------------------------------------------------------------------------

class VampCache(NamedTuple):
    z: object              # (N, Z) the codes
    resp: object           # (N, K) responsibilities r_nk = softmax_k L_nk
    m: object              # (K, Z) the pseudo-inputs' means
    inv_var: object        # (K, Z) exp(-logvar_k)
    m_iv: object           # (K, Z) m * inv_var
    u: object              # (K, D) the pseudo-inputs, sigmoid(a)
    encoder_cache: object  # the encoder's caches on u


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), the encoder's own
    posterior at K learned pseudo-inputs u_k = sigmoid(a_k), a_k the parameter `prior.pseudo_logits`.

    Forward. The encoder runs on the K pseudo-inputs (a second use of its weights in the step),
    giving m_k, lv_k (K, Z). Each code z_n against each component:
        L_nk = log N(z_n; m_k, exp(lv_k)) = -1/2 sum_j [(z_nj - m_kj)^2 iv_kj + lv_kj + log(2 pi)],
    iv = exp(-lv), computed as three matrix products, (z^2) @ iv^T - 2 z @ (m iv)^T + sum_j m^2 iv,
    so no (N, K, Z) array is made. Then, shifted by each row's largest L so no exp overflows,
        log p(z_n) = logsumexp_k L_nk - log K.

    Backward, given g_n = d loss / d log p(z_n). The log-sum-exp's gradient is the softmax, the
    responsibilities r_nk = exp(L_nk - logsumexp_k L_nk) (as IWAE's normalized weights), so with
    R_nk = g_n r_nk:
        dz_nj   = sum_k R_nk dL_nk/dz_nj  = -sum_k R_nk (z_nj - m_kj) iv_kj
                = -(z_nj (R @ iv)_nj - (R @ (m iv))_nj)
        dm_kj   = sum_n R_nk (z_nj - m_kj) iv_kj = iv_kj ((R^T @ z)_kj - m_kj s_k),   s_k = sum_n R_nk
        dlv_kj  = sum_n R_nk [(z_nj - m_kj)^2 iv_kj - 1] / 2
                = iv_kj ((R^T @ z^2)_kj - 2 m_kj (R^T @ z)_kj + m_kj^2 s_k) / 2 - s_k / 2
    dm, dlv go back through the heads and the encoder on the pseudo-inputs, whose gradients add to
    those of its use on the images (layers.Gradients), to du (K, D), and through the sigmoid:
        d loss / d a = du * u (1 - u).

    A conditional VAE is refused (network.ModelSpec): its encoder reads a label beside each image,
    and a pseudo-input has none (a VampPrior per class would need pseudo-inputs per class).
    Initialization, as the reference code (jmtomczak/vae_vampprior) does for MNIST: pseudo-input
    pixels drawn from N(0.05, 0.01^2), stored as their logits (clipped into (0, 1) first).
    """
    name = "vamp"
    description = "the VampPrior: a mixture of the encoder's posteriors at learned pseudo-inputs"
    formula = "(1/K) sum_k q(z | u_k)"
    PARAM = "prior.pseudo_logits"
    INIT_MEAN, INIT_STD = 0.05, 0.01

    def __init__(self, input_shape, pseudo_inputs):
        self.input_shape, self.K = tuple(input_shape), int(pseudo_inputs)

    def parameters(self):
        return {self.PARAM: (self.K, *self.input_shape)}

    def init(self, rng):
        u = np.clip(rng.normal(self.INIT_MEAN, self.INIT_STD, size=self.K * math.prod(self.input_shape)), 1e-4, 1 - 1e-4)
        return np.log(u) - np.log1p(-u)                                    # logit(u)

    fixed = None           # (u, m, logvar) of a held copy: evaluation's, computed once (held)

    def held(self, model):
        """A copy whose components are computed once, now: evaluation scores thousands of blocks of codes at
        the same weights, and need not run the encoder on the pseudo-inputs again for each (no backward)."""
        held = copy.copy(self)
        held.fixed = self.components(model)[:3]
        return held

    def components(self, model, ws=None, visit=None):
        """(u (K, D), m (K, Z), logvar (K, Z), the encoder's caches): the mixture's K Gaussians."""
        if self.fixed is not None:
            return (*self.fixed, None)
        xp = model.xp
        a = model.params[self.PARAM].reshape(self.K, -1)                   # (K, D)
        u = sigmoid(xp, a, out=buffer(ws, "prior.u", a.shape))
        m, lv, encoder_cache = model.encoder_forward(u, None, scoped(ws, "prior"), visit)
        return u, m, lv, encoder_cache

    def log_prob_forward(self, model, z, ws=None, visit=None):
        xp = model.xp
        N, Z = z.shape
        u, m, lv, encoder_cache = self.components(model, ws, visit)
        inv_var = xp.negative(lv, out=buffer(ws, "prior.inv_var", lv.shape))
        xp.exp(inv_var, out=inv_var)                                        # iv = exp(-lv)   (K, Z)
        m_iv = xp.multiply(m, inv_var, out=buffer(ws, "prior.m_iv", m.shape))
        const = xp.multiply(m, m_iv, out=buffer(ws, "prior.const_terms", m.shape))
        const += lv
        const = const.sum(axis=-1, out=buffer(ws, "prior.const", (self.K,)))   # sum_j m^2 iv + lv   (K,)
        const += Z * LOG_2PI
        z2 = xp.multiply(z, z, out=buffer(ws, "prior.z2", z.shape))
        L = xp.matmul(z2, inv_var.T, out=buffer(ws, "prior.L", (N, self.K)))  # (N, K)
        cross = xp.matmul(z, m_iv.T, out=buffer(ws, "prior.z_m_iv", (N, self.K)))
        cross *= 2
        L -= cross
        L += const
        L *= -0.5                                                           # L_nk = log N(z_n; m_k, exp(lv_k))
        top = L.max(axis=1, out=buffer(ws, "prior.top", (N,)))
        resp = xp.subtract(L, top[:, None], out=L)                          # L - max, in place: L is not kept
        xp.exp(resp, out=resp)
        total = resp.sum(axis=1, out=buffer(ws, "prior.total", (N,)))       # >= 1
        resp /= total[:, None]                                              # r = softmax_k L
        log_p = xp.log(total, out=total)
        log_p += top
        log_p -= math.log(self.K)                                           # logsumexp_k L - log K
        return log_p, VampCache(z, resp, m, inv_var, m_iv, u, encoder_cache)

    def log_prob_backward(self, model, dlog_p, cache, ws=None):
        xp, c = model.xp, cache
        N, Z = c.z.shape
        R = xp.multiply(c.resp, dlog_p[:, None], out=buffer(ws, "prior.R", c.resp.shape))     # (N, K)
        # the codes: dz = -(z * (R @ iv) - R @ (m iv))
        dz = xp.matmul(R, c.inv_var, out=buffer(ws, "prior.dz", (N, Z)))
        dz *= c.z
        dz -= xp.matmul(R, c.m_iv, out=buffer(ws, "prior.R_m_iv", (N, Z)))
        dz *= -1
        # the components: dm = iv (R^T z - m s), dlv = iv (R^T z^2 - 2 m R^T z + m^2 s) / 2 - s / 2
        s = R.sum(axis=0, out=buffer(ws, "prior.s", (self.K,)))[:, None]                      # (K, 1)
        Rz = xp.matmul(R.T, c.z, out=buffer(ws, "prior.Rz", (self.K, Z)))
        Rz2 = xp.matmul(R.T, xp.multiply(c.z, c.z, out=buffer(ws, "prior.z2", c.z.shape)),
                        out=buffer(ws, "prior.Rz2", (self.K, Z)))
        dm = xp.multiply(c.m, s, out=buffer(ws, "prior.dm", (self.K, Z)))
        xp.subtract(Rz, dm, out=dm)
        dm *= c.inv_var                                                     # iv (R^T z - m s)
        # (Rz is doubled in place below, after dm has used it)
        dlv = xp.multiply(c.m, s, out=buffer(ws, "prior.dlv", (self.K, Z)))
        Rz *= 2
        dlv -= Rz
        dlv *= c.m
        dlv += Rz2                                                          # R^T z^2 - 2 m R^T z + m^2 s
        dlv *= c.inv_var
        dlv -= s
        dlv *= 0.5
        du = model.encoder_backward(dm, dlv, c.encoder_cache, scoped(ws, "prior"), need_dx=True)   # (K, D)
        with gradients_into(xp, model.grads, (self.PARAM,), ws) as (da,):
            da = da.reshape(c.u.shape)
            xp.subtract(1, c.u, out=da)
            da *= c.u
            da *= du                                                        # du * u (1 - u)
        return dz

    settings = ("pseudo_inputs",)

    @classmethod
    def build(cls, spec):
        return cls(spec.input_shape, spec.pseudo_inputs)

    @classmethod
    def check(cls, spec):
        if spec.num_classes:
            raise ValueError("a VampPrior's pseudo-inputs carry no label, so a conditional VAE cannot use it "
                             "(a VampPrior per class would need pseudo-inputs per class): drop the labels "
                             "or use prior 'normal'")

    @classmethod
    def describe(cls, spec):
        return f" with a VampPrior of {spec.pseudo_inputs} pseudo-inputs"

    def sample(self, model, n, rng=None):
        """Pick a component k uniformly for each code, then z = m_k + eps * exp(lv_k / 2)."""
        xp = model.xp
        _, m, lv, _ = self.components(model)
        uniform = model.backend.uniform(model.rng if rng is None else rng, xp.empty(n, dtype=model.dtype))
        pick = xp.minimum((uniform * self.K).astype(np.int64), self.K - 1)   # k uniform in 0..K-1
        eps = model.standard_normal((n, model.latent_dim), rng)
        return m[pick] + eps * xp.exp(0.5 * lv[pick])

    def inputs(self, model):
        """The pseudo-inputs u_k = sigmoid(a_k), (K, D) on the host."""
        return model.backend.to_host(self.components(model)[0])

    def mixture(self, model):
        _, m, lv, _ = self.components(model)
        return model.backend.to_host(m).astype(np.float64), model.backend.to_host(lv).astype(np.float64)


# Adding a prior: write its class above, then add a line here.
PRIORS = {prior.name: prior for prior in (StandardNormal, VampPrior)}
DEFAULT_PSEUDO_INPUTS = 500      # K, the VampPrior's components (Tomczak & Welling's MNIST setting)


def make_prior(spec):
    """The prior a network.ModelSpec names, built for its images (ValueError naming the choices otherwise)."""
    if not isinstance(spec.prior, str) or spec.prior not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}, not {spec.prior!r}")
    return PRIORS[spec.prior].build(spec)
