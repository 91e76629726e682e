"""How good is a trained VAE: the test negative ELBO and an importance-weighted bound on -log p(x).

Two numbers, both in nats per image, both upper bounds on the negative log-likelihood
(and a count of the latent dimensions the model uses, below):

  negative ELBO   -E_q[log p(x|z)] + KL(q(z|x) || p(z)), the training loss, averaged here
                  over several posterior samples per image so the estimate is steadier;
  IWAE bound      -E[log (1/k) sum_i w_i],  w_i = p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)
                  (Burda, Grosse & Salakhutdinov 2016, eq. 8). It equals the ELBO at k = 1
                  and tightens towards -log p(x) as k grows, so it is never above the ELBO.

Active units (Burda et al. 2016, section 5.2): latent dimension u is active when
    A_u = Cov_x(E_q[z_u | x]) = the variance over the test set of mu_u(x)   exceeds 0.01:
a dimension whose posterior mean barely moves with x carries no information about x (its
posterior has collapsed onto the prior), whatever its posterior variance.

"log p(x|z)" is the model's likelihood (losses.LIKELIHOODS), the same code that gives the
training loss, so the two compare directly. They are bounds on -log p(x) only when that
likelihood is a normalized density (`normalized`); otherwise they are the same quantities
without that meaning (see losses.py for why Bernoulli on grey pixels and the seed's squared
error are not).

How long it takes: `forecast` times one forward pass and one decoder pass on a probe of the data,
here and now, and scales them to every pass an evaluation makes, so `numpyvae evaluate` says at its
start when it will be long (a conv model's takes minutes on a CPU) and what a quicker one would cost.

Everything runs forward only, on the model's backend, with sums kept on the device and
read once at the end. Shapes: N = test images, C = images per chunk, S = samples per block,
D = pixels, H = hidden, Z = latent.
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from numpyvae import iwae
from numpyvae.batches import DeviceDataset
from numpyvae.layers import reparameterize_forward
from numpyvae.network import widest_row

EVAL_SEED = 0          # the eps streams of every evaluation: the same noise for every run and epoch
BINARIZE_SEED = 0      # the one fixed binarization of the test set, shared by every run
EVAL_BATCH = 1000      # images per forward pass: speed, and (samples > 1) which noise each image draws
ELBO_SAMPLES = 10      # posterior samples per image for the reported negative ELBO
IW_SAMPLES = 100       # k for the IWAE bound (Burda et al. used 5000; the bound tightens slowly)
MAX_ELEMENTS = 2 ** 22  # largest (rows, D) array the IWAE bound builds: 16 MB in float32
ACTIVE_THRESHOLD = 0.01  # Burda et al.'s: a unit whose posterior mean varies less than this over x is inactive
PROBE_IMAGES = 200     # images timed before an evaluation to forecast how long it takes
FORECAST_SECONDS = 30  # an evaluation forecast to take longer says so at its start (a conv one takes minutes)
QUICK_SAMPLES, QUICK_IW_SAMPLES = 1, 10   # the quicker, looser evaluation a long forecast offers


def binarize_fixed(images, seed=BINARIZE_SEED):
    """uint8 images -> uint8 images of 0 and 255, each pixel on with probability pixel / 255.

    For runs trained with --binarize: the test set is binarized once, with a fixed seed,
    so every epoch and every run is scored against the same binary images.
    """
    rng = np.random.default_rng(seed)
    on = rng.random(images.shape, dtype=np.float32) < images / np.float32(255)
    return on.astype(np.uint8) * np.uint8(255)


def test_dataset(images, backend, dtype, binarize=False, labels=None):
    """The test images (and labels, for a conditional model) as a DeviceDataset, binarized once
    when the run trained on binary pixels."""
    return DeviceDataset(binarize_fixed(images) if binarize else images, backend, dtype, labels=labels)


def negative_elbo(model, data, samples=1, batch_size=EVAL_BATCH, seed=EVAL_SEED, progress=None):
    """Per-image test loss, reconstruction and KL (beta = 1), averaged over `samples` draws of eps.

    data: a DeviceDataset. The eps stream is seeded by `seed` alone, so the same model and
    data give the same numbers every time (train.py calls this with samples=1 each epoch).
    progress(stage, images_done, images) is called after each batch, if given.
    Returns {"loss": ..., "recon": ..., "kl": ...} as Python floats.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    model = model.held()          # scored with its parameters as stored (an optimal sigma: training's last)
    xp = model.xp
    rng = model.backend.rng((seed, 1))
    sums = xp.zeros(3, dtype=np.float64)          # loss, recon, KL summed over images and samples
    done = 0
    for x, y in data.labeled_batches(batch_size):
        for _ in range(samples):
            total, recon, kl = model.loss(x, rng=rng, y=y)
            sums[0] += total
            sums[1] += recon
            sums[2] += kl
        done += x.shape[0]
        if progress is not None:
            progress(f"negative ELBO, {samples} samples", done, len(data))
    loss, recon, kl = model.backend.to_host(sums) / (len(data) * samples)   # the one sync point
    return {"loss": float(loss), "recon": float(recon), "kl": float(kl)}


def log_weights(model, x, mu, logvar, eps, y=None):
    """log w = log p(x|z) + log p(z) - log q(z|x) for z = mu + eps * exp(logvar / 2): iwae.log_weights,
    the function training's bound uses, on fresh arrays.

    x (C, D); mu, logvar (C, Z); eps (S, C, Z); labels y (C,) for a conditional model -> (S, C).
    (For a conditional model every term is conditioned on y, and the bound is on -log p(x | y).)
    """
    S, C, Z = eps.shape
    z, _ = reparameterize_forward(model.xp, mu, logvar, eps)              # (S, C, Z)
    y_rows = None if y is None else model.xp.tile(y, S)                   # (S * C,) the label of each row
    logits = model.decode_logits(z.reshape(S * C, Z), y_rows)             # (S * C, D)
    return iwae.log_weights(model, x, logits, z, eps, logvar)[0]


def chunk_sizes(k, dim, max_elements=MAX_ELEMENTS):
    """(images per chunk C, samples per block S) so that S * C * dim <= max_elements (at least 1 row)."""
    rows = max(1, max_elements // dim)
    if k <= rows:
        return rows // k, k
    return 1, rows


class RunningLogSumExp:
    """log sum_i exp(a_i) over blocks of a_i arriving one at a time, without overflow.

    Keeps m = the largest a seen and s = sum exp(a - m); a new block with a larger
    maximum rescales s. Works on arrays: one running value per column (image).
    """

    def __init__(self, xp, shape):
        self.xp = xp
        self.m = xp.full(shape, -np.inf, dtype=np.float64)
        self.s = xp.zeros(shape, dtype=np.float64)

    def add(self, block):                           # block (S, C)
        xp = self.xp
        block = block.astype(np.float64)
        m = xp.maximum(self.m, block.max(axis=0))                           # (C,)
        self.s = self.s * xp.exp(self.m - m) + xp.exp(block - m).sum(axis=0)
        self.m = m

    def value(self):
        return self.m + self.xp.log(self.s)


def importance_weighted_bound(model, data, k=IW_SAMPLES, seed=EVAL_SEED, max_elements=MAX_ELEMENTS, progress=None):
    """Per-image average of log (1/k) sum_i w_i over `data`: a lower bound on log p(x).

    Memory stays bounded for any k and any N: images go through in chunks of C, samples
    in blocks of S, and a running logsumexp (in float64) combines the blocks, so the
    largest array is (S * C, W) with S * C * W <= max_elements, W the widest row the
    decoder builds (network.widest_row: D for the dense model, a patch matrix for a conv one).
    progress(stage, images_done, images) is called after each chunk, if given.
    Returns the bound as a Python float (negate it for the NLL estimate).
    """
    if k < 1:
        raise ValueError(f"the number of importance samples must be at least 1, not {k}")
    model = model.held()          # scored with its parameters as stored (an optimal sigma: training's last)
    xp, backend = model.xp, model.backend
    rng = backend.rng((seed, 2))
    images_per_chunk, samples_per_block = chunk_sizes(k, widest_row(model.spec, model.network), max_elements)
    total = xp.zeros((), dtype=np.float64)
    done = 0
    for x, y in data.labeled_batches(images_per_chunk):
        mu, logvar = model.encode(x, y)                                     # (C, Z) each
        lse = RunningLogSumExp(xp, (x.shape[0],))
        for start in range(0, k, samples_per_block):
            S = min(samples_per_block, k - start)
            eps = backend.standard_normal(rng, xp.empty((S, x.shape[0], model.latent_dim), dtype=model.dtype))
            lse.add(log_weights(model, x, mu, logvar, eps, y))             # (S, C)
        total += (lse.value() - math.log(k)).sum()
        done += x.shape[0]
        if progress is not None:
            progress(f"IWAE bound, k = {k}", done, len(data))
    return backend.scalar(total) / len(data)


def latent_activity(model, data, batch_size=EVAL_BATCH):
    """Var over `data` of each posterior mean mu_u(x) (Z,), as a host float64 array: A_u in the docstring."""
    xp = model.xp
    means = [model.encode(x, y)[0] for x, y in data.labeled_batches(batch_size)]   # (C, Z) each
    mu = model.backend.to_host(xp.concatenate(means)).astype(np.float64)           # (N, Z), one copy to the host
    return mu.var(axis=0)                                                           # over images, ddof 0


def active_units(model, data, threshold=ACTIVE_THRESHOLD, batch_size=EVAL_BATCH):
    """How many latent dimensions are active: Var_x(mu_u(x)) > threshold (Burda et al.'s 0.01)."""
    return int((latent_activity(model, data, batch_size) > threshold).sum())


class PassTimes(NamedTuple):
    """Seconds per image of one pass, timed on a probe of the data (estimate_pass_times)."""
    forward: float         # encoder and decoder (model.loss)
    decoder: float         # the decoder alone

    def evaluation(self, images, elbo_samples=ELBO_SAMPLES, iw_samples=IW_SAMPLES):
        """Roughly how long `evaluate` takes on `images` images: elbo_samples whole forward passes
        (negative_elbo), an encoder pass and iw_samples decoder passes (the IWAE bound), and an encoder
        pass (active units), per image; the encoder's time is the forward's less the decoder's."""
        encoder = max(self.forward - self.decoder, 0.0)
        return images * (elbo_samples * self.forward + 2 * encoder + iw_samples * self.decoder)


def estimate_pass_times(model, data, probe=PROBE_IMAGES):
    """PassTimes of `model` on the first `probe` images of `data`, measured here and now (a busy
    machine is slower); zeros for no data."""
    x, y = next(iter(data.labeled_batches(min(probe, len(data)))), (None, None))
    if x is None:
        return PassTimes(0.0, 0.0)
    rng = model.backend.rng(EVAL_SEED)                                  # the model's own noise stream untouched
    model.loss(x[:2], rng=rng, y=None if y is None else y[:2])          # first-call costs out of the timing
    started = time.perf_counter()
    model.loss(x, rng=rng, y=y)
    model.backend.synchronize()
    forward = time.perf_counter() - started
    mu, _ = model.encode(x, y)
    started = time.perf_counter()
    model.decode_logits(mu, y)
    model.backend.synchronize()
    decoder = time.perf_counter() - started
    return PassTimes(forward / x.shape[0], decoder / x.shape[0])


def forecast(model, data, elbo_samples=ELBO_SAMPLES, iw_samples=IW_SAMPLES, probe=PROBE_IMAGES):
    """A line to print at the start of an evaluation forecast to take FORECAST_SECONDS or more, else None.

    It says how long, from a probe timed here and now, and how long the quicker, looser evaluation
    (--samples 1 --iw-samples 10) would take instead.
    """
    times = estimate_pass_times(model, data, probe)
    seconds = times.evaluation(len(data), elbo_samples, iw_samples)
    if seconds < FORECAST_SECONDS:
        return None
    quick = times.evaluation(len(data), QUICK_SAMPLES, QUICK_IW_SAMPLES)
    return (f"evaluating {len(data)} test images ({elbo_samples} ELBO samples and k = {iw_samples} importance "
            f"samples each) takes about {_duration(seconds)} here; --samples {QUICK_SAMPLES} --iw-samples "
            f"{QUICK_IW_SAMPLES} takes about {_duration(quick)}, for a noisier ELBO and a looser bound")


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"


def evaluate(model, data, elbo_samples=ELBO_SAMPLES, iw_samples=IW_SAMPLES, seed=EVAL_SEED,
             max_elements=MAX_ELEMENTS, progress=None):
    """Both numbers for `numpyvae evaluate`, as a dict ready for JSON (nats per image).

    progress(stage, images_done, images), if given, after every batch of either pass.
    """
    elbo = negative_elbo(model, data, samples=elbo_samples, seed=seed, progress=progress)
    bound = importance_weighted_bound(model, data, k=iw_samples, seed=seed, max_elements=max_elements,
                                      progress=progress)
    return {"test_images": len(data),
            "elbo_samples": elbo_samples, "test_loss": elbo["loss"],
            "test_recon": elbo["recon"], "test_kl": elbo["kl"],
            "iw_samples": iw_samples, "iwae_nll": -bound,
            "active_units": active_units(model, data), "latent_dim": model.latent_dim}
