"""Dense and elementwise layer math as forward/backward pairs that hold no state, and the workspace.

What is here: Linear, ReLU, Sigmoid, the reparameterization, Concat and one_hot (a conditional VAE's
labels), Reshape and Flatten, running a layer list (sequence_forward/backward), and the buffers
(Workspace, buffer). The convolutions are in conv.py, their im2col/col2im layout machinery in im2col.py
(as CS231n keeps layers.py beside fast_layers.py); imports flow conv.py -> im2col.py, conv.py -> layers.py.

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
parameters it owns and the forward/backward pair wired to them (conv.py adds `Conv2d` and
`ConvTranspose2d` with the same interface), and sequence_forward/backward. The model calls the
rest directly: the reparameterization between encoder and decoder, the concatenation and one_hot
for a conditional VAE's labels. sigmoid_forward/backward are here for the gradient checks and for
readers: the model folds the output sigmoid into its likelihoods (losses.py).

Shapes: B = batch, I = inputs of a layer, O = outputs of a layer, Z = latent.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np


class Workspace:
    """Named buffers allocated on first use and reused after: `ws.get(name, shape)`.

    One per model. A buffer is keyed by its name, shape and dtype, so a smaller last batch
    gets buffers of its own once and then reuses them too.
    """

    def __init__(self, xp, dtype, prefix="", buffers=None):
        self.xp, self.dtype = xp, np.dtype(dtype)
        self.prefix = prefix
        self._buffers = {} if buffers is None else buffers

    def scope(self, prefix):
        """The same buffers under names starting `prefix/`: a second pass of the same layers (the
        encoder on a VampPrior's pseudo-inputs) keeps its caches apart from the first pass's,
        even when both batches have the same size."""
        return Workspace(self.xp, self.dtype, f"{self.prefix}{prefix}/", self._buffers)

    def get(self, name, shape, dtype=None):
        key = (self.prefix + name, tuple(shape), dtype)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = self.xp.empty(shape, dtype=dtype or self.dtype)
        return buffer


def buffer(ws, name, shape, dtype=None):
    """ws.get(name, shape, dtype), or None without a workspace (the functions then allocate).

    The one buffer helper: every `out=` that may come from a workspace is written as
    `out=buffer(ws, name, shape)`, and every function that takes `out=` allocates when it is None.
    """
    return None if ws is None else ws.get(name, shape, dtype)


def scoped(ws, prefix):
    """ws.scope(prefix), or None without a workspace."""
    return None if ws is None else ws.scope(prefix)


class Gradients(dict):
    """Name -> the view of the flat gradient buffer that holds that parameter's gradient.

    Backward accumulates: a parameter used twice in one step (the encoder run on the images and
    again on a VampPrior's pseudo-inputs) gets the sum of both uses' gradients, with no sum
    written by hand anywhere. llm.c zeroes every gradient before a step and always adds into
    it; NumPy's matmul cannot add into its output, so adding would cost every tensor a
    temporary and an extra pass. Here the FIRST use of a parameter in a step writes its
    gradient in place, as a plain `out=`, at no cost; a later use writes into a scratch buffer
    that is then added in. The model calls `start_step()` before each backward.
    """

    def __init__(self, views):
        super().__init__(views)
        self._step = 0
        self._written = {}         # name -> the step that last wrote it (a dict that stops growing: no
                                   # allocation per step, as a set cleared every step would make)

    def start_step(self):
        self._step += 1

    def written(self, name):
        """Whether `name`'s gradient was written since start_step."""
        return self._written.get(name) == self._step

    def into(self, xp, names, ws=None):
        """A context whose value is where a backward writes the gradients of `names` (a list), and which,
        on leaving, adds in those that were a later use: `with grads.into(xp, names, ws) as targets:`."""
        return _Into(self, xp, names, ws)


class _Into:
    """Gradients.into's context: a plain class, not a generator, so a step leaves no frame behind."""
    __slots__ = ("grads", "names", "later", "targets")

    def __init__(self, grads, xp, names, ws):
        later = [grads.written(name) for name in names]
        self.targets = [xp.empty_like(grads[name]) if again and ws is None else
                        ws.get(f"{name}.again", grads[name].shape) if again else grads[name]
                        for name, again in zip(names, later)]
        for name in names:
            grads._written[name] = grads._step
        self.grads, self.names, self.later = grads, names, later

    def __enter__(self):
        return self.targets

    def __exit__(self, *exc_info):
        for name, target, again in zip(self.names, self.targets, self.later):
            if again:
                self.grads[name] += target
        return False


def gradients_into(xp, grads, names, ws=None):
    """grads.into(xp, names, ws) for a model's Gradients; a plain dict's views are written as they are."""
    if isinstance(grads, Gradients):
        return grads.into(xp, names, ws)
    return nullcontext([grads[name] for name in names])


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
        with gradients_into(xp, grads, (f"{self.name}.W", f"{self.name}.b"), ws) as (dW, db):
            return linear_backward(xp, dy, cache, params[f"{self.name}.W"], dW, db, dx=dx, need_dx=need_dx)


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


class Residual:
    """y = x + f(x), f a list of layers: a residual block (He et al. 2016), and a composite layer.

    It owns the parameters of the layers inside it. The input reaches the output twice, straight
    and through f, so its gradient is the sum of the two (an activation's fan-out, summed where
    it forks): dx = dy + f's backward of dy. It holds `layers`, so sequence_forward hands it
    `visit` and gradcheck sees the ReLUs inside it, and `leaves` finds them for initialization.
    f must give back its input's shape.
    """

    def __init__(self, name, layers):
        self.name, self.layers = name, list(layers)

    def parameters(self):
        return {name: shape for layer in self.layers for name, shape in layer.parameters().items()}

    def output_shape(self, input_shape):
        inner = output_shape(self.layers, input_shape)
        if inner != tuple(input_shape):
            raise ValueError(f"{self.name}'s layers give {inner}, not their input's {tuple(input_shape)}: "
                             f"x + f(x) needs the same shape")
        return inner

    def forward(self, xp, params, x, ws=None, visit=None):
        f, caches = sequence_forward(xp, self.layers, params, x, ws, visit)
        return xp.add(x, f, out=buffer(ws, f"{self.name}.y", x.shape)), caches

    def backward(self, xp, params, grads, dy, cache, ws=None, need_dx=True):
        df = sequence_backward(xp, self.layers, params, grads, dy, cache, ws)
        return xp.add(dy, df, out=buffer(ws, f"{self.name}.dx", dy.shape)) if need_dx else None


def leaves(layers):
    """Every layer that is not a composite, in forward order, looking inside composites (Residual)."""
    for layer in layers:
        if hasattr(layer, "layers"):
            yield from leaves(layer.layers)
        else:
            yield layer


def output_shape(layers, input_shape):
    """The shape of one example after `layers`, inferred layer by layer (each checks its input)."""
    shape = tuple(input_shape)
    for layer in layers:
        shape = layer.output_shape(shape)
    return shape


def sequence_forward(xp, layers, params, x, ws=None, visit=None):
    """Run `layers` in order: (output, one cache per layer).

    visit(layer, x), if given, sees each layer's input first (gradcheck reads the ReLUs' inputs).
    A composite layer (one that holds `layers` of its own, like Residual) is handed `visit` too,
    so the layers inside it are seen as well.
    """
    caches = []
    for layer in layers:
        if visit is not None:
            visit(layer, x)
        if visit is not None and hasattr(layer, "layers"):
            x, cache = layer.forward(xp, params, x, ws, visit=visit)
        else:
            x, cache = layer.forward(xp, params, x, ws)
        caches.append(cache)
    return x, caches


def sequence_backward(xp, layers, params, grads, dy, caches, ws=None, need_dx=True):
    """Backward through `layers` in exactly the reverse order of sequence_forward; returns dx."""
    for index in reversed(range(len(layers))):
        first = index == 0
        dy = layers[index].backward(xp, params, grads, dy, caches[index], ws, need_dx=need_dx or not first)
    return dy
