"""The importance-weighted bound (IWAE) as a training objective: its loss and its gradient, by hand.

Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders". Draw K samples of
z per image from the encoder's q(z|x) = N(mu, diag(exp(logvar))),
    z_kb = mu_b + eps_kb * std_b,   std_b = exp(logvar_b / 2),   eps_kb ~ N(0, I),
weigh each by how much more likely the model finds it than the encoder did,
    log w_kb = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b),
and train on the negative bound, summed over the batch,
    loss = -sum_b log (1/K) sum_k w_kb = -sum_b [logsumexp_k(log w_kb) - log K].
K = 1 is the ELBO with the KL estimated at the sample (log q - log p) instead of in closed form;
as K grows the bound tightens towards log p(x) (the bound at K is never below the one at K - 1).

The log-weight is computed in one place, `log_weights`, for training and for evaluation's
bound alike: the likelihood's per-row loss (losses.py), the prior's log p(z) (priors.py: N(0, I)
or the VampPrior), and the encoder's log q(z|x) = sum_j (-eps_j^2/2 - logvar_j/2) - Z/2 log(2 pi)
(with (z - mu) / std = eps; priors.log_q_forward).

The gradient. Write a_kb = log w_kb. d/da_kb of logsumexp_k(a_kb) is the softmax over k,
    w~_kb = exp(a_kb) / sum_k' exp(a_k'b)        (the normalized importance weights, sum_k w~_kb = 1)
so d loss / d a_kb = -w~_kb, and every other gradient is a single-sample one scaled by its weight:
    logits:  a_kb holds -recon(logits_kb), so  d loss / d logits_kb = w~_kb * d recon / d logits_kb
             (the likelihood's own backward, each row scaled; the decoder then runs backward once,
             on all K * B rows as one batch, and sends back dz_dec, already weighted)
    z:       a_kb holds log p(z_kb), so the prior's backward, given d loss / d log p = -w~_kb,
             adds its share: dz_kb = dz_dec_kb + dz_prior_kb  (for N(0, I), d log p / dz = -z,
             so dz_prior = w~ z)
    mu:      z_kb = mu_b + eps_kb * std_b,    so  dmu_b = sum_k dz_kb
    logvar:  through z (dz/dlogvar = eps * std / 2), and directly through the + logvar / 2 of
             -log q (with eps held fixed, eps^2 / 2 does not move), whose share is
             -sum_k w~_kb / 2 = -1/2:
             dlogvar_b = std_b / 2 * sum_k dz_kb * eps_kb - 1/2.
The K = 1 case is the familiar one: w~ = 1, and dmu = dz_dec + z, dlogvar = dz_dec eps std / 2
+ (z eps std - 1) / 2 are the reparameterized gradients of recon + log q - log p.
Softmax keeps the weights finite: a_kb - max_k a_kb <= 0, so no exp overflows, and the largest
weight is exp(0) = 1 before normalizing, so the sum is at least 1 and its log is safe.

The IWAE objective (objectives.py) runs the encoder, `sample`, the decoder on the (K * B, Z)
samples, `forward`, then `backward_logits`, the decoder's backward, `backward_latents` and the
encoder's backward.

Shapes: K = samples per image, B = batch, D = pixels, Z = latent.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from numpyvae.layers import buffer
from numpyvae.priors import log_q_forward


class BoundCache(NamedTuple):
    log_w: object          # (K, B) log importance weights
    weights: object        # (K, B) w~ = softmax over k of log w
    recon_cache: object    # the likelihood's cache, over the (K, B, D) logits
    prior_cache: object    # the prior's log_prob cache, over the (K * B, Z) codes
    eps: object            # (K, B, Z) the noise
    std: object            # (B, Z) exp(logvar / 2)


def sample(xp, mu, logvar, eps, ws=None):
    """(z (K, B, Z), std (B, Z)): K samples per image, z = mu + eps * std."""
    std = xp.multiply(logvar, 0.5, out=buffer(ws, "iwae.std", mu.shape))
    xp.exp(std, out=std)
    z = xp.multiply(eps, std, out=buffer(ws, "iwae.z", eps.shape))
    z += mu
    return z, std


def log_weights(model, x, logits, z, eps, logvar, ws=None, visit=None):
    """log w = log p(x|z) + log p(z) - log q(z|x) (K, B), for training's bound and evaluation's alike.

    x (B, D); logits (K * B, D), the decoder's output on z, row k * B + b for sample k of image b;
    z, eps (K, B, Z); logvar (B, Z). Returns (log_w, recon (K, B) = -log p(x|z), log_q - log_p (K, B),
    the likelihood's cache, the prior's cache).
    """
    xp = model.xp
    K, B, Z = z.shape
    recon, recon_cache = model.recon_term.forward_rows(xp, logits.reshape(K, B, -1), x, ws)  # (K, B)
    log_p, prior_cache = model.prior.log_prob_forward(model, z.reshape(K * B, Z), ws, visit)  # (K * B,)
    kl = log_q_forward(xp, logvar, eps, ws)                                                    # (K, B) log q
    kl -= log_p.reshape(K, B)                                                                  # log q - log p
    log_w = xp.add(recon, kl, out=buffer(ws, "iwae.log_w", (K, B)))
    log_w *= -1
    return log_w, recon, kl, recon_cache, prior_cache


def forward(model, x, logits, z, eps, logvar, std, ws=None, visit=None):
    """The negative IWAE bound, summed over the batch, and the average terms of the K single-sample ELBOs.

    Arguments as log_weights', and std (B, Z) from `sample`. Returns (loss, recon, kl, cache):
    loss = -sum_b log (1/K) sum_k w_kb; recon and kl are the reconstruction and log q - log p
    averaged over the K samples and summed over the batch (their sum is the K-sample estimate of
    the negative ELBO, never below loss). 0-d arrays, on the device.
    """
    xp = model.xp
    K, B, Z = eps.shape
    log_w, recon, kl, recon_cache, prior_cache = log_weights(model, x, logits, z, eps, logvar, ws, visit)
    # logsumexp over k, shifted by each image's largest log w so that no exp overflows
    top = log_w.max(axis=0, out=buffer(ws, "iwae.top", (B,)))                           # (B,)
    weights = xp.subtract(log_w, top, out=buffer(ws, "iwae.weights", (K, B)))
    xp.exp(weights, out=weights)                                                         # w / max_k w
    total = weights.sum(axis=0, out=buffer(ws, "iwae.total", (B,)))                      # >= 1
    weights /= total                                                                     # w~, sum_k w~ = 1
    xp.log(total, out=total)
    total += top                                                                         # logsumexp_k log w
    loss = math.log(K) * B - total.sum()
    return loss, recon.sum() / K, kl.sum() / K, BoundCache(log_w, weights, recon_cache, prior_cache, eps, std)


def backward_logits(model, cache, ws=None):
    """d loss / d logits (K * B, D): each sample's likelihood gradient scaled by its weight w~_kb."""
    dlogits = model.recon_term.backward_rows(model.xp, cache.recon_cache, cache.weights, ws)   # (K, B, D)
    K, B, D = dlogits.shape
    return dlogits.reshape(K * B, D)


def backward_latents(model, dz, cache, ws=None):
    """(dmu, dlogvar) (B, Z) from dz (K * B, Z), the decoder's gradient at the samples (already weighted).

    Adds the prior's share at each sample (given d loss / d log p = -w~), sums over the samples
    through the reparameterization, and adds logvar's direct term from -log q (-1/2; see the
    module docstring).
    """
    xp = model.xp
    K, B, Z = cache.eps.shape
    dlog_p = xp.negative(cache.weights, out=buffer(ws, "iwae.dlog_p", (K, B)))           # -w~
    dz_prior = model.prior.log_prob_backward(model, dlog_p.reshape(K * B), cache.prior_cache, ws)   # (K * B, Z)
    dz = xp.add(dz.reshape(K, B, Z), dz_prior.reshape(K, B, Z), out=buffer(ws, "iwae.dz", (K, B, Z)))
    dmu = dz.sum(axis=0, out=buffer(ws, "iwae.dmu", (B, Z)))                             # sum_k dz
    dz *= cache.eps
    dlogvar = dz.sum(axis=0, out=buffer(ws, "iwae.dlogvar", (B, Z)))                     # sum_k dz eps
    dlogvar *= cache.std
    dlogvar *= 0.5
    dlogvar -= 0.5                     # -sum_k w~_kb / 2, and the weights sum to 1
    return dmu, dlogvar
