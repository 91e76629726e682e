"""The layout machinery under the convolutions (conv.py): im2col and its adjoint col2im, padding, and
the transposes between NCHW and the channels-outermost layouts the matrix products work in.

What is here: the window geometry (check_conv_settings, conv_output_size: here rather than in conv.py,
because im2col sizes its patches with them and imports flow conv.py -> im2col.py); the transposes channels_first,
batch_last, from_channels_first, from_batch_last; pad; im2col (the patch matrix, a strided view copied
once); col2im (its adjoint, a scatter-add); patches_batch_last (which layout pays). No gradients are
taken here: these are copies and sums, and their use in the forward/backward pairs is in conv.py.
`xp` is the array namespace, passed in. Every function writes into `out=` (and friends) when given one,
and allocates a fresh array when not.
"""
from __future__ import annotations

import numpy as np

# Shapes: B = batch, C = input channels, O = output channels, k = kernel size, s = stride,
# p = padding, H x W = input image, Ho x Wo = output image. Images are NCHW, (B, C, H, W),
# and weights are laid out as PyTorch's: Conv2d W (O, C, k, k), ConvTranspose2d W (C, O, k, k).
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
