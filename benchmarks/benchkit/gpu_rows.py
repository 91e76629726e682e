"""The rows of benchmarks/bench_gpu.py: one training step each, timed the same way, in the worker process.

A row is a `Stepper`: it owns a model, its optimizer and the training images on its device, and
does `step(index)` (one training step on the images at `index`, a (B,) int64 array of the device's
kind) and `sync()`. Timing code only ever calls those two, so every row is timed alike:

    numpyvae   numpyvae's VAE and Adam on a backend: "cupy" (the GPU), "numpy" (the host CPU), or
               "fakegpu" (the rehearsal's stand-in for CuPy)
    torch      benchmarks/torch_reference.TorchVAE with torch.optim.Adam, eager
    torch-graph the same whole step (gather, forward, backward, Adam) captured once into a
               torch.cuda.CUDAGraph and replayed; the batch's indices are copied into a fixed
               buffer first, and the noise comes from the default CUDA generator, which a graph
               replays with a fresh offset each time. In the rehearsal (no CUDA) "capture" runs
               the same step function eagerly on the same fixed buffers.

Shapes: N = images, B = batch, D = pixels.
"""
from __future__ import annotations

import time

import numpy as np


def network(spec):
    """The VAE settings a row trains: the dense model of spec's sizes, or the conv VAE (its default channels)."""
    if spec.get("model") == "conv":
        return {"arch": "conv", "latent_dim": spec["latent_dim"]}
    return {"hidden_dims": (spec["hidden_dim"],), "latent_dim": spec["latent_dim"]}


class NumpyvaeStepper:
    def __init__(self, images, batch, spec):
        from numpyvae import VAE, Adam
        from numpyvae.backend import get_backend
        self.backend = get_backend(spec["backend"])
        xp = self.xp = self.backend.xp
        self.model = VAE(**network(spec), backend=self.backend, seed=spec["seed"])
        self.optimizer = Adam(self.model, lr=spec["lr"])
        self.images = self.backend.to_device(images)                           # (N, D) uint8, one transfer
        self.gathered = xp.empty((batch, images.shape[1]), dtype=np.uint8)     # (B, D)
        self.x = xp.empty((batch, images.shape[1]), dtype=self.model.dtype)   # (B, D)
        self.rng = self.backend.rng((spec["seed"], 1))
        self.total = xp.zeros((), dtype=np.float64)                            # summed loss, read once
        self.take = {} if self.backend.name == "cupy" else {"mode": "wrap"}

    def to_device(self, index):
        return self.backend.to_device(index)

    def step(self, index):
        xp = self.xp
        xp.take(self.images, index, axis=0, out=self.gathered, **self.take)   # as batches.DeviceDataset does
        xp.copyto(self.x, self.gathered)
        xp.divide(self.x, 255, out=self.x)
        loss, _, _ = self.model.loss_and_grads(self.x, rng=self.rng)
        self.optimizer.step()
        self.total += loss

    def sync(self):
        self.backend.synchronize()

    def read_total(self):
        return self.backend.scalar(self.total)

    def memory(self):
        if self.backend.name != "cupy":
            return {}
        pool = self.xp.get_default_memory_pool()
        free, total = self.xp.cuda.runtime.memGetInfo()
        # the pool keeps what it once held, so its total is the row's peak; the device's used
        # memory adds the CUDA context and the libraries' workspaces
        return {"gpu_peak_bytes": pool.total_bytes(), "gpu_device_used_bytes": total - free}


class TorchStepper:
    def __init__(self, images, batch, spec, graph=False):
        import torch
        from torch_reference import TorchVAE
        from numpyvae import VAE
        self.torch = torch
        self.device = torch.device(spec["device"])
        self.data = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).float().div_(255)   # (N, D)
        numpyvae_model = VAE(**network(spec), seed=spec["seed"])   # the same network and initial weights
        self.model = TorchVAE(numpyvae_model, dtype=torch.float32).to(self.device)
        # capturable: Adam's step count lives on the device, so a captured step can advance it
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=spec["lr"],
                                          capturable=graph and self.device.type == "cuda")
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.index = torch.zeros(batch, dtype=torch.int64, device=self.device)        # (B,) fixed buffer
        self.loss = torch.zeros((), dtype=torch.float32, device=self.device)
        self.replay = capture(self._whole_step, self.device, spec["rehearse"]) if graph else None

    def _whole_step(self):
        x = self.data.index_select(0, self.index)                                     # (B, D)
        loss = self.model(x)[0]              # noise from the default generator: fresh on every replay
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss.copy_(loss.detach())

    def to_device(self, index):
        return self.torch.from_numpy(index).to(self.device)

    def step(self, index):
        self.index.copy_(index)
        if self.replay is not None:
            self.replay()
        else:
            self._whole_step()
        self.total += self.loss

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def read_total(self):
        return float(self.total)

    def memory(self):
        if self.device.type != "cuda":
            return {}
        free, total = self.torch.cuda.mem_get_info(self.device)
        return {"gpu_peak_bytes": self.torch.cuda.max_memory_reserved(self.device),
                "gpu_peak_allocated_bytes": self.torch.cuda.max_memory_allocated(self.device),
                "gpu_device_used_bytes": total - free}


def capture(step, device, rehearse):
    """`step` as one CUDA graph: returns its replay. Rehearsal (no CUDA): `step` itself, run eagerly."""
    if rehearse or device.type != "cuda":
        return step
    import torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):      # warm-up off the default stream, as torch.cuda.graph asks
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def make_stepper(images, batch, spec):
    if spec["row"] == "numpyvae":
        return NumpyvaeStepper(images, batch, spec)
    return TorchStepper(images, batch, spec, graph=spec["row"] == "torch-graph")


def epoch_orders(num_images, batch, epochs, seed):
    """Per epoch, the (steps, B) image indices of its full batches, shuffled as numpyvae shuffles."""
    orders = []
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng(np.random.SeedSequence((seed, epoch))).permutation(num_images)
        steps = num_images // batch
        orders.append(order[:steps * batch].reshape(steps, batch))
    return orders


def time_epochs(stepper, num_images, batch, epochs, seed):
    """Warm up, then time `epochs` epochs of full batches; (seconds per epoch, mean loss per image per epoch)."""
    warm = epoch_orders(num_images, batch, 1, seed + 1)[0]
    for row in warm[:3]:
        stepper.step(stepper.to_device(row))
    seconds, losses = [], []
    for order in epoch_orders(num_images, batch, epochs, seed):
        steps = [stepper.to_device(row) for row in order]      # indices moved before the clock starts
        stepper.sync()
        before = stepper.read_total()
        started = time.perf_counter()
        for index in steps:
            stepper.step(index)
        stepper.sync()
        seconds.append(time.perf_counter() - started)
        losses.append((stepper.read_total() - before) / order.size)
    return seconds, losses


def time_steps(stepper, num_images, batch, seed, target_seconds, repeats=3):
    """Median seconds per step: calibrate a count that takes about target_seconds, then time it `repeats` times."""
    order = epoch_orders(num_images, batch, 1, seed)[0]
    steps = [stepper.to_device(row) for row in order[:64]]
    for index in steps[:3]:
        stepper.step(index)
    stepper.sync()
    started = time.perf_counter()
    for index in steps[:3]:
        stepper.step(index)
    stepper.sync()
    estimate = (time.perf_counter() - started) / 3
    count = int(min(1000, max(3, target_seconds / max(estimate, 1e-7))))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(count):
            stepper.step(steps[i % len(steps)])
        stepper.sync()
        times.append((time.perf_counter() - started) / count)
    return float(np.median(times)), count


def gemm_seconds(shapes, device, rehearse, repeats=20):
    """Seconds that torch.matmul (cuBLAS on a GPU) takes for all these (m, k, n) products once, replayed
    from a CUDA graph (no launch gaps: the best the library does on exactly these shapes). float32, no TF32."""
    import torch
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    operands = [(torch.randn(m, k, generator=generator).to(device), torch.randn(k, n, generator=generator).to(device))
                for m, k, n in shapes]
    outs = [torch.empty(a.shape[0], b.shape[1], device=device) for a, b in operands]

    def products():
        for (a, b), out in zip(operands, outs):
            torch.matmul(a, b, out=out)
    run = capture(products, device, rehearse)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    run()
    sync()
    times = []
    for _ in range(5 if repeats > 2 else 1):
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        sync()
        times.append((time.perf_counter() - started) / repeats)
    return float(np.median(times))
