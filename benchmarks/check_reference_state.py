"""Check a PyTorch autograd VAE against a numpyvae reference state: another implementation checking itself.

    numpyvae reference-state --out ref.npz --batch-size 4 [--arch conv ...]
    python benchmarks/check_reference_state.py ref.npz [--tolerance 1e-8]

This file is what an outside implementation does with the reference state (docs/reference-state.md),
llm.c's test_gpt2.c in PyTorch: it imports nothing from numpyvae. It rebuilds the network from the
file's `config` and the architecture rules the format document states (layer names, kernel 3,
stride 2, padding 1), loads `params/*`, runs the step on `x`, `eps` (and `y`) with autograd, and
compares loss, recon, kl and every gradient with the file's. It prints a table and exits 1 when any
number is off by more than the tolerance, 2 when the file cannot be read or describes a network
this checker does not build.

Relative error, per entry, with a floor so that entries that cancel to nearly nothing are judged
against the tensor's scale rather than against their own rounding (CS231n's rel_error, floored):
    rel_i = |a_i - b_i| / max(|a_i| + |b_i|, FLOOR * max_j (|a_j| + |b_j|)),   reported: max_i rel_i
Two float64 implementations of the same step agree to ~1e-12; a gradient 1e-3 off is ~5e-4.

Shapes: B = batch, D = pixels, C = classes, K = samples per image, Z = latent.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

TOLERANCE = 1e-7
FLOOR = 1e-6
KERNEL, STRIDE, PADDING = 3, 2, 1          # every convolution of the conv architecture


class BadFile(Exception):
    """The file cannot be checked: missing keys, an architecture or likelihood this checker does not know."""


# -- the reconstruction terms, per pixel (summed by the caller) ------------------------------------------

SERIES_BELOW = 1e-2


def continuous_bernoulli(logits, x):
    """-log p(x | l) = softplus(l) - x l - log C(l), C(l) = l / tanh(l / 2) (Loaiza-Ganem & Cunningham 2019).

    Written here from the paper, not taken from torch.distributions.ContinuousBernoulli, whose
    normalizer, computed from the probabilities, is ~1e-8 off near l = 0. log C is 0/0 at l = 0,
    so below |l| = SERIES_BELOW it is its Taylor series (the next term, ~l^8 / 40000, is below rounding).
    """
    small = logits.abs() < SERIES_BELOW
    safe = torch.where(small, torch.ones_like(logits), logits.abs())   # no 0/0, not even in the unused branch
    exact = torch.log(safe) - torch.log(torch.tanh(safe / 2))
    l2 = logits * logits
    series = math.log(2) + l2 / 12 - 7 * l2 ** 2 / 1440 + 31 * l2 ** 3 / 90720
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")   # softplus(l) - x l
    return bce - torch.where(small, series, exact)


RECONSTRUCTION = {
    "bernoulli": lambda logits, x: F.binary_cross_entropy_with_logits(logits, x, reduction="none"),
    "gaussian": lambda logits, x: (torch.sigmoid(logits) - x) ** 2,
    "continuous-bernoulli": continuous_bernoulli,
}


# -- the network, from the config --------------------------------------------------------------------------

class Network:
    """The four parts of the VAE as functions of a dict of parameter tensors, named as in the file."""

    def __init__(self, config):
        self.arch = config["arch"]
        self.shape = tuple(config["input_shape"])             # one image (channels, height, width)
        self.hidden = tuple(config["hidden_dims"])
        self.C, self.Z = int(config["num_classes"]), int(config["latent_dim"])
        self.D = math.prod(self.shape)
        if self.arch == "dense":
            self.shapes = self._dense_shapes()
        elif self.arch == "conv":
            self.shapes = self._conv_shapes()
        else:
            raise BadFile(f"architecture {self.arch!r}: this checker builds dense and conv only")

    # dense: enc, enc2, ... ReLU layers; mu and logvar heads; dec, dec2, ... ReLU layers; out
    def _dense_shapes(self):
        shapes, width = {}, self.D + self.C
        self.enc_names = ["enc"] + [f"enc{i}" for i in range(2, len(self.hidden) + 1)]
        for name, H in zip(self.enc_names, self.hidden):
            shapes[f"{name}.W"], shapes[f"{name}.b"], width = (width, H), (H,), H
        for head in ("mu", "logvar"):
            shapes[f"{head}.W"], shapes[f"{head}.b"] = (width, self.Z), (self.Z,)
        self.dec_names = ["dec"] + [f"dec{i}" for i in range(2, len(self.hidden) + 1)]
        width = self.Z + self.C
        for name, H in zip(self.dec_names, reversed(self.hidden)):
            shapes[f"{name}.W"], shapes[f"{name}.b"], width = (width, H), (H,), H
        shapes["out.W"], shapes["out.b"] = (width, self.D), (self.D,)
        return shapes

    # conv: enc.conv1, ... (k3 s2 p1, ReLU), flatten; heads; dec (Linear, ReLU), dec.deconv1, ... back up
    def _conv_shapes(self):
        shapes, (channels, h, w) = {}, self.shape
        self.sizes = []                                        # (channels, h, w) entering each convolution
        for i, out in enumerate(self.hidden, 1):
            self.sizes.append((channels, h, w))
            shapes[f"enc.conv{i}.W"], shapes[f"enc.conv{i}.b"] = (out, channels, KERNEL, KERNEL), (out,)
            h, w = ((n + 2 * PADDING - KERNEL) // STRIDE + 1 for n in (h, w))
            channels = out
        self.top = (channels, h, w)
        self.F = channels * h * w
        for head in ("mu", "logvar"):
            shapes[f"{head}.W"], shapes[f"{head}.b"] = (self.F + self.C, self.Z), (self.Z,)
        shapes["dec.W"], shapes["dec.b"] = (self.Z + self.C, self.F), (self.F,)
        self.output_padding = []
        for i, (target_channels, th, tw) in enumerate(reversed(self.sizes), 1):
            shapes[f"dec.deconv{i}.W"] = (channels, target_channels, KERNEL, KERNEL)
            shapes[f"dec.deconv{i}.b"] = (target_channels,)
            # the transposed convolution gives back exactly the size its convolution started from
            pads = {t - ((n - 1) * STRIDE - 2 * PADDING + KERNEL) for t, n in ((th, h), (tw, w))}
            if len(pads) != 1:
                raise BadFile(f"input_shape {self.shape}: height and width need the same output padding")
            self.output_padding.append(pads.pop())
            channels, h, w = target_channels, th, tw
        return shapes

    def with_labels(self, a, y_hot):
        return a if y_hot is None else torch.cat([a, y_hot], dim=1)

    def encode(self, p, x, y_hot):
        """x (B, D) -> mu, logvar (B, Z)."""
        if self.arch == "dense":
            h = self.with_labels(x, y_hot)
            for name in self.enc_names:
                h = torch.relu(h @ p[f"{name}.W"] + p[f"{name}.b"])
        else:
            h = x.reshape((x.shape[0],) + self.shape)
            for i in range(1, len(self.hidden) + 1):
                h = torch.relu(F.conv2d(h, p[f"enc.conv{i}.W"], p[f"enc.conv{i}.b"], stride=STRIDE, padding=PADDING))
            h = self.with_labels(h.reshape(x.shape[0], -1), y_hot)
        return h @ p["mu.W"] + p["mu.b"], h @ p["logvar.W"] + p["logvar.b"]

    def decode(self, p, z, y_hot):
        """z (N, Z) -> logits (N, D)."""
        g = self.with_labels(z, y_hot)
        if self.arch == "dense":
            for name in self.dec_names:
                g = torch.relu(g @ p[f"{name}.W"] + p[f"{name}.b"])
            return g @ p["out.W"] + p["out.b"]
        g = torch.relu(g @ p["dec.W"] + p["dec.b"]).reshape((z.shape[0],) + self.top)
        last = len(self.hidden)
        for i in range(1, last + 1):
            g = F.conv_transpose2d(g, p[f"dec.deconv{i}.W"], p[f"dec.deconv{i}.b"], stride=STRIDE, padding=PADDING,
                                   output_padding=self.output_padding[i - 1])
            if i < last:
                g = torch.relu(g)
        return g.reshape(z.shape[0], -1)


# -- the step ---------------------------------------------------------------------------------------------

def step(config, net, p, x, eps, y):
    """(loss, recon, kl) of the file's objective, as autograd tensors (docs/reference-state.md)."""
    recon_term = RECONSTRUCTION.get(config["likelihood"])
    if config.get("sigma", "fixed") != "fixed":
        raise BadFile(f"sigma {config['sigma']!r}: this checker knows the fixed Gaussian only (TorchVAE has the rest)")
    if recon_term is None:
        raise BadFile(f"likelihood {config['likelihood']!r}: this checker knows {', '.join(RECONSTRUCTION)}")
    y_hot = None if y is None else F.one_hot(y, net.C).to(x.dtype)
    mu, logvar = net.encode(p, x, y_hot)                                   # (B, Z) each
    std = torch.exp(0.5 * logvar)
    if config["objective"] == "elbo":
        z = mu + std * eps                                                 # (B, Z)
        recon = recon_term(net.decode(p, z, y_hot), x).sum()
        kl = 0.5 * torch.sum(mu ** 2 + torch.exp(logvar) - 1 - logvar)     # Kingma & Welling, App. B
        return recon + config["beta"] * kl, recon, kl
    if config["objective"] != "iwae":
        raise BadFile(f"objective {config['objective']!r}: this checker knows elbo and iwae")
    K, B, Z = eps.shape
    z = mu + std * eps                                                     # (K, B, Z)
    rows = None if y_hot is None else y_hot.repeat(K, 1)                   # row k * B + b is image b's label
    logits = net.decode(p, z.reshape(K * B, Z), rows).reshape(K, B, -1)
    recon_kb = recon_term(logits, x.expand(K, B, -1)).sum(-1)              # (K, B) -log p(x | z)
    normal = torch.distributions.Normal
    log_q_minus_log_p = (normal(mu, std).log_prob(z) - normal(0.0, 1.0).log_prob(z)).sum(-1)   # (K, B)
    log_w = -recon_kb - log_q_minus_log_p
    loss = -(torch.logsumexp(log_w, 0) - math.log(K)).sum()
    return loss, recon_kb.sum() / K, log_q_minus_log_p.sum() / K


# -- reading and comparing ------------------------------------------------------------------------------

def load(path):
    """(config, {key: array}) from the .npz file; BadFile for anything that is not a reference state."""
    try:
        if not zipfile.is_zipfile(path):        # np.load would read a .npy, or call anything else pickled data
            open(path, "rb").close()            # a missing or unreadable file: its own OSError below
            raise BadFile(f"{path} is not an .npz file (an .npz is a zip archive of .npy files)")
        with np.load(path, allow_pickle=False) as file:
            arrays = {key: file[key] for key in file.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise BadFile(f"cannot read {path} as an .npz file ({error})") from None
    missing = [key for key in ("config", "x", "eps", "loss", "recon", "kl") if key not in arrays]
    if missing:
        raise BadFile(f"{path} is no reference state: it lacks {', '.join(missing)}")
    try:
        config = json.loads(bytes(arrays["config"].astype(np.uint8)).decode())
    except ValueError as error:
        raise BadFile(f"{path}'s config is not JSON ({error})") from None
    return config, arrays


def rel_error(a, b):
    """max_i |a_i - b_i| / max(|a_i| + |b_i|, FLOOR * max_j (|a_j| + |b_j|)); 0 for two all-zero arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    size = np.abs(a) + np.abs(b)
    scale = size.max(initial=0.0)
    if scale == 0:
        return 0.0
    return float((np.abs(a - b) / np.maximum(size, FLOOR * scale)).max())


def check(path, tolerance=TOLERANCE):
    """[(name, shape, rel_error, passed)] for loss, recon, kl and every gradient of the file."""
    config, arrays = load(path)
    net = Network(config)
    given = {key[len("params/"):]: value for key, value in arrays.items() if key.startswith("params/")}
    if {n: tuple(v.shape) for n, v in given.items()} != net.shapes:
        theirs = {n: tuple(v.shape) for n, v in given.items()}
        odd = sorted(set(theirs.items()) ^ set(net.shapes.items()))
        raise BadFile(f"the file's parameters are not those of the {net.arch} network its config describes "
                      f"(first difference: {odd[0]})")
    params = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in given.items()}
    x = torch.tensor(arrays["x"], dtype=torch.float64)
    eps = torch.tensor(arrays["eps"], dtype=torch.float64)
    y = torch.tensor(arrays["y"], dtype=torch.int64) if "y" in arrays else None
    if (y is None) != (net.C == 0):
        raise BadFile("a conditional model needs labels y, and only a conditional model has them")
    loss, recon, kl = step(config, net, params, x, eps, y)
    loss.backward()
    rows = [(name, (), rel_error(value.item(), arrays[name])) for name, value in
            (("loss", loss), ("recon", recon), ("kl", kl))]
    for name, tensor in params.items():
        if f"grads/{name}" not in arrays:
            raise BadFile(f"the file has params/{name} but no grads/{name}")
        rows.append((f"grad {name}", tuple(tensor.shape), rel_error(tensor.grad.numpy(), arrays[f"grads/{name}"])))
    return [(name, shape, error, error <= tolerance) for name, shape, error in rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a reference state written by `numpyvae reference-state --out FILE`")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest relative error that passes (default {TOLERANCE:g})")
    args = parser.parse_args(argv)
    if not (args.tolerance > 0 and math.isfinite(args.tolerance)):
        parser.error(f"--tolerance must be a positive number, not {args.tolerance}")
    try:
        rows = check(args.file, args.tolerance)
    except BadFile as error:
        print(f"check_reference_state: error: {error}", file=sys.stderr)
        return 2
    width = max(len(name) for name, *_ in rows)
    print(f"{'':{width}}  {'shape':>18}  {'rel. error':>10}")
    for name, shape, error, passed in rows:
        print(f"{name:{width}}  {str(shape):>18}  {error:10.1e}  {'ok' if passed else 'FAIL'}")
    failed = [name for name, *_, passed in rows if not passed]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} agree within {args.tolerance:g}"
          + (f"; FAIL: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
