"""Benchmark: Adam's step on the default model, serial against shared out between cores by numpyvae.parallel.

    python benchmarks/bench_adam.py [--rounds 31] [--block 0.05]

Both optimizers update the same default VAE (784-400-20, float32, 652,824 parameters). Each round
times a block of steps of each variant, in alternating order, after WARM_UP seconds of untimed steps
(a core that sat idle serves thread wake-ups slowly for a few tens of ms), and records how much CPU
the rest of the machine used meanwhile (benchkit.quiet). The report gives medians over the quiet
rounds and over all rounds, and the median of per-round ratios. Three settings:

- "Adam alone": step() after step(), the gradients fixed;
- "in training, BLAS 2 threads": loss_and_grads then step(), timing only step(); BLAS's threads have
  just finished the matrix products, and OpenBLAS keeps its idle thread spinning on the other core
  for ~0.1 s, so the pool's helper thread competes with it: today's configuration;
- "in training, BLAS 1 thread": the same with BLAS held to one thread (threadpoolctl), so that only
  the pool's threads compete for the cores: the configuration in which the layers would do their own
  threading.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))        # benchkit
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # numpyvae from this checkout

from benchkit.quiet import OthersMeter                           # noqa: E402
from numpyvae import VAE, Adam                                   # noqa: E402
from numpyvae.parallel import ChunkPool, default_pool            # noqa: E402

WARM_UP = 0.15    # seconds of untimed steps before each timed block
QUIET = 0.25      # a round is quiet when the rest of the machine used less than this many cores


def timed_block(model, optimizer, seconds, x=None):
    """Seconds per optimizer.step() over about `seconds` of steps, after WARM_UP seconds untimed.

    With x, a loss_and_grads(x) (untimed) comes before each step, as in training.
    """
    total, steps, warm_until = 0.0, 0, time.perf_counter() + WARM_UP
    while total < seconds:
        if x is not None:
            model.loss_and_grads(x)
        started = time.perf_counter()
        optimizer.step()
        if started >= warm_until:
            total += time.perf_counter() - started
            steps += 1
    return total / steps


def compare(rounds, block, with_training):
    """({variant: [seconds per step, one per round]}, [cores others used, one per round])."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (128, 784)).astype(np.float32) if with_training else None
    models = {"serial": VAE(seed=0), "pool": VAE(seed=0)}
    optimizers = {"serial": Adam(models["serial"], pool=ChunkPool(1)), "pool": Adam(models["pool"], pool=default_pool())}
    for model in models.values():
        model.flat_grads[:] = rng.standard_normal(model.num_params).astype(np.float32) * 1e-2
    times, others = {name: [] for name in models}, []
    for round_ in range(rounds):
        with OthersMeter() as meter:
            for name in (("serial", "pool") if round_ % 2 == 0 else ("pool", "serial")):
                times[name].append(timed_block(models[name], optimizers[name], block, x))
        others.append(meter.cores)
    return times, others


def summary(times, others):
    quiet = [i for i, o in enumerate(others) if o is not None and o < QUIET]

    def line(rounds, what):
        if not rounds:
            return f"{what}: none"
        serial = statistics.median(times["serial"][i] for i in rounds)
        pool = statistics.median(times["pool"][i] for i in rounds)
        ratio = statistics.median(times["pool"][i] / times["serial"][i] for i in rounds)
        return f"{what}: serial {1e3 * serial:.3f} ms, pool {1e3 * pool:.3f} ms, pool / serial {ratio:.2f}"
    return (line(quiet, f"quiet rounds ({len(quiet)} of {len(others)})") + "; "
            + line(range(len(others)), "all rounds"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--block", type=float, default=0.05, help="seconds of timed steps per variant per round")
    args = parser.parse_args(argv)
    print(f"pool: {default_pool()!r}; medians per step; a round is quiet when others used < {QUIET} cores")
    for title, with_training, blas_threads in (("Adam alone", False, None),
                                               ("in training, BLAS 2 threads", True, None),
                                               ("in training, BLAS 1 thread", True, 1)):
        with threadpool_limits(blas_threads, user_api="blas"):
            print(f"{title}: " + summary(*compare(args.rounds, args.block, with_training)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
