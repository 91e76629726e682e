"""numpyvae's side of a measurement: the training images, timed epochs, and seconds per step."""
from __future__ import annotations

import time
from itertools import islice

import numpy as np


def load_train_images(limit, allow_synthetic):
    """((N, 784) uint8 training images, where they came from): the real Fashion-MNIST through numpyvae's loader.

    With allow_synthetic (--quick), random images stand in where the real files cannot be found.
    """
    from numpyvae.datasets import DataError, load_fashion_mnist
    try:
        images, _ = load_fashion_mnist("train", download=False)
        source = "Fashion-MNIST train"
    except DataError:
        if not allow_synthetic:
            raise
        images = np.random.default_rng(0).integers(0, 256, size=(limit or 1024, 28, 28), dtype=np.uint8)
        source = "synthetic (the real Fashion-MNIST files were not found)"
    images = images[:limit] if limit else images
    return np.ascontiguousarray(images).reshape(len(images), -1), source


def network(spec, hidden=None):
    """The VAE settings of a spec: the dense model with `hidden` units (default spec's), or spec["arch"]'s default."""
    if spec.get("arch", "dense") != "dense":
        return {"arch": spec["arch"], "latent_dim": spec["latent_dim"]}
    return {"hidden_dims": (hidden or spec["hidden_dim"],), "latent_dim": spec["latent_dim"]}


def numpyvae_training(backend, data, spec, threads=None):
    """Train `spec["epochs"]` epochs; per-epoch seconds and mean train loss per image.

    threads: a numpyvae.threads.Threads to tick after every step, or None. With spec["max_seconds"],
    an epoch that runs longer stops there and its time is extrapolated from the steps it made.
    """
    from numpyvae import VAE, Adam
    xp = backend.xp
    batch, seed = spec["batch_size"], spec["seed"]

    # warm up: kernels compiled (CuPy), BLAS threads started, buffers allocated, on a throwaway model
    warm = VAE(**network(spec), backend=backend, seed=seed)
    warm_optimizer = Adam(warm, lr=spec["lr"])
    for x in islice(data.batches(batch), 3):
        warm.loss_and_grads(x)
        warm_optimizer.step()
    del warm, warm_optimizer

    model = VAE(**network(spec), backend=backend, seed=seed)
    optimizer = Adam(model, lr=spec["lr"])
    eps_rng = backend.rng((seed, spec["noise_seed"]))   # repeats differ only in this noise
    seconds, losses, steps = [], [], 0
    limit = spec.get("max_seconds")                     # busy-load runs: stop a hopeless epoch early
    for epoch in range(1, spec["epochs"] + 1):
        total = xp.zeros((), dtype=np.float64)          # summed on the device, read once per epoch
        steps, steps_per_epoch = 0, data.num_batches(batch)
        backend.synchronize()
        started = time.perf_counter()
        for x in data.batches(batch, shuffle=True, seed=(seed, epoch)):
            loss, _, _ = model.loss_and_grads(x, rng=eps_rng)
            optimizer.step()
            total += loss
            steps += 1
            if threads is not None:
                threads.tick()
            if limit and steps < steps_per_epoch and time.perf_counter() - started > limit:
                break
        backend.synchronize()
        seconds.append((time.perf_counter() - started) * steps_per_epoch / steps)
        losses.append(backend.scalar(total) / (steps * batch if steps < steps_per_epoch else len(data)))
        if steps < steps_per_epoch:
            break                                       # the report marks it: steps < the epoch's
    return seconds, losses, steps


def numpyvae_seconds_per_step(backend, data, batch, hidden, spec, steps):
    from numpyvae import VAE, Adam
    model = VAE(**network(spec, hidden), backend=backend, seed=spec["seed"])
    optimizer = Adam(model, lr=spec["lr"])

    def endless():
        epoch = 0
        while True:
            yield from data.batches(batch, shuffle=True, seed=(spec["seed"], epoch), drop_last=True)
            epoch += 1
    batches = endless()
    for x in islice(batches, 5):                      # warm-up, untimed
        model.loss_and_grads(x)
        optimizer.step()
    backend.synchronize()
    started = time.perf_counter()
    for x in islice(batches, steps):
        model.loss_and_grads(x)
        optimizer.step()
    backend.synchronize()
    return (time.perf_counter() - started) / steps


def measure(spec, images):
    """The results of one numpyvae run of spec["task"] ("train" or "scaling") on the (N, D) uint8 images."""
    from numpyvae.backend import get_backend
    from numpyvae.batches import DeviceDataset
    backend = get_backend(spec["backend"])
    data = DeviceDataset(images, backend)
    result = {"numpy_version": np.__version__}
    if spec["task"] == "train" and "blas_threads" in spec:      # a busy-load run (benchkit.busy)
        from benchkit.quiet import OthersMeter
        from numpyvae.threads import Threads
        setting = spec["blas_threads"]
        with Threads(setting) as threads, OthersMeter() as others:
            seconds, losses, steps = numpyvae_training(backend, data, spec, threads)
        ends = [step for step, _ in threads.history[1:]] + [threads.steps]
        steps_at = {}                                  # {thread count: steps run at it}
        for (start, count), end in zip(threads.history, ends):
            steps_at[str(count)] = steps_at.get(str(count), 0) + end - start
        result.update(epoch_seconds=seconds, epoch_loss=losses, steps=steps, others_cores=others.cores,
                      extrapolated=steps < data.num_batches(spec["batch_size"]), steps_at_threads=steps_at,
                      threads_history=threads.history[:50])
    elif spec["task"] == "train":
        seconds, losses, steps = numpyvae_training(backend, data, spec)
        result.update(epoch_seconds=seconds, epoch_loss=losses, steps=steps)
    else:
        result["seconds_per_step"] = {
            f"{batch},{hidden}": numpyvae_seconds_per_step(backend, data, batch, hidden, spec,
                                                           max(5, spec["scaling_images"] // batch))
            for batch, hidden in spec["configs"]}
    if backend.name == "cupy":
        pool = backend.xp.get_default_memory_pool()
        result.update(pool_total_bytes=pool.total_bytes(), pool_used_bytes=pool.used_bytes())
    return result
