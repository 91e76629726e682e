"""The network as data: a ModelSpec says what to build, build_network turns it into layer lists.

    spec = ModelSpec(hidden_dims=(512, 256))          # or ModelSpec(arch="conv", num_classes=10)
    net = build_network(spec)                         # Network(features, encoder, heads, decoder)
    model = VAE(**spec.settings())                    # the VAE built from the same description

Every part of numpyvae that needs the network reads these lists: the VAE's forward and
backward, the parameter layout and initialization, gradcheck's ReLU pattern, and the tests'
PyTorch reference (benchmarks/torch_reference.py), which builds its modules entry by entry.
Each entry says the shape of one example's output from its input's (`output_shape`), so the
builders infer every width from the image shape and no size is written twice.

How the four lists are wired (vae.py), with the labels of a conditional VAE joining after
the features and beside z:

    x (B, D) -> features -> f (B, F) -> [f, onehot(y)] (B, F + K) -> encoder -> h -> heads -> mu, logvar (B, Z)
    z (B, Z) -> [z, onehot(y)] (B, Z + K) -> decoder -> logits (B, D)

Shapes: B = batch, D = pixels, F = features, K = classes, Z = latent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, NamedTuple

import numpy as np

from numpyvae import losses, priors
from numpyvae.conv import Conv2d, ConvTranspose2d
from numpyvae.layers import Flatten, Linear, ReLU, Reshape, output_shape

MNIST_SHAPE = (1, 28, 28)       # one Fashion-MNIST image: channels, height, width


class Network(NamedTuple):
    """The layer lists of one VAE, in flat-buffer (and forward) order."""
    features: list     # x (B, D) -> f (B, F), before the labels join: the conv trunk ([] for dense)
    encoder: list      # [f, onehot(y)] -> h
    heads: list        # h -> mu, h -> logvar: two Linears reading the same h
    decoder: list      # [z, onehot(y)] -> logits (B, D)

    @property
    def layers(self):
        return self.features + self.encoder + self.heads + self.decoder


class Architecture(NamedTuple):
    build: Callable          # ModelSpec -> Network
    hidden_dims: tuple       # what hidden_dims means by default
    meaning: str             # what hidden_dims means, for help texts and errors


@dataclass(frozen=True)
class ModelSpec:
    """What network to build: every setting of the model, none of where or how it runs.

    VAE(**spec.settings()) builds it; TrainConfig stores the same names in config.json.
    """
    input_shape: tuple = MNIST_SHAPE   # one image, channels first; a dense model also takes (D,)
    arch: str = "dense"                # a name in ARCHITECTURES
    hidden_dims: tuple | None = None   # dense: widths of the hidden layers; conv: channels; None: the arch's default
    latent_dim: int = 20               # Z
    likelihood: str = "bernoulli"      # a name in losses.LIKELIHOODS
    num_classes: int = 0               # K > 0: a conditional VAE reading one-hot labels
    prior: str = "normal"              # a name in priors.PRIORS: "normal" N(0, I), or "vamp" the VampPrior
    pseudo_inputs: int = priors.DEFAULT_PSEUDO_INPUTS   # the VampPrior's K components (unused by "normal")
    sigma: str = "fixed"               # the Gaussian decoder's: "fixed", "learned" or "optimal" (losses.SIGMAS)

    def __post_init__(self):
        # JSON gives lists; a spec holds tuples, so specs (and configs) compare equal
        for name in ("input_shape", "hidden_dims"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.hidden_dims is None and self.arch in ARCHITECTURES:
            object.__setattr__(self, "hidden_dims", ARCHITECTURES[self.arch].hidden_dims)
        self.check()

    def check(self):
        """Raise ValueError naming the first setting that cannot work."""
        likelihood = losses.get_likelihood(self.likelihood)
        if not isinstance(self.sigma, str) or self.sigma not in losses.SIGMAS:
            raise ValueError(f"sigma must be one of {', '.join(losses.SIGMAS)}, not {self.sigma!r}")
        if self.sigma not in likelihood.sigmas:
            raise ValueError(f"sigma {self.sigma!r} is the Gaussian decoder's (likelihood 'gaussian', --likelihood "
                             f"gaussian): likelihood {self.likelihood!r} has no sigma to calibrate")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, not {self.arch!r}")
        for name in ("input_shape", "hidden_dims"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value or not all(_is_count(v, 1) for v in value):
                raise ValueError(f"{name} must be one or more positive integers, not {value!r}")
        if not _is_count(self.latent_dim, 1):
            raise ValueError(f"latent_dim must be a positive integer, not {self.latent_dim!r}")
        if not _is_count(self.num_classes, 0):
            raise ValueError(f"num_classes must be 0 (no labels) or a positive integer, not {self.num_classes!r}")
        if not isinstance(self.prior, str) or self.prior not in priors.PRIORS:
            raise ValueError(f"prior must be one of {', '.join(priors.PRIORS)}, not {self.prior!r}")
        if not _is_count(self.pseudo_inputs, 1):
            raise ValueError(f"pseudo_inputs must be a positive integer, not {self.pseudo_inputs!r}")
        priors.PRIORS[self.prior].check(self)
        if self.arch == "conv" and len(self.input_shape) != 3:
            raise ValueError(f"a conv VAE reads images (channels, height, width), not input_shape {self.input_shape}")

    @property
    def input_dim(self):
        """D: numbers per image, as the model reads them (one row per image)."""
        return math.prod(self.input_shape)

    def settings(self):
        """The settings as VAE(**settings) and TrainConfig take them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self):
        """A few words for banners and errors: "784-400-20 VAE", "conv 1x28x28-32-64-20 conditional (10 classes) VAE"."""
        sizes = "-".join(map(str, (self.input_dim, *self.hidden_dims, self.latent_dim)))
        if self.arch == "conv":
            sizes = "-".join(map(str, ("x".join(map(str, self.input_shape)), *self.hidden_dims, self.latent_dim)))
        kind = "" if self.arch == "dense" else f"{self.arch} "
        conditional = f"conditional ({self.num_classes} classes) " if self.num_classes else ""
        sigma = f" ({self.sigma} sigma)" if self.sigma != "fixed" else ""
        return f"{kind}{sizes} {conditional}VAE{priors.PRIORS[self.prior].describe(self)}{sigma}"


SETTINGS = tuple(f.name for f in fields(ModelSpec))


def _is_count(value, minimum):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def legacy_input_shape(input_dim):
    """The input_shape older code meant by input_dim D: a square grey image (1, s, s) if D = s^2, else (D,)."""
    if not _is_count(input_dim, 1):
        raise ValueError(f"input_dim must be a positive integer, not {input_dim!r}")
    side = math.isqrt(input_dim)
    return (1, side, side) if side * side == input_dim else (int(input_dim),)


def make_spec(input_dim=None, hidden_dim=None, *, input_shape=None, hidden_dims=None, **settings):
    """A ModelSpec from settings, reading the older names too: input_dim D and one hidden_dim H.

    VAE(784, 400, 20) and a config.json written before `arch` existed both come through here:
    input_dim D is the image legacy_input_shape(D), hidden_dim H is hidden_dims (H,), a dense model.
    """
    if input_dim is not None:
        shape = legacy_input_shape(input_dim)
        if input_shape is not None and math.prod(input_shape) != input_dim:
            raise ValueError(f"input_dim {input_dim} disagrees with input_shape {tuple(input_shape)}")
        input_shape = input_shape if input_shape is not None else shape
    if hidden_dim is not None:
        if not _is_count(hidden_dim, 1):
            raise ValueError(f"hidden_dim must be a positive integer, not {hidden_dim!r}")
        arch = settings.get("arch", "dense")
        if arch != "dense":
            raise ValueError(f"hidden_dim is the dense model's one hidden width and means nothing for arch "
                             f"{arch!r}; give hidden_dims ({ARCHITECTURES[arch].meaning})"
                             if arch in ARCHITECTURES else f"arch must be one of {', '.join(ARCHITECTURES)}, "
                                                            f"not {arch!r}")
        if hidden_dims is not None and tuple(hidden_dims) != (hidden_dim,):
            raise ValueError(f"hidden_dim {hidden_dim} disagrees with hidden_dims {tuple(hidden_dims)}")
        hidden_dims = (hidden_dim,)
    return ModelSpec(input_shape=MNIST_SHAPE if input_shape is None else input_shape,
                     hidden_dims=hidden_dims, **settings)


def build_network(spec):
    """The spec's Network, its widths inferred from spec.input_shape layer by layer."""
    network = ARCHITECTURES[spec.arch].build(spec)
    D, K, Z = spec.input_dim, spec.num_classes, spec.latent_dim
    # the shapes must chain: a builder's mistake is caught here, before any array exists
    features = output_shape(network.features, (D,))
    h = output_shape(network.encoder, (features[0] + K,))
    for head in network.heads:
        if head.output_shape(h) != (Z,):
            raise ValueError(f"head {head.name} gives {head.output_shape(h)}, not ({Z},)")
    if output_shape(network.decoder, (Z + K,)) != (D,):
        raise ValueError(f"the {spec.arch} decoder does not give back ({D},) per image")
    return network


def widest_row(spec, network=None):
    """The most numbers one image occupies in any array its decoder builds: sizes evaluation's chunks.

    For a dense decoder that is its widest layer; a convolution's patch matrix holds k * k
    numbers per pixel of its smaller image and channel of its larger one.
    """
    network = network or build_network(spec)
    widest, shape = spec.input_dim, (spec.latent_dim + spec.num_classes,)
    for layer in network.decoder:
        out = layer.output_shape(shape)
        widest = max(widest, math.prod(out))
        if hasattr(layer, "kernel_size"):
            small, big = (shape, out) if math.prod(shape[1:]) <= math.prod(out[1:]) else (out, shape)
            widest = max(widest, layer.kernel_size ** 2 * math.prod(small[1:]) * big[0])
        shape = out
    return widest


# -- the architectures ------------------------------------------------------------------------

def dense_network(spec):
    """The seed's fully connected VAE, one ReLU layer per width in hidden_dims.

    The default, hidden_dims (400,), is 784-400-20: enc, then the mu and logvar heads, then dec and out.
    Deeper models name their extra layers enc2, enc3, ... and dec2, dec3, ...
    """
    D, K, Z = spec.input_dim, spec.num_classes, spec.latent_dim
    names = ["enc"] + [f"enc{i}" for i in range(2, len(spec.hidden_dims) + 1)]
    encoder, width = [], D + K                                   # [x, y] (B, D + K) -> h (B, H_last)
    for name, H in zip(names, spec.hidden_dims):
        encoder += [Linear(name, width, H), ReLU(f"{name}.relu")]
        width = H
    heads = [Linear("mu", width, Z), Linear("logvar", width, Z)]
    decoder, width = [], Z + K                                   # [z, y] (B, Z + K) -> logits (B, D)
    for name, H in zip(["dec"] + [f"dec{i}" for i in range(2, len(spec.hidden_dims) + 1)],
                       reversed(spec.hidden_dims)):
        decoder += [Linear(name, width, H), ReLU(f"{name}.relu")]
        width = H
    decoder.append(Linear("out", width, D))
    return Network([], encoder, heads, decoder)


CONV_KERNEL, CONV_STRIDE, CONV_PADDING = 3, 2, 1     # each convolution halves the image (rounding up)


def conv_network(spec):
    """TensorFlow's CVAE tutorial shape: strided convolutions down, transposed convolutions back up.

    hidden_dims are the convolutions' channels; the default (32, 64) on a 1x28x28 image is
        features  conv 1->32 k3 s2 p1 (28->14), ReLU, conv 32->64 (14->7), ReLU, flatten (3136)
        heads     Linear(3136 + K, Z) for mu and for logvar
        decoder   Linear(Z + K, 3136), ReLU, reshape (64, 7, 7), transposed conv 64->32 (7->14), ReLU,
                  transposed conv 32->1 (14->28), flatten (784 logits)
    228,905 parameters at Z = 20. Each transposed convolution gets back exactly the size its
    convolution started from: output_padding adds the row a stride-2 convolution rounded away.
    """
    K, Z = spec.num_classes, spec.latent_dim
    features, shape, sizes = [Reshape("enc.image", spec.input_shape)], tuple(spec.input_shape), []
    for i, channels in enumerate(spec.hidden_dims, 1):
        conv = Conv2d(f"enc.conv{i}", shape[0], channels, CONV_KERNEL, CONV_STRIDE, CONV_PADDING)
        sizes.append(shape)
        shape = conv.output_shape(shape)
        features += [conv, ReLU(f"enc.conv{i}.relu")]
    F = math.prod(shape)
    features.append(Flatten("enc.flat", shape))                         # (B, C, H, W) -> (B, F)
    heads = [Linear("mu", F + K, Z), Linear("logvar", F + K, Z)]
    decoder = [Linear("dec", Z + K, F), ReLU("dec.relu"), Reshape("dec.image", shape)]
    for i, target in enumerate(reversed(sizes), 1):
        padding = [t - ((s - 1) * CONV_STRIDE - 2 * CONV_PADDING + CONV_KERNEL) for t, s in zip(target[1:], shape[1:])]
        if padding[0] != padding[1]:
            raise ValueError(f"a conv VAE needs images whose height and width are both even or both odd "
                             f"at every stride, not {spec.input_shape}")
        deconv = ConvTranspose2d(f"dec.deconv{i}", shape[0], target[0], CONV_KERNEL, CONV_STRIDE, CONV_PADDING,
                                 padding[0])
        shape = deconv.output_shape(shape)
        decoder.append(deconv)
        if i < len(sizes):
            decoder.append(ReLU(f"dec.deconv{i}.relu"))
    decoder.append(Flatten("dec.flat", shape))                          # (B, C, H, W) -> (B, D) logits
    return Network(features, [], heads, decoder)


ARCHITECTURES = {
    "dense": Architecture(dense_network, (400,), "the widths of the hidden layers, e.g. 512,256"),
    "conv": Architecture(conv_network, (32, 64), "the channels of the convolutions, e.g. 32,64"),
}
