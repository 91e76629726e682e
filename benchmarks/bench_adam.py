"""Benchmark: Adam's step on the default model, serial against shared out between cores by numpyvae.parallel.

    python benchmarks/bench_adam.py [--rounds 15] [--steps 50]

Both optimizers update the same default VAE (784-400-20, float32, 648,240 parameters). Each round
times `steps` steps of each variant, in alternating order, so load from elsewhere on the machine hits
both alike; the report gives medians over rounds and the median of the per-round ratios. Two settings:

- "Adam alone": step() after step(), the gradients fixed;
- "after a training step": loss_and_grads then step(), timing only step(); BLAS's threads have just
  finished the matrix products (OpenBLAS keeps them spinning for a while), which is where Adam really runs;
- the same with BLAS held to one thread (threadpoolctl), so that only the pool's threads compete for cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # numpyvae from this checkout

from numpyvae import VAE, Adam                                     # noqa: E402
from numpyvae.parallel import ChunkPool, default_pool              # noqa: E402


def time_steps(model, optimizer, steps, x=None):
    """Seconds per optimizer.step(), over `steps` steps; with x, a loss_and_grads(x) (untimed) before each."""
    total = 0.0
    for _ in range(steps):
        if x is not None:
            model.loss_and_grads(x)
        started = time.perf_counter()
        optimizer.step()
        total += time.perf_counter() - started
    return total / steps


def compare(rounds, steps, with_training):
    """{variant: [seconds per step, one per round]}, the variants' order alternating round by round."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (128, 784)).astype(np.float32) if with_training else None
    models = {"serial": VAE(seed=0), "pool": VAE(seed=0)}
    optimizers = {"serial": Adam(models["serial"], pool=ChunkPool(1)), "pool": Adam(models["pool"], pool=default_pool())}
    for name, model in models.items():
        model.flat_grads[:] = rng.standard_normal(model.num_params).astype(np.float32) * 1e-2
        time_steps(model, optimizers[name], 5, x)                                      # warm-up
    times = {name: [] for name in models}
    for round_ in range(rounds):
        for name in (("serial", "pool") if round_ % 2 == 0 else ("pool", "serial")):
            times[name].append(time_steps(models[name], optimizers[name], steps, x))
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"{default_pool()!r}; load average {os.getloadavg()[0]:.1f} before")
    from threadpoolctl import threadpool_limits
    for title, with_training, blas_threads in (("Adam alone", False, None),
                                               ("after a training step", True, None),
                                               ("after a training step, BLAS on 1 thread", True, 1)):
        with threadpool_limits(blas_threads, user_api="blas"):
            times = compare(args.rounds, args.steps, with_training)
        serial, pool = statistics.median(times["serial"]), statistics.median(times["pool"])
        ratio = statistics.median(p / s for p, s in zip(times["pool"], times["serial"]))
        print(f"{title}: serial {1e3 * serial:.3f} ms/step, pool {1e3 * pool:.3f} ms/step; "
              f"pool / serial, median of {args.rounds} rounds: {ratio:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
