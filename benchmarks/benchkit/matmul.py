"""The matrix products of a training step: their shapes, their FLOPs, and a library's rate on them alone.

That rate gives the "matmul floor": an epoch's products at the speed the library reaches on exactly
these shapes with nothing else running, a time no amount of elementwise or optimizer work gets under.
"""
from __future__ import annotations

import statistics
import time

import numpy as np


def matmul_shapes(batch, input_dim, hidden_dim, latent_dim):
    """(m, k, n) of every matrix product in one training step: (m, k) @ (k, n).

    Forward: x @ W for the five layers. Backward: dW = x^T @ dy for all five, and
    dx = dy @ W^T for all but the encoder, whose input is data.
    """
    B, D, H, Z = batch, input_dim, hidden_dim, latent_dim
    layers = [("enc", D, H), ("mu", H, Z), ("logvar", H, Z), ("dec", Z, H), ("out", H, D)]
    forward = [(B, fan_in, fan_out) for _, fan_in, fan_out in layers]
    weight_grads = [(fan_in, B, fan_out) for _, fan_in, fan_out in layers]
    input_grads = [(B, fan_out, fan_in) for name, fan_in, fan_out in layers if name != "enc"]
    return forward + weight_grads + input_grads


def network_shapes(batch, settings):
    """(m, k, n) of every matrix product in one training step of the VAE(**settings), read off its layer lists.

    A Linear does x @ W, x^T @ dy and (unless its input is data) dy @ W^T, as in matmul_shapes. A
    convolution is the same three products on its patch matrix (C k k rows, B Ho Wo columns):
    Wm @ cols, dY @ cols^T, and Wm^T @ dY for the patches' gradient; a transposed convolution is
    its adjoint, the same shapes with its input and output exchanged.
    """
    from numpyvae.vae import VAE
    model = VAE(**settings, seed=0)
    shapes, B = [], batch
    first = next(layer for layer in model.layers if layer.parameters())    # its input is data: no dx
    for layers, shape in ((model.features, (model.input_dim,)), (model.encoder, None), (model.heads, None),
                          (model.decoder, (model.latent_dim + model.num_classes,))):
        for layer in layers:
            kind = type(layer).__name__
            if kind == "Linear":
                I, O = layer.fan_in, layer.fan_out
                shapes += [(B, I, O), (I, B, O)] + ([] if layer is first else [(B, O, I)])
            elif kind in ("Conv2d", "ConvTranspose2d"):
                out = layer.output_shape(shape)
                small, big = (out, shape) if kind == "Conv2d" else (shape, out)    # the convolution's out and in
                patches, pixels = big[0] * layer.kernel_size ** 2, B * small[1] * small[2]
                shapes += [(small[0], patches, pixels), (small[0], pixels, patches)]
                if layer is not first:
                    shapes.append((patches, small[0], pixels))
            if shape is not None:
                shape = layer.output_shape(shape)
    return shapes


def matmul_flops(shapes):
    return sum(2 * m * k * n for m, k, n in shapes)


def measure_matmul_rate(library, shapes, device=None, rounds=7, repeats=10):
    """GFLOP/s of `library` ("numpy", "cupy" or "torch") doing exactly these products, operands in memory."""
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
                for m, k, n in shapes]
    if library == "torch":
        import torch
        device = torch.device(device or "cpu")
        operands = [(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)) for a, b in operands]
        outs = [torch.empty((a.shape[0], b.shape[1]), device=device) for a, b in operands]
        matmul = lambda a, b, out: torch.matmul(a, b, out=out)   # noqa: E731
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    else:
        xp = np
        if library == "cupy":
            import cupy as xp
        operands = [(xp.asarray(a), xp.asarray(b)) for a, b in operands]
        outs = [xp.empty((a.shape[0], b.shape[1]), dtype=np.float32) for a, b in operands]
        matmul = lambda a, b, out: xp.matmul(a, b, out=out)      # noqa: E731
        sync = (lambda: xp.cuda.get_current_stream().synchronize()) if library == "cupy" else (lambda: None)
    times = []
    for _ in range(rounds + 1):          # the first round warms up (threads, kernels) and is dropped
        sync()
        started = time.perf_counter()
        for _ in range(repeats):
            for (a, b), out in zip(operands, outs):
                matmul(a, b, out)
        sync()
        times.append((time.perf_counter() - started) / repeats)
    return matmul_flops(shapes) / statistics.median(times[1:]) / 1e9
