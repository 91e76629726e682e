"""The timing harness: every measurement in a fresh process, backends interleaved round by round.

A fresh process per run makes peak memory that backend's alone and gives each run the same cold
start; rotating the order of the backends every round makes a burst of load from elsewhere on the
machine hit them alike. The worker is bench_backends.py itself, called with --worker and a JSON spec.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench_backends.py"


def available_backends(wanted):
    """(backends to run, {backend: why not}) for the requested names."""
    from numpyvae.backend import cuda_unavailable_reason
    run, skipped = [], {}
    for name in wanted:
        if name == "cupy" and cuda_unavailable_reason() is not None:
            skipped[name] = f"not run: {cuda_unavailable_reason()}"
        elif name == "torch" and importlib.util.find_spec("torch") is None:
            skipped[name] = "not run: PyTorch is not installed"
        else:
            run.append(name)
    return run, skipped


def spawn(spec, threads, timeout, on_start=None):
    """Run one worker in a fresh Python process with `threads` BLAS/OpenMP/numpyvae threads; return its results.

    on_start(pid) is called once the worker runs. Whatever ends the wait (a timeout, Ctrl-C, the
    SIGTERM that bench_backends.py turns into SystemExit) kills the worker first: none outlives the benchmark.
    """
    env = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMPYVAE_NUM_THREADS"):
        env[variable] = str(threads)
    with subprocess.Popen([sys.executable, str(SCRIPT), "--worker", json.dumps(spec)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            if on_start is not None:
                on_start(process.pid)
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    if process.returncode != 0:
        raise RuntimeError(f"the {spec['backend']} {spec['task']} worker failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def interleaved(backends, repeats, make_spec, threads, timeout, log):
    """repeats rounds over the backends, the order rotated each round; {backend: [results]}."""
    results = {name: [] for name in backends}
    for round_ in range(repeats):
        order = backends[round_ % len(backends):] + backends[:round_ % len(backends)]
        for name in order:
            spec = make_spec(name, round_)
            what = f"  {spec['task']} {name} round {round_ + 1}/{repeats}"
            started = time.perf_counter()
            results[name].append(spawn(spec, threads, timeout,
                                       on_start=lambda pid: log(f"{what}: running (worker {pid})...")))
            log(f"{what}: {time.perf_counter() - started:.1f} s")
    return results
