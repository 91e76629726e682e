"""The decoder's output bias at the start of a run: as initialized (`default`), or at the training data's mean (`mean`).

`numpyvae train --init-output-bias mean` sets the bias of the decoder's last layer so that, before
any step, the decoder with all its weights' contributions removed draws the average training
image: the likelihood's mean at the bias is the training set's mean pixel. Lawson, Tucker, Dai &
Ranganath 2019 ("Energy-Inspired Models", their code google-research/google-research, `eim/`) do
this for every Bernoulli decoder: `eim/datasets.py` computes the mean of the training images
(`compute_mean`, then divided by 255, also when the pixels are binarized), and
`eim/models/base.py` (`conditional_bernoulli`) adds -log(1 / clip(mean, 1e-4, 0.9999) - 1), the
logit of the clipped mean, to the logits of an MLP whose own bias starts at zero. Adding a
constant to the logits or starting the bias there are the same model under Adam (the bias's
gradient, and so each of its steps, is the same either way).

What "the likelihood's mean is the data's mean" asks of the bias, per likelihood:
    bernoulli, gaussian     E[x | l] = sigmoid(l), so l = logit(m) = log(m / (1 - m));
    continuous-bernoulli    E[x | l] = 1/(1 - e^-l) - 1/l (losses.ContinuousBernoulli), which is
                            not sigmoid(l): logit(0.9) = 2.20, but its mean is 0.9 at l = 9.995,
                            and 1e-4 needs l = -1e4 where logit(1e-4) = -9.21.
All three means increase with l (the sigmoid does; the continuous Bernoulli's is the derivative of
its convex log-normalizer A(l), so its slope is the variance of x), so one bisection on the
likelihood's own `mean` solves E[x | l] = m for every pixel at once, and no likelihood is written
twice: for the first two it gives logit(m) to float64 precision, for the continuous Bernoulli the
value its mean needs.

Which numbers: the mean over the training images of each pixel's intensity in [0, 1], clipped
to [MEAN_CLIP, 1 - MEAN_CLIP] as Lawson et al. clip it (a pixel that is 0 in every image would
otherwise need l = -inf). With --binarize the same intensities: a binarized pixel is 1 with
probability equal to its intensity, so its mean is the intensity's mean, which is what the
Bernoulli learns. The output layer is found in the model's decoder list (network.py): the last
layer that owns parameters, with only reshapes after it, so that its output is the logits.
    dense   the Linear `out`, bias (D,): one value per pixel, from that pixel's mean;
    conv    the last transposed convolution, bias (C,), one per channel shared by all its pixels:
            from the mean of all the channel's pixels over all images (the channel's overall mean).
Only the bias moves; every weight is left as init_params drew it. A conditional model's bias is
shared by all classes, so it gets the mean over all classes. Applied once, when a run starts:
a resumed run's bias is the checkpoint's.

Shapes: N = training images, C = channels, D = pixels.
"""
from __future__ import annotations

import math

import numpy as np

from numpyvae.layers import Reshape

CHOICES = ("default", "mean")   # --init-output-bias: as init_params drew it, or at the training mean
MEAN_CLIP = 1e-4                # Lawson et al.'s clip of the mean, away from 0 and 1
LOGIT_LIMIT = 1e6               # bisection's bracket: every likelihood's mean at +-1e6 is within 1e-6 of 0 or 1
BISECTION_STEPS = 200           # halvings of the bracket: far more than float64 can resolve


def output_layer(decoder):
    """The decoder's last layer that owns parameters, checked to be followed by reshapes alone (its output
    is then the logits, in another shape). ValueError for a decoder where that is not so."""
    for index in reversed(range(len(decoder))):
        layer = decoder[index]
        if layer.parameters():
            after = decoder[index + 1:]
            if not all(isinstance(later, Reshape) for later in after):
                raise ValueError(f"the decoder's last layer with parameters, {layer.name}, is followed by "
                                 f"{', '.join(later.name for later in after)}: its bias does not set the logits")
            return layer
    raise ValueError("the decoder has no layer with parameters")


def logits_for_mean(likelihood, means):
    """l with likelihood.mean(l) == means, elementwise, in float64 (means in [MEAN_CLIP, 1 - MEAN_CLIP]).

    Bisection on [-LOGIT_LIMIT, LOGIT_LIMIT]: the mean increases with l, so where mean(mid) < m the
    answer is above mid. Each step halves every bracket; after BISECTION_STEPS the two ends are
    neighbouring floats.
    """
    means = np.asarray(means, dtype=np.float64)
    low, high = np.full_like(means, -LOGIT_LIMIT), np.full_like(means, LOGIT_LIMIT)
    with np.errstate(over="ignore"):          # sinh and exp of a large |l| overflow to inf, harmlessly
        for _ in range(BISECTION_STEPS):
            mid = (low + high) / 2
            below = likelihood.mean(np, mid) < means
            low, high = np.where(below, mid, low), np.where(below, high, mid)
    return (low + high) / 2


def training_means(images, bias_shape, input_shape):
    """The clipped mean intensity in [0, 1] that each entry of a bias of `bias_shape` is to give.

    images (N, ...) uint8 in 0..255. A bias with one entry per pixel gets each pixel's mean (reshaped
    to bias_shape); a bias with one entry per channel, the mean of all that channel's pixels.
    """
    pixels = np.asarray(images, dtype=np.float64).reshape((len(images),) + tuple(input_shape)) / 255   # (N, C, ...)
    if math.prod(bias_shape) == math.prod(input_shape):
        means = pixels.mean(axis=0).reshape(bias_shape)                     # (D,) per pixel
    elif tuple(bias_shape) == tuple(input_shape[:1]):
        means = pixels.mean(axis=tuple(a for a in range(pixels.ndim) if a != 1))   # (C,) per channel
    else:
        raise ValueError(f"an output bias of shape {tuple(bias_shape)} is neither per pixel nor per channel "
                         f"of images of shape {tuple(input_shape)}")
    return np.clip(means, MEAN_CLIP, 1 - MEAN_CLIP)


def initial_output_bias(model, images):
    """(name, values): the output bias's parameter name and the float64 values that make the
    likelihood's mean the training mean (see the module's docstring)."""
    name = f"{output_layer(model.decoder).name}.b"
    means = training_means(images, model.params[name].shape, model.input_shape)
    return name, logits_for_mean(model.recon_term, means)


def apply(choice, model, images):
    """Set the model's output bias as `choice` (one of CHOICES) says, from the training images (N, ...) uint8."""
    if choice not in CHOICES:
        raise ValueError(f"init_output_bias must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "mean":
        name, values = initial_output_bias(model, images)
        model.params[name][...] = model.backend.to_device(values, dtype=model.dtype)
