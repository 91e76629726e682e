"""Layer math as forward/backward pairs that hold no state: Linear, ReLU, Sigmoid, the reparameterization,
Concat and one_hot (a conditional VAE's labels), Reshape and Flatten, Conv2d and ConvTranspose2d.

Every layer is two functions, in CS231n's style:

    y, cache = relu_forward(xp, x)          # cache: only what backward will need
    dx = relu_backward(xp, dy, cache)       # dy = dLoss/dy  ->  dx = dLoss/dx (a vector-Jacobian product)

Nothing is remembered between calls: the caller keeps the cache and hands it back, so
the same functions serve training, evaluation and plotting, on any shape, in any order.
`xp` is the array namespace (numpy, cupy, or the fake device's), passed in, never global.

Buffers, in llm.c's style: every output may be written into a buffer the caller passes
(`out=`, `mask=`, ...). Training passes buffers from one `Workspace`, allocated at the
first step and reused after, so a training step allocates nothing; evaluation and plotting
pass none and get fresh arrays. Either way the arithmetic is the same.

The file, top to bottom: the pairs for Linear, ReLU, Sigmoid, the reparameterization and the
concatenation; then the entries of a model's layer lists (network.py builds them, vae.py runs them
with sequence_forward/backward): `Linear`, `ReLU`, `Reshape` and `Flatten`, each a name, the
parameters it owns and the forward/backward pair wired to them; then the convolutions, their
im2col/col2im machinery, and their entries `Conv2d` and `ConvTranspose2d`. The model calls the
rest directly: the reparameterization between encoder and decoder, the concatenation and one_hot
for a conditional VAE's labels. sigmoid_forward/backward are here for the gradient checks and for
readers: the model folds the output sigmoid into its likelihoods (losses.py).

Shapes: B = batch, I = inputs of a layer, O = outputs of a layer, Z = latent.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Workspace:
    """Named buffers allocated on first use and reused after: `ws.get(name, shape)`.

    One per model. A buffer is keyed by its name, shape and dtype, so a smaller last batch
    gets buffers of its own once and then reuses them too.
    """

    def __init__(self, xp, dtype):
        self.xp, self.dtype = xp, np.dtype(dtype)
        self._buffers = {}

    def get(self, name, shape, dtype=None):
        key = (name, tuple(shape), dtype)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = self.xp.empty(shape, dtype=dtype or self.dtype)
        return buffer


def buffer(ws, name, shape, dtype=None):
    """ws.get(name, shape, dtype), or None without a workspace (the functions then allocate)."""
    return None if ws is None else ws.get(name, shape, dtype)


# -- Linear ----------------------------------------------------------------------------------

class LinearCache(NamedTuple):
    x: object          # (B, I) the input: dW needs it (W itself is the parameter)


def linear_forward(xp, x, W, b, out=None):
    """y = x @ W + b.   x (B, I), W (I, O), b (O,) -> y (B, O), cache."""
    y = xp.matmul(x, W, out=out)
    y += b
    return y, LinearCache(x)


def linear_backward(xp, dy, cache, W, dW, db, dx=None, need_dx=True):
    """Fill dW (I, O) and db (O,) in place; return dx (B, I), or None when need_dx=False.

    From y_bj = sum_i x_bi W_ij + b_j:
        dL/dW = x^T @ dy     each weight collects x_bi * dy_bj over the batch
        dL/db = sum_b dy     the bias is added to every row
        dL/dx = dy @ W^T
    The first layer's input is data, so the model asks for no dx there.
    """
    xp.matmul(cache.x.T, dy, out=dW)
    dy.sum(axis=0, out=db)
    if not need_dx:
        return None
    return xp.matmul(dy, W.T, out=dx)


# -- ReLU ------------------------------------------------------------------------------------

class ReLUCache(NamedTuple):
    mask: object       # (B, O) bool, where the input was positive


def relu_forward(xp, x, out=None, mask=None):
    """y = max(x, 0), and the mask (y > 0), which is all backward needs."""
    y = xp.maximum(x, 0, out=out)
    mask = xp.greater(y, 0, out=mask)
    return y, ReLUCache(mask)


def relu_backward(xp, dy, cache, out=None):
    """dx = dy where x > 0, else 0. The derivative at exactly 0 is taken as 0, as PyTorch does."""
    # a bool mask keeps dy's dtype (an int mask would promote float32 to float64)
    return xp.multiply(dy, cache.mask, out=out)


# -- Sigmoid ---------------------------------------------------------------------------------

def sigmoid(xp, x, out=None):
    """sigmoid(x) = 1 / (1 + exp(-x)), never overflowing.

    exp(-x) overflows float32 for x < -88 (and warns). The identity
        sigmoid(x) = (1 + tanh(x / 2)) / 2
    needs no exp at all: tanh saturates at +-1 quietly, so logits of +-1000 give 1 and 0.
    Its error is absolute, about one rounding step of 1: very negative x (below about
    -17 in float32) gives exactly 0 where the true value is tiny but positive. That is
    all the losses need: sigmoid(l) - x and p (1 - p) care about absolute error.
    """
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


class SigmoidCache(NamedTuple):
    y: object          # the output: dy/dx = y (1 - y) needs nothing else


def sigmoid_forward(xp, x, out=None):
    y = sigmoid(xp, x, out=out)
    return y, SigmoidCache(y)


def sigmoid_backward(xp, dy, cache, out=None):
    """dx = dy * y * (1 - y)."""
    y = cache.y
    dx = xp.subtract(1, y, out=out)     # 1 - y
    dx *= y                             # y (1 - y)
    dx *= dy
    return dx


# -- the reparameterization trick ------------------------------------------------------------

class ReparameterizeCache(NamedTuple):
    eps: object        # (B, Z) the noise
    std: object        # (B, Z) exp(logvar / 2)


def reparameterize_forward(xp, mu, logvar, eps, std=None, z=None):
    """z = mu + eps * std with std = exp(logvar / 2): a sample of N(mu, diag(exp(logvar))).

    `logvar` is the log of the variance, so the standard deviation is exp(0.5 * logvar),
    not exp(logvar) (the seed blog post's bug: its KL reads the same number as a
    log-variance). eps ~ N(0, I) is drawn outside, so z is a deterministic,
    differentiable function of mu and logvar: the reparameterization trick.
    Broadcasts: mu, logvar (C, Z) with eps (S, C, Z) gives S samples per row.
    """
    std = xp.multiply(logvar, 0.5, out=std)
    xp.exp(std, out=std)
    z = xp.multiply(eps, std, out=z)
    z += mu
    return z, ReparameterizeCache(eps, std)


def reparameterize_backward(xp, dz, cache, dmu=None, dlogvar=None):
    """(dmu, dlogvar) from dz, all (B, Z).

    From z = mu + eps * exp(logvar / 2):
        dz/dmu     = 1                         ->  dmu     = dz
        dz/dlogvar = eps * exp(logvar / 2) / 2 ->  dlogvar = dz * eps * std / 2
    """
    if dmu is None:
        dmu = dz.copy()                 # its own array: the model adds the KL's share into it
    else:
        xp.copyto(dmu, dz)
    dlogvar = xp.multiply(dz, cache.eps, out=dlogvar)
    dlogvar *= cache.std
    dlogvar *= 0.5
    return dmu, dlogvar


# -- side by side: how a conditional VAE reads its label ---------------------------------------

class ConcatCache(NamedTuple):
    split: int         # columns of the first input


def concat_forward(xp, a, b, out=None):
    """[a, b]: a (B, I) and b (B, J) side by side -> (B, I + J)."""
    out = xp.concatenate((a, b), axis=1, out=out)
    return out, ConcatCache(a.shape[1])


def concat_backward(xp, dout, cache):
    """(da, db): each output column came from exactly one input column, so the gradient just splits.

    From out = [a, b], d out_bk / d a_bi = 1 where k = i (and 0 elsewhere), so da = dout[:, :I]
    and db = dout[:, I:]. The returned arrays are views of dout, no copies.
    """
    return dout[:, :cache.split], dout[:, cache.split:]


def one_hot(xp, labels, classes, out=None):
    """labels (B,) integers -> (B, C) bool rows, True in column labels[b] only.

    Bools, not floats: concat_forward writes them into a float buffer as 0 and 1.
    classes: xp.arange(C), made once by the caller, so that no step allocates it anew.
    """
    return xp.equal(labels[:, None], classes[None, :], out=out)


# -- the entries of a model's layer lists --------------------------------------------------------

class Linear:
    """A Linear layer named `name`: it owns `name.W` (fan_in, fan_out) and `name.b` (fan_out,)."""

    def __init__(self, name, fan_in, fan_out):
        self.name, self.fan_in, self.fan_out = name, fan_in, fan_out

    def parameters(self):
        """Name -> shape of what this layer owns, in flat-buffer order."""
        return {f"{self.name}.W": (self.fan_in, self.fan_out), f"{self.name}.b": (self.fan_out,)}

    def output_shape(self, input_shape):
        """The shape of one example's output, from its input's (the batch axis left out): (I,) -> (O,)."""
        if tuple(input_shape) != (self.fan_in,):
            raise ValueError(f"{self.name} takes ({self.fan_in},) inputs, not {tuple(input_shape)}")
        return (self.fan_out,)

    def forward(self, xp, params, x, ws=None):
        out = buffer(ws, f"{self.name}.y", (x.shape[0], self.fan_out))
        return linear_forward(xp, x, params[f"{self.name}.W"], params[f"{self.name}.b"], out=out)

    def backward(self, xp, params, grads, dy, cache, ws=None, need_dx=True):
        dx = buffer(ws, f"{self.name}.dx", cache.x.shape) if need_dx else None
        return linear_backward(xp, dy, cache, params[f"{self.name}.W"], grads[f"{self.name}.W"],
                               grads[f"{self.name}.b"], dx=dx, need_dx=need_dx)


class ReLU:
    """A ReLU named `name` (the name only labels its buffers; it owns no parameters)."""
    kink_at_zero = True     # not differentiable where its input is 0: gradcheck steps around it

    def __init__(self, name):
        self.name = name

    def parameters(self):
        return {}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, xp, params, x, ws=None):
        return relu_forward(xp, x, out=buffer(ws, f"{self.name}.y", x.shape),
                            mask=buffer(ws, f"{self.name}.mask", x.shape, bool))

    def backward(self, xp, params, grads, dy, cache, ws=None, need_dx=True):
        return relu_backward(xp, dy, cache, out=buffer(ws, f"{self.name}.dx", dy.shape))


class ReshapeCache(NamedTuple):
    input_shape: tuple  # (B, ...) what backward gives back


class Reshape:
    """Each example to `shape`: (B, ...) -> (B, *shape), a view (no copy, no parameters).

    Between a dense layer's (B, F) rows and a convolution's (B, C, H, W) images. Reshaping only
    renames the entries, so the gradient is dy with the input's shape: backward reshapes back.
    """

    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(shape)

    def parameters(self):
        return {}

    def output_shape(self, input_shape):
        if math.prod(input_shape) != math.prod(self.shape):
            raise ValueError(f"{self.name} cannot reshape {tuple(input_shape)} to {self.shape}")
        return self.shape

    def forward(self, xp, params, x, ws=None):
        return x.reshape((x.shape[0],) + self.shape), ReshapeCache(x.shape)

    def backward(self, xp, params, grads, dy, cache, ws=None, need_dx=True):
        return dy.reshape(cache.input_shape)


class Flatten(Reshape):
    """Each example to one row: (B, C, H, W) -> (B, C * H * W), as torch.nn.Flatten does."""

    def __init__(self, name, input_shape):
        super().__init__(name, (math.prod(input_shape),))


def output_shape(layers, input_shape):
    """The shape of one example after `layers`, inferred layer by layer (each checks its input)."""
    shape = tuple(input_shape)
    for layer in layers:
        shape = layer.output_shape(shape)
    return shape


def sequence_forward(xp, layers, params, x, ws=None, visit=None):
    """Run `layers` in order: (output, one cache per layer).

    visit(layer, x), if given, sees each layer's input first (gradcheck reads the ReLUs' inputs).
    """
    caches = []
    for layer in layers:
        if visit is not None:
            visit(layer, x)
        x, cache = layer.forward(xp, params, x, ws)
        caches.append(cache)
    return x, caches


def sequence_backward(xp, layers, params, grads, dy, caches, ws=None, need_dx=True):
    """Backward through `layers` in exactly the reverse order of sequence_forward; returns dx."""
    for index in reversed(range(len(layers))):
        first = index == 0
        dy = layers[index].backward(xp, params, grads, dy, caches[index], ws, need_dx=need_dx or not first)
    return dy


# -- Convolutions: Conv2d and ConvTranspose2d ------------------------------------------------------
#
# Shapes: B = batch, C = input channels, O = output channels, k = kernel size, s = stride,
# p = padding, H x W = input image, Ho x Wo = output image. Images are NCHW, (B, C, H, W),
# and weights are laid out as PyTorch's: Conv2d W (O, C, k, k), ConvTranspose2d W (C, O, k, k).
#
# A convolution is a matrix product in disguise. Unroll every k x k window of the (zero-padded)
# input into a column ("im2col"), and the convolution is one product of the weights, reshaped to
# (O, C k k), with that matrix of patches, (C k k, B Ho Wo). The patch matrix is built from a
# strided *view*: no Python loop over pixels. Every gradient is then a product too, plus the
# reverse of im2col ("col2im"), which adds each patch entry back onto the pixel it was read from.
#
# Inside, the products work on channels-outermost layouts: then the weights meet all B Ho Wo
# pixels of the batch in ONE large matrix product (one BLAS / cuBLAS call), and only a layer's
# input and output are transposed to and from NCHW. Two such layouts serve, for speed alone
# (the arithmetic is the same):
#   channels-first (C, B, H, W): to and from NCHW, H x W blocks move whole (cheap);
#   batch-last     (C, H, W, B): strided copies and adds over the image (im2col, col2im) move
#                  runs of B numbers at a time, where in NCHW they would move runs of Wo
#                  (7 here: NumPy pays per run), but the way back to NCHW costs more.
# col2im always works batch-last; im2col does when its patches outnumber the product's output
# enough to repay the dearer way back (patches_batch_last).

def check_conv_settings(kind, in_channels, out_channels, kernel_size, stride, padding, output_padding=0):
    """Raise ValueError, in one line, unless every setting is a whole number in its range."""
    for what, value, least in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                               ("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0),
                               ("output_padding", output_padding, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{kind}: {what} must be a whole number of at least {least}, got {value!r}")
    if output_padding >= stride:
        raise ValueError(f"{kind}: output_padding must be less than the stride ({stride}), got {output_padding}")


def conv_output_size(size, kernel_size, stride, padding):
    """Ho = (H + 2p - k) // s + 1: how many windows fit along one side of the padded image."""
    check_conv_settings("conv2d", 1, 1, kernel_size, stride, padding)
    out = (size + 2 * padding - kernel_size) // stride + 1
    if out < 1:
        raise ValueError(f"a {kernel_size}x{kernel_size} kernel does not fit a side of {size} "
                         f"pixels with padding {padding}")
    return out


def conv_transpose_output_size(size, kernel_size, stride, padding, output_padding):
    """Hout = (H - 1) s - 2p + k + output_padding: the size of the convolution input whose output is H."""
    check_conv_settings("conv_transpose2d", 1, 1, kernel_size, stride, padding, output_padding)
    out = (size - 1) * stride - 2 * padding + kernel_size + output_padding
    if out < 1:
        raise ValueError(f"padding {padding} leaves no output pixels for a side of {size}")
    return out


def _scratch(xp, ws, name, shape, dtype):
    """ws's buffer `name`, or a fresh array when there is no workspace."""
    return xp.empty(shape, dtype=dtype) if ws is None else ws.get(name, shape, dtype)


def channels_first(xp, x, out=None):
    """(B, C, H, W) -> (C, B, H, W), a contiguous copy: every H x W block moves in one piece."""
    B, C, H, W = x.shape
    out = xp.empty((C, B, H, W), dtype=x.dtype) if out is None else out
    xp.copyto(out, x.transpose(1, 0, 2, 3))
    return out


def batch_last(xp, x, out=None):
    """(B, C, H, W) -> (C, H, W, B), a contiguous copy."""
    B, C, H, W = x.shape
    out = xp.empty((C, H, W, B), dtype=x.dtype) if out is None else out
    xp.copyto(out, x.transpose(1, 2, 3, 0))
    return out


def from_channels_first(xp, a, out=None, bias=None):
    """(C, B, H, W) -> (B, C, H, W), plus bias[c] when given (the bias costs no extra pass)."""
    a = a.transpose(1, 0, 2, 3)
    out = xp.empty(a.shape, dtype=a.dtype) if out is None else out
    if bias is None:
        xp.copyto(out, a)
    else:
        xp.add(a, bias[:, None, None], out=out)
    return out


def from_batch_last(xp, a, out=None, scratch=None, bias=None):
    """(C, H, W, B) -> (B, C, H, W), plus bias[c] when given, through channels-first (C, B, H, W) in `scratch`.

    Two copies beat one here: the first transposes one channel's (H W, B) block at a time,
    small enough to stay in cache, the second moves whole H x W blocks.
    """
    C, H, W, B = a.shape
    scratch = xp.empty((C, B, H, W), dtype=a.dtype) if scratch is None else scratch
    xp.copyto(scratch, a.transpose(0, 3, 1, 2))
    return from_channels_first(xp, scratch, out=out, bias=bias)


def pad(xp, x, padding, out=None, batch_last=False):
    """x (B, C, H, W) with `padding` zeros around each image -> (B, C, H + 2p, W + 2p).

    batch_last: `out` is laid out (C, H + 2p, W + 2p, B), and what comes back is an NCHW-shaped
    view of it: the same image, only stored batch-last (so the copy is also the transpose).
    """
    B, C, H, W = x.shape
    p = padding
    if out is None:
        out = xp.empty((C, H + 2 * p, W + 2 * p, B) if batch_last else (B, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
    image = out.transpose(3, 0, 1, 2) if batch_last else out         # (B, C, H + 2p, W + 2p) either way
    image[:, :, :p] = 0                 # only the border is zeroed: the inside is overwritten
    image[:, :, H + p:] = 0
    image[:, :, p:H + p, :p] = 0
    image[:, :, p:H + p, W + p:] = 0
    image[:, :, p:H + p, p:W + p] = x
    return image


def im2col(xp, x, kernel_size, stride, padding, batch_last=False, padded=None, out=None):
    """The patch matrix of x: cols[c, u, v, b, i, j] = x_padded[b, c, s i + u, s j + v].

    x (B, C, H, W) -> cols (C, k, k, B, Ho, Wo), read as a (C k k, B Ho Wo) matrix: column
    (b, i, j) holds the C x k x k window under output pixel (i, j) of image b.
    batch_last: cols (C, k, k, Ho, Wo, B) instead, the columns in (i, j, b) order.

    Strides do the unrolling. Element [b, c, h, w] of the padded image sits at byte
    b sb + c sc + h sh + w sw, so the window entry above sits at
        c sc + u sh + v sw + b sb + i (s sh) + j (s sw),
    a view of the same memory with strides (sc, sh, sw, sb, s sh, s sw): no loop, no copy.
    The one copy is into `out`, because the matrix product needs its operand contiguous.
    padded, out: buffers for the padded image and the patches (fresh arrays when None);
    batch-last patches are read from a batch-last padded copy, so both copies move runs of B.
    """
    B, C, H, W = x.shape
    k, s = kernel_size, stride
    Ho, Wo = conv_output_size(H, k, s, padding), conv_output_size(W, k, s, padding)
    if padding or batch_last:
        x = pad(xp, x, padding, out=padded, batch_last=batch_last)
    sb, sc, sh, sw = x.strides
    if batch_last:
        shape, strides = (C, k, k, Ho, Wo, B), (sc, sh, sw, s * sh, s * sw, sb)
    else:
        shape, strides = (C, k, k, B, Ho, Wo), (sc, sh, sw, sb, s * sh, s * sw)
    windows = xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)
    if out is None:
        out = xp.empty(windows.shape, dtype=x.dtype)
    xp.copyto(out, windows)
    return out


def col2im(xp, cols, image_size, stride, padding, out=None):
    """The adjoint of im2col: x[c, h, w, b] = sum of cols[c, u, v, i, j, b] over s i + u - p = h, s j + v - p = w.

    cols (C, k, k, Ho, Wo, B) -> (C, H, W, B), with image_size = (H, W): im2col's patches and
    image, batch-last (see the layouts above: the adds then move runs of B numbers). im2col copied pixel
    (h, w) into every window that covers it; going back, each copy's value is added onto the
    pixel (a scatter-add). Within one kernel offset (u, v) the windows' entries land on
    distinct pixels (the grid u + s i, v + s j), so one strided add per offset is exact;
    across offsets they overlap, and that is why this loops over the k x k offsets rather
    than adding through one overlapping view (an add through overlapping memory loses updates).
    out: a buffer for the padded sums (C, H + 2p, W + 2p, B). Returns a view of its inside:
    the padding's share of the gradient belongs to no input pixel and is dropped.
    """
    C, k, _, Ho, Wo, B = cols.shape
    (H, W), s, p = image_size, stride, padding
    if out is None:
        out = xp.empty((C, H + 2 * p, W + 2 * p, B), dtype=cols.dtype)
    out.fill(0)
    for u in range(k):
        for v in range(k):
            pixels = out[:, u:u + s * (Ho - 1) + 1:s, v:v + s * (Wo - 1) + 1:s]     # (C, Ho, Wo, B), a view
            # (`out[...] += ...` would also make Python assign the view back onto itself: a wasted pass
            # wherever the library does not spot that no-op)
            xp.add(pixels, cols[:, u, v], out=pixels)
    return out[:, p:p + H, p:p + W]


def patches_batch_last(patch_rows, out_channels):
    """Whether im2col should lay its patches out batch-last, for a product with `out_channels` rows.

    Measured on the conv VAE's layers (NumPy, one core): batch-last saves about 0.4 ns per patch
    entry in im2col, and its product's output then costs up to 0.8 ns more per entry on the way
    back to NCHW. Patch entries per output entry are patch_rows / out_channels (C k k / O), so
    batch-last pays when the patches outnumber the output twice over. Only speed depends on it.
    """
    return patch_rows >= 2 * out_channels


def conv2d_product(xp, cols, W, out=None):
    """The convolution itself: y[o, (b, i, j)] = sum over c, u, v of W[o, c, u, v] cols[(c, u, v), (b, i, j)].

    cols (C, k, k, B, Ho, Wo), W (O, C, k, k) -> (O, B, Ho, Wo): the one matrix product Wm @ cols,
    Wm = W as (O, C k k). Batch-last patches (C, k, k, Ho, Wo, B) give (O, Ho, Wo, B).
    Also ConvTranspose2d's input gradient (see conv_transpose2d_backward).
    """
    O = W.shape[0]
    if out is None:
        out = xp.empty((O,) + tuple(cols.shape[3:]), dtype=cols.dtype)
    xp.matmul(W.reshape(O, -1), cols.reshape(W[0].size, -1), out=out.reshape(O, -1))
    return out


def conv2d_weight_grad(xp, dy_, cols, dW):
    """dW[o, c, u, v] = sum over b, i, j of dy[b, o, i, j] x_padded[b, c, s i + u, s j + v]: dWm = dY cols^T.

    dy_ (O, B, Ho, Wo) channels-first with cols (C, k, k, B, Ho, Wo), or both batch-last,
    (O, Ho, Wo, B) with (C, k, k, Ho, Wo, B) -> dW (O, C, k, k), filled in place; one product
    (O, B Ho Wo) @ (B Ho Wo, C k k) sums over the whole batch at once.
    """
    O = dy_.shape[0]
    xp.matmul(dy_.reshape(O, -1), cols.reshape(-1, dy_[0].size).T, out=dW.reshape(O, -1))
    return dW


def conv2d_patch_grad(xp, dy_bl, W, out=None):
    """dcols[c, u, v, i, j, b] = sum over o of W[o, c, u, v] dy[b, o, i, j]: each patch entry's gradient.

    dy_bl (O, Ho, Wo, B) batch-last, W (O, C, k, k) -> dcols (C, k, k, Ho, Wo, B) batch-last:
    the one matrix product Wm^T @ dY, (C k k, O) @ (O, Ho Wo B).
    """
    O, C, k, _ = W.shape
    if out is None:
        out = xp.empty((C, k, k) + tuple(dy_bl.shape[1:]), dtype=dy_bl.dtype)
    xp.matmul(W.reshape(O, -1).T, dy_bl.reshape(O, -1), out=out.reshape(C * k * k, -1))
    return out


def conv2d_input_grad(xp, dy_bl, W, input_shape, stride, padding, out=None, bias=None, ws=None, name="conv2d"):
    """dx (B, C, H, W) of a convolution with weights W (O, C, k, k), from dy_bl (O, Ho, Wo, B) batch-last.

    From y[b, o, i, j] = sum over c, u, v of W[o, c, u, v] x_padded[b, c, s i + u, s j + v],
    each patch entry's gradient is dcols = Wm^T dY (conv2d_patch_grad), and a padded pixel's
    gradient is the sum over the patch entries that were copies of it: col2im(dcols).
    This is also ConvTranspose2d's forward (see conv_transpose2d_forward), which passes its
    `bias` (C,) to be added on the way back to NCHW (a convolution's input gradient has none).
    out: a buffer for dx (B, C, H, W); the scratch comes from ws as `{name}.dcols`, `{name}.sums`, ...
    """
    O, C, k, _ = W.shape
    Ho, Wo, B = dy_bl.shape[1:]
    H, Wd = input_shape[2], input_shape[3]
    dtype = dy_bl.dtype
    dcols = conv2d_patch_grad(xp, dy_bl, W, out=_scratch(xp, ws, f"{name}.dcols", (C, k, k, Ho, Wo, B), dtype))
    sums = _scratch(xp, ws, f"{name}.sums", (C, H + 2 * padding, Wd + 2 * padding, B), dtype)
    dx_bl = col2im(xp, dcols, (H, Wd), stride, padding, out=sums)                          # (C, H, W, B)
    scratch = _scratch(xp, ws, f"{name}.dx_cf", (C, B, H, Wd), dtype)
    return from_batch_last(xp, dx_bl, out=out, scratch=scratch, bias=bias)


def _patches(xp, x, kernel_size, stride, padding, batch_last, ws, name):
    """im2col(x) in the layout asked for, into the buffers `{name}.padded` and `{name}.cols`."""
    B, C, H, W = x.shape
    k, p = kernel_size, padding
    Ho, Wo = conv_output_size(H, k, stride, p), conv_output_size(W, k, stride, p)
    padded = None
    if p or batch_last:
        shape = (C, H + 2 * p, W + 2 * p, B) if batch_last else (B, C, H + 2 * p, W + 2 * p)
        padded = _scratch(xp, ws, f"{name}.padded", shape, x.dtype)
    shape = (C, k, k, Ho, Wo, B) if batch_last else (C, k, k, B, Ho, Wo)
    cols = _scratch(xp, ws, f"{name}.cols", shape, x.dtype)
    return im2col(xp, x, k, stride, p, batch_last=batch_last, padded=padded, out=cols)


def _to_nchw(xp, a, batch_last, ws, name, bias=None):
    """a (C, B, H, W), or batch-last (C, H, W, B) -> (B, C, H, W) (+ bias) in the buffer `name`."""
    if batch_last:
        C, H, W, B = a.shape
        scratch = _scratch(xp, ws, f"{name}_cf", (C, B, H, W), a.dtype)
        return from_batch_last(xp, a, out=_scratch(xp, ws, name, (B, C, H, W), a.dtype), scratch=scratch, bias=bias)
    C, B, H, W = a.shape
    return from_channels_first(xp, a, out=_scratch(xp, ws, name, (B, C, H, W), a.dtype), bias=bias)


class Conv2dCache(NamedTuple):
    cols: object        # (C, k, k, B, Ho, Wo), or batch-last (C, k, k, Ho, Wo, B): the input's patches, for dW
    input_shape: tuple  # (B, C, H, W): col2im needs it
    stride: int
    padding: int
    batch_last: bool    # the patches' layout


def conv2d_forward(xp, x, W, b, stride=1, padding=0, ws=None, name="conv2d"):
    """y[b, o, i, j] = b[o] + sum over c, u, v of W[o, c, u, v] x_padded[b, c, s i + u, s j + v].

    x (B, C, H, W), W (O, C, k, k), b (O,) -> y (B, O, Ho, Wo), cache; PyTorch's
    torch.nn.functional.conv2d(x, W, b, stride, padding) (a cross-correlation: the kernel is
    not flipped). As matrices: y = Wm @ cols with Wm = W as (O, C k k), cols = im2col(x).
    ws, name: buffers come from the workspace as `{name}.cols`, `{name}.y`, ... (fresh without one).
    """
    if x.ndim != 4 or x.shape[1] != W.shape[1]:
        raise ValueError(f"conv2d expects input (B, {W.shape[1]}, H, W), got {tuple(x.shape)}")
    O, C, k, _ = W.shape
    bl = patches_batch_last(C * k * k, O)
    cols = _patches(xp, x, k, stride, padding, bl, ws, name)                  # (C, k, k, B, Ho, Wo) or batch-last
    product = conv2d_product(xp, cols, W, out=_scratch(xp, ws, f"{name}.product", (O,) + cols.shape[3:], x.dtype))
    y = _to_nchw(xp, product, bl, ws, f"{name}.y", bias=b)                     # (B, O, Ho, Wo)
    return y, Conv2dCache(cols, tuple(x.shape), stride, padding, bl)


def conv2d_backward(xp, dy, cache, W, dW, db, need_dx=True, ws=None, name="conv2d"):
    """Fill dW (O, C, k, k) and db (O,) in place; return dx (B, C, H, W), or None when need_dx=False.

    From y[b, o, i, j] = b[o] + sum over c, u, v of W[o, c, u, v] x_padded[b, c, s i + u, s j + v]:
        dL/dW[o, c, u, v] = sum over b, i, j of dy[b, o, i, j] x_padded[b, c, s i + u, s j + v]
                            (dWm = dY @ cols^T: each weight meets every pixel it multiplied)
        dL/db[o]          = sum over b, i, j of dy[b, o, i, j]    (the bias is added to every pixel)
        dL/dx[b, c, h, w] = sum over o and every (u, v, i, j) with s i + u - p = h, s j + v - p = w
                            of W[o, c, u, v] dy[b, o, i, j]        (dcols = Wm^T @ dY, then col2im)
    The first layer's input is data, so the model asks for no dx there.
    """
    B, O, Ho, Wo = dy.shape
    # dy in the patches' layout for dW, and batch-last for col2im (dx): one copy when they agree
    dy_bl = None
    if need_dx or cache.batch_last:
        dy_bl = batch_last(xp, dy, out=_scratch(xp, ws, f"{name}.dy_bl", (O, Ho, Wo, B), dy.dtype))
    dy_ = dy_bl if cache.batch_last else channels_first(
        xp, dy, out=_scratch(xp, ws, f"{name}.dy_cf", (O, B, Ho, Wo), dy.dtype))
    conv2d_weight_grad(xp, dy_, cache.cols, dW)
    dy_.reshape(O, -1).sum(axis=1, out=db)
    if not need_dx:
        return None
    return conv2d_input_grad(xp, dy_bl, W, cache.input_shape, cache.stride, cache.padding,
                             out=_scratch(xp, ws, f"{name}.dx", cache.input_shape, dy.dtype), ws=ws, name=name)


class ConvTranspose2dCache(NamedTuple):
    x: object           # (B, C, H, W) the input: dW needs it, in the layout of dy's patches
    x_bl: object        # (C, H, W, B) the same, batch-last, as the forward made it
    stride: int
    padding: int


def conv_transpose2d_forward(xp, x, W, b, stride=1, padding=0, output_padding=0, ws=None, name="conv_transpose2d"):
    """The transposed convolution: each input pixel stamps its k x k kernel, scaled, onto the output at stride s.

        y[b, o, h, w] = b[o] + sum of x[b, c, i, j] W[c, o, u, v]
                        over c and every (u, v, i, j) with s i + u - p = h, s j + v - p = w

    x (B, C, H, W), W (C, O, k, k), b (O,) -> y (B, O, Hout, Wout), cache, with
    Hout = (H - 1) s - 2p + k + output_padding; PyTorch's torch.nn.functional.conv_transpose2d.

    Why this is the convolution's input gradient: read W (C, O, k, k) as the weights of a
    Conv2d from O channels to C channels. That convolution is a linear map, a matrix A, from
    (B, O, Hout, Wout) images to (B, C, H, W) ones, and its input gradient is dy -> A^T dy,
    the formula in conv2d_backward. Put x where dy was and it is the formula above, term by
    term: the transposed convolution IS x -> A^T x, hence its name. It is no inverse of the
    convolution: it spreads each pixel over a window where the convolution gathered one.
    So this runs conv2d_input_grad, with x (batch-last) as the "dy".
    output_padding (< s) adds rows and columns at the bottom and right that no window
    reaches (they hold the bias alone): with s > 1, Hout and Hout + 1 pixel images can both
    convolve down to H, and output_padding says which one to make.
    """
    if x.ndim != 4 or x.shape[1] != W.shape[0]:
        raise ValueError(f"conv_transpose2d expects input (B, {W.shape[0]}, H, W), got {tuple(x.shape)}")
    B, C, H, Wd = x.shape
    O, k = W.shape[1], W.shape[2]
    Hout = conv_transpose_output_size(H, k, stride, padding, output_padding)
    Wout = conv_transpose_output_size(Wd, k, stride, padding, output_padding)
    x_bl = batch_last(xp, x, out=_scratch(xp, ws, f"{name}.x_bl", (C, H, Wd, B), x.dtype))
    y = conv2d_input_grad(xp, x_bl, W, (B, O, Hout, Wout), stride, padding,
                          out=_scratch(xp, ws, f"{name}.y", (B, O, Hout, Wout), x.dtype), bias=b, ws=ws, name=name)
    return y, ConvTranspose2dCache(x, x_bl, stride, padding)


def conv_transpose2d_backward(xp, dy, cache, W, dW, db, need_dx=True, ws=None, name="conv_transpose2d"):
    """Fill dW (C, O, k, k) and db (O,) in place; return dx (B, C, H, W), or None when need_dx=False.

    The forward is y = A^T x (+ b), with A the Conv2d from O to C channels with weights W
    (conv_transpose2d_forward), so its input gradient is dx = (A^T)^T dy = A dy: the
    convolution's forward, run on dy. In index form, from the forward's formula:
        dL/dx[b, c, i, j] = sum over o, u, v of W[c, o, u, v] dy_padded[b, o, s i + u, s j + v]
                            (= conv2d(dy, W): the patches of dy, cols = im2col(dy), then Wm @ cols)
        dL/dW[c, o, u, v] = sum over b, i, j of x[b, c, i, j] dy_padded[b, o, s i + u, s j + v]
                            (= conv2d_weight_grad with x in dy's place: x @ cols^T)
        dL/db[o]          = sum over b, h, w of dy[b, o, h, w]
    """
    B, C, H, Wd = cache.x.shape
    O, k = W.shape[1], W.shape[2]
    bl = patches_batch_last(O * k * k, C)
    # dy's window grid is exactly H x W: Hout + 2p - k = (H - 1) s + output_padding, and output_padding < s
    cols = _patches(xp, dy, k, cache.stride, cache.padding, bl, ws, name)    # (O, k, k, B, H, W) or batch-last
    if bl:
        x_ = cache.x_bl                                                        # (C, H, W, B), as the forward made it
    else:
        x_ = channels_first(xp, cache.x, out=_scratch(xp, ws, f"{name}.x_cf", (C, B, H, Wd), dy.dtype))
    conv2d_weight_grad(xp, x_, cols, dW)
    dy.sum(axis=(0, 2, 3), out=db)
    if not need_dx:
        return None
    product = conv2d_product(xp, cols, W, out=_scratch(xp, ws, f"{name}.product", (C,) + cols.shape[3:], dy.dtype))
    return _to_nchw(xp, product, bl, ws, f"{name}.dx")


class Conv2d:
    """A Conv2d layer named `name`: it owns `name.W` (out_channels, in_channels, k, k) and `name.b` (out_channels,).

    fan_in = in_channels k k, the inputs each output pixel sums over, as PyTorch's init counts it.
    """

    def __init__(self, name, in_channels, out_channels, kernel_size, stride=1, padding=0):
        check_conv_settings(f"Conv2d {name}", in_channels, out_channels, kernel_size, stride, padding)
        self.name, self.in_channels, self.out_channels = name, in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.fan_in = in_channels * kernel_size * kernel_size

    def parameters(self):
        k = self.kernel_size
        return {f"{self.name}.W": (self.out_channels, self.in_channels, k, k),
                f"{self.name}.b": (self.out_channels,)}

    def output_shape(self, input_shape):
        """(C, H, W) of one example in -> (out_channels, Ho, Wo) out."""
        _, H, W = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, conv_output_size(H, k, s, p), conv_output_size(W, k, s, p))

    def forward(self, xp, params, x, ws=None):
        return conv2d_forward(xp, x, params[f"{self.name}.W"], params[f"{self.name}.b"],
                              self.stride, self.padding, ws=ws, name=self.name)

    def backward(self, xp, params, grads, dy, cache, ws=None, need_dx=True):
        return conv2d_backward(xp, dy, cache, params[f"{self.name}.W"], grads[f"{self.name}.W"],
                               grads[f"{self.name}.b"], need_dx=need_dx, ws=ws, name=self.name)


class ConvTranspose2d:
    """A ConvTranspose2d layer named `name`: owns `name.W` (in_channels, out_channels, k, k), `name.b` (out_channels,).

    fan_in = out_channels k k, as PyTorch's init counts it: torch's _calculate_fan_in_and_fan_out
    reads dimension 1 of the weight as the inputs, and for this layout that is out_channels.
    """

    def __init__(self, name, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0):
        check_conv_settings(f"ConvTranspose2d {name}", in_channels, out_channels, kernel_size, stride, padding,
                            output_padding)
        self.name, self.in_channels, self.out_channels = name, in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.output_padding = output_padding
        self.fan_in = out_channels * kernel_size * kernel_size

    def parameters(self):
        k = self.kernel_size
        return {f"{self.name}.W": (self.in_channels, self.out_channels, k, k),
                f"{self.name}.b": (self.out_channels,)}

    def output_shape(self, input_shape):
        """(C, H, W) of one example in -> (out_channels, Hout, Wout) out."""
        _, H, W = input_shape
        k, s, p, op = self.kernel_size, self.stride, self.padding, self.output_padding
        return (self.out_channels, conv_transpose_output_size(H, k, s, p, op),
                conv_transpose_output_size(W, k, s, p, op))

    def forward(self, xp, params, x, ws=None):
        return conv_transpose2d_forward(xp, x, params[f"{self.name}.W"], params[f"{self.name}.b"], self.stride,
                                        self.padding, self.output_padding, ws=ws, name=self.name)

    def backward(self, xp, params, grads, dy, cache, ws=None, need_dx=True):
        return conv_transpose2d_backward(xp, dy, cache, params[f"{self.name}.W"], grads[f"{self.name}.W"],
                                         grads[f"{self.name}.b"], need_dx=need_dx, ws=ws, name=self.name)
