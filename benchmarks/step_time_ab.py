"""Benchmark: the training step's time at two commits, interleaved, on the same machine in one run.

    python benchmarks/step_time_ab.py BEFORE AFTER [--rounds 15] [--steps 40] [--out benchmarks/results/NAME.md]

Each commit is checked out into a temporary worktree that this script creates and removes (it
deletes nothing else). Every round runs, for each commit in turn and in alternating order, a fresh
Python process that imports that commit's numpyvae, warms up, and times `--steps` training steps
(loss_and_grads, then Adam's step) of each model below on a fixed batch of random pixels. The
machines are shared and their load varies, so what is reported is the median over rounds of each
commit's milliseconds per step and the median of the per-round ratios AFTER / BEFORE: a load
that comes and goes hits both commits of a round alike. BLAS runs on one thread, so the two cores
are not fought over by the benchmark itself.

Models: the seed's 784-400-20 dense VAE at batch 128 (the speed table's), the same on the IWAE bound
with K = 5, and the default conv VAE at batch 64; float32, NumPy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# what each timed process runs, with its commit's numpyvae first on the path
WORKER = r"""
import json, sys, time
import numpy as np
from numpyvae import VAE, Adam
steps = int(sys.argv[1])
models = {"dense, batch 128": (dict(), 128, {}), "dense IWAE K = 5, batch 128": (dict(), 128, {"objective": "iwae"}),
          "conv, batch 64": (dict(arch="conv"), 64, {})}
times = {}
for label, (settings, batch, step) in models.items():
    model = VAE(seed=0, **settings)
    adam = Adam(model, lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, 784)).astype(np.float32)
    shape = (5, batch, model.latent_dim) if step else (batch, model.latent_dim)
    eps = rng.standard_normal(shape).astype(np.float32)
    for _ in range(5):                                         # warm-up: the workspace is allocated here
        model.loss_and_grads(x, eps=eps, **step); adam.step()
    started = time.perf_counter()
    for _ in range(steps):
        model.loss_and_grads(x, eps=eps, **step); adam.step()
    times[label] = (time.perf_counter() - started) / steps * 1e3
print(json.dumps(times))
"""


def worktree(commit, into):
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), commit], check=True,
                   capture_output=True)
    return into


def time_commit(path, steps):
    env = {**os.environ, "PYTHONPATH": str(path), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WORKER, str(steps)], env=env, cwd=path, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    made = Path(tempfile.mkdtemp(prefix="numpyvae-ab-"))
    paths = {}
    try:
        for name in ("before", "after"):
            paths[name] = worktree(getattr(args, name), made / name)
        rounds = []
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            rounds.append({name: time_commit(paths[name], args.steps) for name in order})
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {json.dumps(rounds[-1][n])}" for n in order),
                  flush=True)
    finally:
        for path in paths.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
        if made.exists() and not any(made.iterdir()):
            made.rmdir()
    labels = list(rounds[0]["before"])
    lines = [f"# Step time at {args.before} against {args.after}, interleaved",
             "",
             f"`python benchmarks/step_time_ab.py {args.before} {args.after} --rounds {args.rounds} --steps {args.steps}`: "
             f"{args.rounds} rounds, each timing {args.steps} steps (after 5 untimed) of each model at each commit in a "
             "fresh process, the commits' order alternating; float32 NumPy, BLAS on one thread; random pixels. "
             f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine).",
             "",
             "| model | ms / step before | ms / step after | after / before (median of rounds' ratios) |",
             "|---|---:|---:|---:|"]
    for label in labels:
        before = statistics.median(r["before"][label] for r in rounds)
        after = statistics.median(r["after"][label] for r in rounds)
        ratio = statistics.median(r["after"][label] / r["before"][label] for r in rounds)
        lines.append(f"| {label} | {before:.2f} | {after:.2f} | {ratio:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
