"""Conv2d and ConvTranspose2d as forward/backward pairs that hold no state, and their layer entries.

What is here: the pieces every convolution gradient is made of (conv2d_product, conv2d_weight_grad,
conv2d_patch_grad, conv2d_input_grad), the pairs conv2d_forward/backward and
conv_transpose2d_forward/backward with their caches, and the entries `Conv2d` and `ConvTranspose2d`
that network.py puts in a model's layer lists (the same interface as layers.Linear). Each pair's
derivation is in its docstring. The im2col/col2im and layout machinery they run on is in im2col.py;
the workspace their buffers come from is in layers.py.
"""
from __future__ import annotations

from typing import NamedTuple

from numpyvae.im2col import (batch_last, channels_first, check_conv_settings, col2im, conv_output_size,
                             from_batch_last, from_channels_first, im2col, patches_batch_last)
from numpyvae.layers import buffer, gradients_into

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
# The products work on channels-outermost layouts (im2col.py says which and why).


def conv_transpose_output_size(size, kernel_size, stride, padding, output_padding):
    """Hout = (H - 1) s - 2p + k + output_padding: the size of the convolution input whose output is H."""
    check_conv_settings("conv_transpose2d", 1, 1, kernel_size, stride, padding, output_padding)
    out = (size - 1) * stride - 2 * padding + kernel_size + output_padding
    if out < 1:
        raise ValueError(f"padding {padding} leaves no output pixels for a side of {size}")
    return out


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
    dcols = conv2d_patch_grad(xp, dy_bl, W, out=buffer(ws, f"{name}.dcols", (C, k, k, Ho, Wo, B), dtype))
    sums = buffer(ws, f"{name}.sums", (C, H + 2 * padding, Wd + 2 * padding, B), dtype)
    dx_bl = col2im(xp, dcols, (H, Wd), stride, padding, out=sums)                          # (C, H, W, B)
    scratch = buffer(ws, f"{name}.dx_cf", (C, B, H, Wd), dtype)
    return from_batch_last(xp, dx_bl, out=out, scratch=scratch, bias=bias)


def _patches(xp, x, kernel_size, stride, padding, batch_last, ws, name):
    """im2col(x) in the layout asked for, into the buffers `{name}.padded` and `{name}.cols`."""
    B, C, H, W = x.shape
    k, p = kernel_size, padding
    Ho, Wo = conv_output_size(H, k, stride, p), conv_output_size(W, k, stride, p)
    padded = None
    if p or batch_last:
        shape = (C, H + 2 * p, W + 2 * p, B) if batch_last else (B, C, H + 2 * p, W + 2 * p)
        padded = buffer(ws, f"{name}.padded", shape, x.dtype)
    shape = (C, k, k, Ho, Wo, B) if batch_last else (C, k, k, B, Ho, Wo)
    cols = buffer(ws, f"{name}.cols", shape, x.dtype)
    return im2col(xp, x, k, stride, p, batch_last=batch_last, padded=padded, out=cols)


def _to_nchw(xp, a, batch_last, ws, name, bias=None):
    """a (C, B, H, W), or batch-last (C, H, W, B) -> (B, C, H, W) (+ bias) in the buffer `name`."""
    if batch_last:
        C, H, W, B = a.shape
        scratch = buffer(ws, f"{name}_cf", (C, B, H, W), a.dtype)
        return from_batch_last(xp, a, out=buffer(ws, name, (B, C, H, W), a.dtype), scratch=scratch, bias=bias)
    C, B, H, W = a.shape
    return from_channels_first(xp, a, out=buffer(ws, name, (B, C, H, W), a.dtype), bias=bias)


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
    product = conv2d_product(xp, cols, W, out=buffer(ws, f"{name}.product", (O,) + cols.shape[3:], x.dtype))
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
        dy_bl = batch_last(xp, dy, out=buffer(ws, f"{name}.dy_bl", (O, Ho, Wo, B), dy.dtype))
    dy_ = dy_bl if cache.batch_last else channels_first(
        xp, dy, out=buffer(ws, f"{name}.dy_cf", (O, B, Ho, Wo), dy.dtype))
    conv2d_weight_grad(xp, dy_, cache.cols, dW)
    dy_.reshape(O, -1).sum(axis=1, out=db)
    if not need_dx:
        return None
    return conv2d_input_grad(xp, dy_bl, W, cache.input_shape, cache.stride, cache.padding,
                             out=buffer(ws, f"{name}.dx", cache.input_shape, dy.dtype), ws=ws, name=name)


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
    x_bl = batch_last(xp, x, out=buffer(ws, f"{name}.x_bl", (C, H, Wd, B), x.dtype))
    y = conv2d_input_grad(xp, x_bl, W, (B, O, Hout, Wout), stride, padding,
                          out=buffer(ws, f"{name}.y", (B, O, Hout, Wout), x.dtype), bias=b, ws=ws, name=name)
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
        x_ = channels_first(xp, cache.x, out=buffer(ws, f"{name}.x_cf", (C, B, H, Wd), dy.dtype))
    conv2d_weight_grad(xp, x_, cols, dW)
    dy.sum(axis=(0, 2, 3), out=db)
    if not need_dx:
        return None
    product = conv2d_product(xp, cols, W, out=buffer(ws, f"{name}.product", (C,) + cols.shape[3:], dy.dtype))
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
        with gradients_into(xp, grads, (f"{self.name}.W", f"{self.name}.b"), ws) as (dW, db):
            return conv2d_backward(xp, dy, cache, params[f"{self.name}.W"], dW, db, need_dx=need_dx, ws=ws,
                                   name=self.name)


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
        with gradients_into(xp, grads, (f"{self.name}.W", f"{self.name}.b"), ws) as (dW, db):
            return conv_transpose2d_backward(xp, dy, cache, params[f"{self.name}.W"], dW, db, need_dx=need_dx,
                                             ws=ws, name=self.name)
