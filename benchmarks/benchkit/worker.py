"""One measurement, in the fresh process the harness starts for it: a training or scaling run, then the floor."""
from __future__ import annotations

import os

from benchkit import numpyvae_runner, torch_runner
from benchkit.matmul import measure_matmul_rate, network_shapes


def peak_rss_bytes():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def run_worker(spec):
    """Run one measurement in this process (a fresh one per run) and return its results as a dict.

    After a training run, the same process times the step's matrix products alone at the same shapes
    (benchkit.matmul): the matmul floor of that very run, on the same machine state.
    """
    images, source = numpyvae_runner.load_train_images(spec["images"], spec["allow_synthetic"])
    name = spec["backend"]
    result = {"backend": name, "task": spec["task"], "data": source, "num_images": len(images),
              "loadavg_before": os.getloadavg()}
    runner = torch_runner if name == "torch" else numpyvae_runner
    result.update(runner.measure(spec, images))
    if spec["task"] == "train" and "blas_threads" not in spec:    # busy-load runs need no floor
        shapes = network_shapes(spec["batch_size"], numpyvae_runner.network(spec))
        result["matmul_gflops"] = measure_matmul_rate(name, shapes, spec.get("device"),
                                                      *((2, 2) if spec["quick"] else (7, 10)))
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["loadavg_after"] = os.getloadavg()
    return result
