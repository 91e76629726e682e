"""What a training step minimizes: the negative ELBO or the negative IWAE bound, each one entry in OBJECTIVES.

An objective is the wiring of one step: which pieces of the model run, in what order, and how
their gradients meet. Each entry knows

    forward(model, x, eps, y_hot, beta, ws, visit) -> ((total, recon, kl), cache)
    backward(model, cache, beta, ws)               fills model.grads, in exactly the reverse order
    noise_shape(samples, batch, latent)            the eps a step draws: (B, Z) or (K, B, Z)
    check(beta, samples)                           ValueError for settings that would mean nothing

and what the rest of numpyvae needs to know about it, so that no other module branches on
its name: whether it takes a KL weight (beta, warm-up), whether it tracks a bound of its own in
metrics.csv (bound_columns), how many decoder rows an image costs, and how to name it.

The model's pieces (vae.py) are the encoder, the decoder, the likelihood (losses.py) and the
prior (priors.py); iwae.py holds the bound's math. Adding an objective: write its class here
and add it to OBJECTIVES; the CLI's --objective, the checkpoint, gradcheck and the PyTorch
reference's dictionary (benchmarks/torch_reference.py) read it from there.

Shapes: K = samples per image, B = batch, D = pixels, Z = latent.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from numpyvae import iwae, layers
from numpyvae.layers import buffer


class Objective:
    """The interface every objective implements (see the module docstring)."""
    name = ""                  # the key in OBJECTIVES and the value of --objective
    description = ""           # one line for --help
    takes_kl_weight = False    # beta and --warmup-epochs mean something
    takes_samples = False      # K samples per image (--samples)
    bound_columns = ()         # metrics.csv columns of its own bound (train, test), negative, per image

    noun = ""                  # how errors name it: "the ELBO"

    def check(self, beta=1.0, samples=1):
        """ValueError for a beta or a sample count this objective would silently ignore."""
        if not self.takes_kl_weight and beta != 1:
            raise ValueError(f"{self.noun} has no KL weight: beta must be 1, not {beta!r}")
        if not self.takes_samples and samples != 1:
            takes = ", ".join(repr(name) for name, objective in OBJECTIVES.items() if objective.takes_samples)
            raise ValueError(f"{self.noun} takes one sample per image: samples={samples!r} is for objective={takes}")

    def noise_shape(self, samples, batch, latent_dim):
        return (batch, latent_dim)

    def check_noise(self, eps, batch, latent_dim):
        """ValueError unless eps (a backend array) has the shape a step of this objective draws."""
        if eps.shape != (batch, latent_dim):
            raise ValueError(f"eps must have shape {(batch, latent_dim)}, got {tuple(eps.shape)}")

    def rows_per_image(self, samples):
        """Decoder rows one image costs a step, one per draw of eps: memory and time grow with it."""
        return math.prod(self.noise_shape(samples, 1, 1))

    def title(self, samples=None):
        """A few words for banners and section titles: "ELBO", "IWAE bound with K = 5" (the noun by default)."""
        return self.noun.removeprefix("the ")

    def loss_name(self, samples):
        """What the progress bar calls the loss being trained on."""
        return "loss"

    def forward(self, model, x, eps, y_hot=None, beta=1.0, ws=None, visit=None):
        raise NotImplementedError

    def backward(self, model, cache, beta=1.0, ws=None):
        raise NotImplementedError


class ELBOCache(NamedTuple):
    encoder: object        # the encoder's caches
    z: object              # the reparameterization's cache
    decoder: object        # the decoder's caches
    recon: object          # the likelihood's cache
    kl: object             # the prior's KL cache


class ELBO(Objective):
    """The negative ELBO, summed over the batch:  recon(x, decoder(z)) + beta * KL(q(z|x) || p(z)),
    z = mu + eps * std, one sample per image; the KL is the prior's (closed form for N(0, I),
    the one-sample estimate log q - log p otherwise: priors.py).

    Backward, in reverse: the KL's gradients (dmu, dlogvar, and dz where it depends on the sample),
    the likelihood's dlogits, the decoder's dz, the reparameterization's dmu and dlogvar, to which
    the KL's add (mu and logvar feed both the decoder, through z, and the KL), and the encoder.
    The KL term is two methods, kl_forward and kl_backward (the prior's own by default), so an
    objective that changes only it (free bits, docs/extending.md) overrides just those two.
    """
    name = "elbo"
    description = "the evidence lower bound, one sample per image (the seed's)"
    takes_kl_weight = True
    noun = "the ELBO"

    def forward(self, model, x, eps, y_hot=None, beta=1.0, ws=None, visit=None):
        xp = model.xp
        mu, logvar, encoder_cache = model.encoder_forward(x, y_hot, ws, visit)        # (B, Z) each
        z, z_cache = layers.reparameterize_forward(xp, mu, logvar, eps, std=buffer(ws, "z.std", mu.shape),
                                                   z=buffer(ws, "z", mu.shape))       # (B, Z)
        logits, decoder_cache = model.decoder_forward(z, y_hot, ws, visit)             # (B, D)
        recon, recon_cache = model.recon_term.forward(xp, logits, x, ws)
        kl, kl_cache = self.kl_forward(model, mu, logvar, z, eps, ws, visit)
        return (recon + beta * kl, recon, kl), ELBOCache(encoder_cache, z_cache, decoder_cache, recon_cache, kl_cache)

    def kl_forward(self, model, mu, logvar, z, eps, ws=None, visit=None):
        """(the KL term summed over the batch, cache): the prior's KL (priors.py)."""
        return model.prior.kl_forward(model, mu, logvar, z, eps, ws, visit)

    def kl_backward(self, model, cache, scale=1.0, ws=None):
        """(dmu, dlogvar, dz) of scale * the KL term; dmu or dz None where it does not depend on them."""
        return model.prior.kl_backward(model, cache, scale=scale, ws=ws)

    def backward(self, model, cache, beta=1.0, ws=None):
        xp = model.xp
        dmu_kl, dlogvar_kl, dz_kl = self.kl_backward(model, cache.kl, scale=beta, ws=ws)
        dlogits = model.recon_term.backward(xp, cache.recon, ws)                       # (B, D)
        dz = model.decoder_backward(dlogits, cache.decoder, ws)                        # (B, Z)
        if dz_kl is not None:
            dz += dz_kl                   # the KL estimate -log p(z) reads the sample too
        dmu, dlogvar = layers.reparameterize_backward(xp, dz, cache.z, dmu=buffer(ws, "z.dmu", dz.shape),
                                                      dlogvar=buffer(ws, "z.dlogvar", dz.shape))
        if dmu_kl is not None:
            dmu += dmu_kl
        dlogvar += dlogvar_kl
        model.encoder_backward(dmu, dlogvar, cache.encoder, ws)


class IWAECache(NamedTuple):
    encoder: object
    decoder: object
    bound: object          # iwae.BoundCache


class IWAE(Objective):
    """The negative IWAE bound with K samples per image (Burda et al. 2015): math in iwae.py.

    The decoder runs once on all K * B samples as one batch, each with its image's label; the
    log-weights are iwae.log_weights, the same function evaluation's bound uses.
    """
    name = "iwae"
    description = "the importance-weighted bound on K samples per image (Burda et al. 2015)"
    takes_samples = True
    bound_columns = ("train_iwae", "test_iwae")
    noun = "the IWAE objective"

    def noise_shape(self, samples, batch, latent_dim):
        return (samples, batch, latent_dim)

    def check_noise(self, eps, batch, latent_dim):
        if eps.ndim != 3 or eps.shape[1:] != (batch, latent_dim) or eps.shape[0] < 1:
            raise ValueError(f"eps for the IWAE objective must have shape (K, {batch}, {latent_dim}), "
                             f"got {tuple(eps.shape)}")

    def title(self, samples=None):
        return "IWAE bound" + ("" if samples is None else f" with K = {samples}")

    def loss_name(self, samples):
        return f"IWAE-{samples} loss"

    def forward(self, model, x, eps, y_hot=None, beta=1.0, ws=None, visit=None):
        xp = model.xp
        K, B, Z = eps.shape
        mu, logvar, encoder_cache = model.encoder_forward(x, y_hot, ws, visit)        # (B, Z) each
        z, std = iwae.sample(xp, mu, logvar, eps, ws)                                  # (K, B, Z)
        logits, decoder_cache = model.decoder_forward(z.reshape(K * B, Z), model.repeat_rows(y_hot, K, ws),
                                                      ws, visit)                       # (K * B, D)
        loss, recon, kl, bound_cache = iwae.forward(model, x, logits, z, eps, logvar, std, ws, visit)
        return (loss, recon, kl), IWAECache(encoder_cache, decoder_cache, bound_cache)

    def backward(self, model, cache, beta=1.0, ws=None):
        dlogits = iwae.backward_logits(model, cache.bound, ws)                         # (K * B, D), weighted
        dz = model.decoder_backward(dlogits, cache.decoder, ws)                        # (K * B, Z)
        dmu, dlogvar = iwae.backward_latents(model, dz, cache.bound, ws)               # (B, Z) each
        model.encoder_backward(dmu, dlogvar, cache.encoder, ws)


# Adding an objective: write its class above, then add it here.
OBJECTIVES = {objective.name: objective for objective in (ELBO(), IWAE())}
DEFAULT = "elbo"        # what a step trains on unless told: the seed's objective


def get_objective(name):
    """The registered objective called `name`; ValueError naming the choices otherwise."""
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {name!r}")
    return OBJECTIVES[name]
