"""Benchmark: each conv layer of the default conv VAE, forward and backward, numpyvae against PyTorch.

    python benchmarks/bench_conv_layers.py [--rounds 15] [--block 0.2] [--threads 1,2] [--out benchmarks/results]

The four layers of TensorFlow's CVAE shape, batch 128, float32 (issue 18):
    conv 1->32 k3 s2 p1 (28->14), conv 32->64 k3 s2 p1 (14->7),
    transposed conv 64->32 k3 s2 p1 op1 (7->14), transposed conv 32->1 k3 s2 p1 op1 (14->28).
The first layer's backward computes no input gradient (its input is data), in both libraries.

One process, both libraries, the same number of threads (threadpoolctl for BLAS, torch.set_num_threads).
Each round runs every (layer, library) pair for a block of `--block` seconds of steps (forward then
backward, each timed, as in training), the libraries in alternating order, and records the median
step of the block; the report gives the median over rounds, and for numpyvae where the time goes
(a second pass with the layer's pieces wrapped in timers). PyTorch's gradients are set to None
before each backward, as optimizer.zero_grad() does by default, so it allocates them fresh and
numpyvae assigns them: neither adds into old ones. The 1-minute load average is recorded before
and after, and each round how many cores the rest of the machine used (benchkit.quiet).

Every step is timed on two clocks: the wall clock, and the calling thread's CPU clock, which stops
while other processes hold the core. On one thread (BLAS and PyTorch both run on the calling thread
then) the CPU-time ratio is the fairer one on a shared machine; on more threads only wall time means
anything, and only on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))        # benchkit
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # numpyvae from this checkout

from benchkit.quiet import OthersMeter                           # noqa: E402
from benchkit.report import machine_info                         # noqa: E402
from numpyvae import conv                                        # noqa: E402
from numpyvae.conv import Conv2d, ConvTranspose2d                # noqa: E402
from numpyvae.layers import Workspace                            # noqa: E402

BATCH = 128
# label, numpyvae entry, its PyTorch twin's (class name, arguments), input (C, H, W), input gradient wanted
LAYERS = [
    ("conv 1->32, 28->14", Conv2d("e1", 1, 32, 3, 2, 1), ("Conv2d", (1, 32, 3, 2, 1)), (1, 28, 28), False),
    ("conv 32->64, 14->7", Conv2d("e2", 32, 64, 3, 2, 1), ("Conv2d", (32, 64, 3, 2, 1)), (32, 14, 14), True),
    ("convT 64->32, 7->14", ConvTranspose2d("d1", 64, 32, 3, 2, 1, 1), ("ConvTranspose2d", (64, 32, 3, 2, 1, 1)),
     (64, 7, 7), True),
    ("convT 32->1, 14->28", ConvTranspose2d("d2", 32, 1, 3, 2, 1, 1), ("ConvTranspose2d", (32, 1, 3, 2, 1, 1)),
     (32, 14, 14), True),
]
# numpyvae's pieces, by what they do; a piece called inside another counts for the outer one only
PIECES = {
    "products (BLAS)": ("conv2d_product", "conv2d_weight_grad", "conv2d_patch_grad"),
    "im2col (pad + patch copy)": ("im2col",),
    "col2im (scatter-add)": ("col2im",),
    "layout copies (NCHW <-> inside)": ("channels_first", "batch_last", "from_channels_first", "from_batch_last"),
}


def clocks():
    """(wall seconds, this thread's CPU seconds). On one thread, CPU time leaves out the time the
    machine's other work held the core: the fairer measure on a shared machine."""
    return time.perf_counter(), time.thread_time()


def split(started, middle, ended):
    """(forward wall, backward wall, forward CPU, backward CPU) seconds from three clocks() readings."""
    return middle[0] - started[0], ended[0] - middle[0], middle[1] - started[1], ended[1] - middle[1]


class Ours:
    """One numpyvae layer with its parameters, gradients, workspace and input: step() runs forward + backward."""

    def __init__(self, layer, input_shape, need_dx, rng):
        self.layer, self.need_dx, self.ws = layer, need_dx, Workspace(np, np.float32)
        shapes = layer.parameters()
        self.params = {n: (0.1 * rng.standard_normal(s)).astype(np.float32) for n, s in shapes.items()}
        self.grads = {n: np.empty(s, np.float32) for n, s in shapes.items()}
        self.x = rng.standard_normal((BATCH,) + input_shape).astype(np.float32)
        y, _ = layer.forward(np, self.params, self.x, self.ws)
        self.dy = rng.standard_normal(y.shape).astype(np.float32)

    def step(self):
        started = clocks()
        _, cache = self.layer.forward(np, self.params, self.x, self.ws)
        middle = clocks()
        self.layer.backward(np, self.params, self.grads, self.dy, cache, self.ws, need_dx=self.need_dx)
        return split(started, middle, clocks())


class Theirs:
    """The same layer in PyTorch, on the same numbers."""

    def __init__(self, torch, spec, ours):
        kind, args = spec
        self.module = getattr(torch.nn, kind)(*args)
        with torch.no_grad():
            self.module.weight.copy_(torch.from_numpy(ours.params[f"{ours.layer.name}.W"]))
            self.module.bias.copy_(torch.from_numpy(ours.params[f"{ours.layer.name}.b"]))
        self.x = torch.from_numpy(ours.x).requires_grad_(ours.need_dx)
        self.dy = torch.from_numpy(ours.dy)

    def step(self):
        self.module.weight.grad = self.module.bias.grad = self.x.grad = None
        started = clocks()
        y = self.module(self.x)
        middle = clocks()
        y.backward(self.dy)
        return split(started, middle, clocks())


def block(runner, seconds):
    """Medians of (forward wall, backward wall, forward CPU, backward CPU) seconds over about
    `seconds` of steps, after one untimed step."""
    runner.step()
    steps, spent = [], 0.0
    while spent < seconds or len(steps) < 3:
        steps.append(runner.step())
        spent += steps[-1][0] + steps[-1][1]
    return tuple(statistics.median(column) for column in zip(*steps))


class PieceTimers:
    """Wraps numpyvae's conv pieces (PIECES) in timers for the duration of a `with` block."""

    def __init__(self, clock):
        self.seconds = dict.fromkeys(PIECES, 0.0)
        self._inside, self.clock = False, clock

    def _wrap(self, piece, function):
        def timed(*args, **kwargs):
            if self._inside:
                return function(*args, **kwargs)
            self._inside, started = True, self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[piece] += self.clock() - started
                self._inside = False
        return timed

    def __enter__(self):
        self._saved = {}
        for piece, names in PIECES.items():
            for name in names:
                self._saved[name] = getattr(conv, name)      # the names conv.py calls them by
                setattr(conv, name, self._wrap(piece, self._saved[name]))
        return self

    def __exit__(self, *exc):
        for name, function in self._saved.items():
            setattr(conv, name, function)
        return False


def breakdown(runner, steps, cpu):
    """Milliseconds of each piece of numpyvae's forward + backward in the median step of `steps`
    (by total; one real step, so its pieces add up). cpu: time on this thread's CPU clock, else wall."""
    per_step = []
    runner.step()
    for _ in range(steps):
        with PieceTimers(time.thread_time if cpu else time.perf_counter) as timers:
            timings = runner.step()
        total = timings[2] + timings[3] if cpu else timings[0] + timings[1]
        row = {piece: 1e3 * s for piece, s in timers.seconds.items()}
        row["rest (bias, db sums, Python)"] = 1e3 * (total - sum(timers.seconds.values()))
        row["total"] = 1e3 * total
        per_step.append(row)
    return sorted(per_step, key=lambda row: row["total"])[len(per_step) // 2]


def measure(torch, threads, rounds, seconds, breakdown_steps):
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    pairs = []
    for label, layer, spec, input_shape, need_dx in LAYERS:
        ours = Ours(layer, input_shape, need_dx, rng)
        pairs.append((label, {"numpyvae": ours, "torch": Theirs(torch, spec, ours)}))
    times = {label: {lib: [] for lib in runners} for label, runners in pairs}
    others = []
    with threadpool_limits(threads, user_api="blas"):
        for round_ in range(rounds):
            with OthersMeter() as meter:
                for label, runners in pairs:
                    order = ("numpyvae", "torch") if round_ % 2 == 0 else ("torch", "numpyvae")
                    for lib in order:
                        times[label][lib].append(block(runners[lib], seconds))
            others.append(meter.cores)
        pieces = {label: breakdown(runners["numpyvae"], breakdown_steps, cpu=threads == 1) for label, runners in pairs}
    rows = []
    for label, _ in pairs:
        row = {"layer": label}
        for lib in ("numpyvae", "torch"):
            for index, key in enumerate(("forward_ms", "backward_ms", "forward_cpu_ms", "backward_cpu_ms")):
                row[f"{lib}_{key}"] = 1e3 * statistics.median(b[index] for b in times[label][lib])
        row["ratio"] = ((row["numpyvae_forward_ms"] + row["numpyvae_backward_ms"])
                        / (row["torch_forward_ms"] + row["torch_backward_ms"]))
        # on one thread, the same ratio in CPU time; on more, the calling thread's CPU time misses the others'
        row["ratio_cpu"] = ((row["numpyvae_forward_cpu_ms"] + row["numpyvae_backward_cpu_ms"])
                            / (row["torch_forward_cpu_ms"] + row["torch_backward_cpu_ms"])) if threads == 1 else None
        row["numpyvae_pieces_ms"] = pieces[label]
        rows.append(row)
    return {"threads": threads, "rows": rows, "others_cores": others,
            "raw_seconds": {label: {lib: v for lib, v in libs.items()} for label, libs in times.items()}}


def markdown(report):
    m = report["machine"]
    lines = ["# Conv layers: numpyvae against PyTorch, per layer", "",
             f"`python benchmarks/bench_conv_layers.py {' '.join(report['argv'])}`, {report['date']}; "
             f"{m['cpu']}, {m['cores']} cores; NumPy {m['numpy']} ({m['blas']}, kernel {m['blas_kernel']}; "
             f"forced by the environment: {m['blas_environment']}), PyTorch {report['torch']}. "
             f"Batch {BATCH}, float32, the default conv VAE's four conv layers. 1-minute load average: "
             f"{report['load_before'][0]:.1f} before, {report['load_after'][0]:.1f} after "
             f"(on {m['cores']} cores; the benchmark's own threads count in it). Medians over "
             f"{report['rounds']} interleaved rounds of {report['block']} s blocks per layer and library.", ""]
    for run in report["runs"]:
        one = run["threads"] == 1
        known = [o for o in run["others_cores"] if o is not None]
        lines += [f"## {run['threads']} thread{'' if one else 's'}", ""]
        if known:
            lines += [f"Other processes used {statistics.median(known):.2f} cores (median over rounds; "
                      f"max {max(known):.2f}).", ""]
        lines += ["| layer | numpyvae forward, ms | PyTorch forward, ms | numpyvae backward, ms | "
                  "PyTorch backward, ms | numpyvae / PyTorch, wall | numpyvae / PyTorch, CPU time |",
                  "|---|---|---|---|---|---|---|"]
        wall = {"numpyvae": 0.0, "torch": 0.0}
        cpu = {"numpyvae": 0.0, "torch": 0.0}
        for row in run["rows"]:
            cpu_ratio = f"**{row['ratio_cpu']:.2f}**" if one else "-"
            lines.append(f"| {row['layer']} | {row['numpyvae_forward_ms']:.2f} | {row['torch_forward_ms']:.2f} | "
                         f"{row['numpyvae_backward_ms']:.2f} | {row['torch_backward_ms']:.2f} | "
                         f"**{row['ratio']:.2f}** | {cpu_ratio} |")
            for lib in wall:
                wall[lib] += row[f"{lib}_forward_ms"] + row[f"{lib}_backward_ms"]
                cpu[lib] += row[f"{lib}_forward_cpu_ms"] + row[f"{lib}_backward_cpu_ms"]
        cpu_total = f"**{cpu['numpyvae'] / cpu['torch']:.2f}**" if one else "-"
        lines += [f"| all four, forward + backward | {wall['numpyvae']:.2f} || {wall['torch']:.2f} || "
                  f"**{wall['numpyvae'] / wall['torch']:.2f}** | {cpu_total} |", ""]
        if one:
            lines += [f"In CPU time (this thread's clock, which stops while other work holds the core): "
                      f"numpyvae {cpu['numpyvae']:.2f} ms, PyTorch {cpu['torch']:.2f} ms for the four layers' "
                      f"forward + backward.", ""]
        clock = "CPU" if one else "wall"
        lines += [f"Where numpyvae's time goes, {clock} ms per forward + backward (the median of the steps timed "
                  "piece by piece):", "",
                  "| layer | " + " | ".join(run["rows"][0]["numpyvae_pieces_ms"]) + " |",
                  "|---|" + "---|" * len(run["rows"][0]["numpyvae_pieces_ms"])]
        for row in run["rows"]:
            pieces = " | ".join(f"{v:.2f}" for v in row["numpyvae_pieces_ms"].values())
            lines.append(f"| {row['layer']} | {pieces} |")
        products = sum(row["numpyvae_pieces_ms"]["products (BLAS)"] for row in run["rows"])
        torch_total = cpu["torch"] if one else wall["torch"]
        lines += ["", f"numpyvae's matrix products alone take {products:.2f} ms of the four layers' forward + "
                      f"backward, {products / torch_total:.2f} of PyTorch's whole time for them ({clock}): with "
                      f"im2col on this BLAS, no copy or scatter-add brings the ratio below that.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=float, default=0.2,
                        help="seconds of timed steps per layer and library per round")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts to run (default 1,2)")
    parser.add_argument("--breakdown-steps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder for conv_layers.md and conv_layers.json")
    parser.add_argument("--quick", action="store_true", help="2 rounds of tiny blocks, to check the script runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.block, args.breakdown_steps = 2, 0.01, 2
    try:
        import torch
    except ImportError:
        print("bench_conv_layers: needs PyTorch (pip install torch) to compare against", file=sys.stderr)
        return 1
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "argv": (argv or sys.argv[1:]),
              "machine": machine_info(), "torch": torch.__version__, "rounds": args.rounds, "block": args.block,
              "load_before": os.getloadavg(), "runs": []}
    for threads in (int(t) for t in args.threads.split(",")):
        report["runs"].append(measure(torch, threads, args.rounds, args.block, args.breakdown_steps))
    report["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conv_layers.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "conv_layers.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
