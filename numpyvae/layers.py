"""Layers with hand-written forward and backward passes: Linear, ReLU, Sigmoid, Reparameterize.

Every layer is a forward/backward pair, CS231n style, but with the cache kept on
the layer instead of returned:

    y  = layer.forward(x)      # remembers only what backward will need
    dx = layer.backward(dy)    # dy = dLoss/dy  ->  dx = dLoss/dx (a vector-Jacobian product)

Backward must follow a forward (it raises otherwise) and forgets what forward saved.

Speed without obscurity: each layer writes its outputs into buffers it allocates
once per batch size (`_buffer`) instead of fresh arrays every step, using ufuncs
with `out=`. The arrays a layer returns are therefore *its* buffers: they are
overwritten by the next call, so copy them if you want to keep them.

Shapes: B = batch, I = inputs of a layer, O = outputs of a layer, Z = latent.
"""
from __future__ import annotations

import numpy as np


def is_cupy(xp):
    """True when `xp` is the cupy module: there, fused kernels replace some chains of ufuncs."""
    return getattr(xp, "__name__", None) == "cupy"


class Layer:
    """Base class: holds the array namespace, the dtype and the per-batch-size buffers."""

    def __init__(self, xp, dtype):
        self.xp = xp
        self.dtype = np.dtype(dtype)
        self._buffers = {}      # (name, shape) -> array, allocated once and reused
        self._saved = None      # what forward kept for backward; None = no forward yet

    def _buffer(self, name, shape, dtype=None):
        key = (name, shape)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = self.xp.empty(shape, dtype=dtype or self.dtype)
        return buffer

    def _take_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called without a forward() before it")
        saved, self._saved = self._saved, None
        return saved


class Linear(Layer):
    """Affine map y = x @ W + b.

    W: (I, O), b: (O,), and their gradients dW, db are views into the model's flat
    parameter and gradient buffers, handed in by the model.

    Backward, from y_bj = sum_i x_bi W_ij + b_j:
        dL/dW = x^T @ dy          (I, O)   each weight collects x_bi * dy_bj over the batch
        dL/db = sum_b dy          (O,)     the bias is added to every row
        dL/dx = dy @ W^T          (B, I)
    Forward keeps x (needed for dW); W is the parameter itself.
    """

    def __init__(self, xp, dtype, W, b, dW, db):
        super().__init__(xp, dtype)
        self.W, self.b, self.dW, self.db = W, b, dW, db

    def forward(self, x):
        out = self._buffer("y", (x.shape[0], self.W.shape[1]))   # (B, O)
        self.xp.matmul(x, self.W, out=out)
        out += self.b
        self._saved = x
        return out

    def backward(self, dy, need_dx=True):
        """Fill dW and db in place; return dx, or None when need_dx=False (the first layer's input is data)."""
        x = self._take_saved()
        self.xp.matmul(x.T, dy, out=self.dW)                      # (I, O)
        dy.sum(axis=0, out=self.db)                               # (O,)
        if not need_dx:
            return None
        dx = self._buffer("dx", x.shape)                          # (B, I)
        return self.xp.matmul(dy, self.W.T, out=dx)


class ReLU(Layer):
    """y = max(x, 0); dx = dy where x > 0, else 0.

    The derivative at exactly x = 0 is taken as 0, as PyTorch does. Forward keeps
    the mask (y > 0), which is all backward needs.
    """

    def forward(self, x):                                         # (B, O) -> (B, O)
        y = self._buffer("y", x.shape)
        self.xp.maximum(x, 0, out=y)
        mask = self._buffer("mask", x.shape, dtype=bool)
        self.xp.greater(y, 0, out=mask)
        self._saved = mask
        return y

    def backward(self, dy):
        mask = self._take_saved()
        dx = self._buffer("dx", dy.shape)
        # multiplying by a bool mask keeps dy's dtype (an int mask would promote float32 to float64)
        return self.xp.multiply(dy, mask, out=dx)


def sigmoid(xp, x, out):
    """sigmoid(x) = 1 / (1 + exp(-x)), written into `out`, never overflowing.

    exp(-x) overflows float32 for x < -88 (and warns). The identity
        sigmoid(x) = (1 + tanh(x / 2)) / 2
    needs no exp at all: tanh saturates at +-1 quietly, so logits of +-1000 give 1 and 0.
    Its error is absolute, about one rounding step of 1: very negative x (below about
    -17 in float32) gives exactly 0 where the true value is tiny but positive. That is
    all the losses need: sigmoid(l) - x and p (1 - p) care about absolute error.
    """
    xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


class Sigmoid(Layer):
    """y = sigmoid(x); dy/dx = y * (1 - y), so forward keeps y and nothing else."""

    def forward(self, x):
        y = sigmoid(self.xp, x, out=self._buffer("y", x.shape))
        self._saved = y
        return y

    def backward(self, dy):
        y = self._take_saved()
        dx = self._buffer("dx", y.shape)
        self.xp.subtract(1, y, out=dx)      # 1 - y
        dx *= y                             # y (1 - y)
        dx *= dy
        return dx


class Reparameterize(Layer):
    """z = mu + eps * std with std = exp(logvar / 2): a sample of N(mu, diag(exp(logvar))).

    `logvar` is the log of the variance, so the standard deviation is exp(0.5 * logvar),
    not exp(logvar) (the seed blog post's bug: its KL reads the same number as a
    log-variance). eps ~ N(0, I) is drawn outside, so z is a deterministic,
    differentiable function of mu and logvar -- the reparameterization trick.

    Backward, from z = mu + eps * exp(logvar / 2):
        dz/dmu     = 1                         ->  dmu     = dz
        dz/dlogvar = eps * exp(logvar / 2) / 2 ->  dlogvar = dz * eps * std / 2
    Forward keeps eps and std.                               shapes: all (B, Z)
    """

    def forward(self, mu, logvar, eps):
        std = self._buffer("std", mu.shape)
        self.xp.multiply(logvar, 0.5, out=std)
        self.xp.exp(std, out=std)
        z = self._buffer("z", mu.shape)
        self.xp.multiply(eps, std, out=z)
        z += mu
        self._saved = (eps, std)
        return z

    def backward(self, dz):
        eps, std = self._take_saved()
        dmu = self._buffer("dmu", dz.shape)
        self.xp.copyto(dmu, dz)
        dlogvar = self._buffer("dlogvar", dz.shape)
        self.xp.multiply(dz, eps, out=dlogvar)
        dlogvar *= std
        dlogvar *= 0.5
        return dmu, dlogvar
