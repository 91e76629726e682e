"""Benchmark: numpyvae on NumPy (and on CuPy where a GPU is usable) against the same model in PyTorch.

    python benchmarks/bench_backends.py                       # full run, a few minutes; writes benchmarks/results/
    python benchmarks/bench_backends.py --quick               # a smoke test for CI, 10 s to a minute: checks that
                                                              # every part runs, on 512 images; its numbers judge
                                                              # nothing (no speed targets are checked). Into a new
                                                              # temporary directory (or --out DIR)
    python benchmarks/bench_backends.py --busy-load           # numpyvae beside busy-looping processes (benchkit.busy):
                                                              # writes benchmarks/results/busy_load.{md,json}

Every backend trains the default model (784-400-20, ReLU, Adam lr 1e-3, batch 128, BCE summed
over pixels + KL, pixels in [0, 1]) on Fashion-MNIST held in memory, from the same initial
weights and in the same image order. Each run is a separate process, so peak memory is the
peak of that backend alone, and the runs of different backends are interleaved (A B A B ...)
so a burst of load from elsewhere on the machine hits them alike; the tables report medians.

Reported per backend: seconds per epoch and per step, images per second, the achieved matmul
GFLOP/s (matmul FLOPs of an epoch / its time) against the rate the same library reaches on the
same matrix shapes alone, peak resident memory of the process, the CuPy memory pool's bytes, the
train loss of every epoch, and a scaling table over batch size and hidden size. GPU timings wait
for the device before reading the clock (CuPy and CUDA run asynchronously).

The report also gives each backend's "matmul floor": its epoch time over the time its matrix products
alone take at the same shapes, measured in the same process right after training.

Results: bench_backends.json (everything, raw runs included), bench_backends.md (the tables)
and bench_backends.png (epoch times, loss curves, scaling) in --out.

This file is the command line and the order of events; the parts live in benchkit/: config (what is
run), harness (fresh processes, interleaving), worker with numpyvae_runner and torch_runner (one
measurement), matmul (the products of a step and the floor), report (medians, tables) and plot.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))          # benchkit and torch_reference
sys.path.insert(0, str(HERE.parent))   # numpyvae itself, when run from a checkout without installing

from benchkit.busy import markdown as busy_markdown, measure_bookkeeping, run_busy_load   # noqa: E402
from benchkit.config import BACKENDS, FULL, MODEL, QUICK             # noqa: E402
from benchkit.harness import available_backends, interleaved, spawn   # noqa: E402
from benchkit.matmul import matmul_flops, network_shapes             # noqa: E402
from benchkit.numpyvae_runner import network                         # noqa: E402
from benchkit.plot import plot                                       # noqa: E402
from benchkit.report import machine_info, markdown, summarize        # noqa: E402
from numpyvae.cli import Parser, natural, positive_int               # noqa: E402  one-line errors, as numpyvae's


def _more_than_zero(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):      # NaN too
        raise argparse.ArgumentTypeError(f"must be a finite number more than 0, got {text}")
    return value


def _core_counts(text):
    """"0,1,2" -> [0, 1, 2]: numbers of competing busy cores, each at most twice the machine's cores."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}")
    most = 2 * (os.cpu_count() or 1)     # one busy-looping process each: more only swamps the machine
    if any(int(part) > most for part in parts):
        raise argparse.ArgumentTypeError(f"each count must be at most {most} (twice this machine's cores), got {text}")
    return [int(part) for part in parts]


def _directory(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory, got ''")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return path


def _terminated(signum, frame):
    # SIGTERM as an exception: subprocess.run then kills the worker it waits for, and busy loops stop
    raise SystemExit(128 + signum)


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test, 10 s to a minute: 512 images, 2 epochs, 1 run; checks that it runs, "
                             "judges no speed")
    parser.add_argument("--out", type=_directory, help="directory for the results (default benchmarks/results/; "
                                                 "with --quick a new temporary directory, so a smoke test never "
                                                 "replaces the committed results)")
    parser.add_argument("--busy-load", action="store_true",
                        help="only the busy-machine measurement: thread settings beside 0 and 1 busy-looping "
                             "processes (and one per core with --busy-cores)")
    parser.add_argument("--busy-cores", type=_core_counts, default=[0, 1],
                        help="competing busy cores to measure (default 0,1)")
    parser.add_argument("--max-seconds", type=_more_than_zero, default=20,
                        help="--busy-load: stop an epoch after this long and extrapolate (default 20)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, from: numpy, cupy, torch")
    parser.add_argument("--epochs", type=positive_int, help="epochs per run")
    parser.add_argument("--repeats", type=positive_int, help="runs per backend, interleaved")
    parser.add_argument("--images", type=positive_int, help="train on the first N images (default: all 60,000)")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count(),
                        help="BLAS / PyTorch threads (default: all cores)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the batch-size and hidden-size tables")
    parser.add_argument("--seed", type=natural, default=0)
    parser.add_argument("--arch", choices=("dense", "conv"), default="dense",
                        help="the model (default dense); conv writes bench_backends_conv.* and needs --no-scaling")
    parser.add_argument("--worker", help=argparse.SUPPRESS)   # internal: one measurement, JSON in and out
    args = parser.parse_args(argv)

    if args.worker:
        from benchkit.worker import run_worker
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    log = lambda message: print(message, file=sys.stderr, flush=True)   # noqa: E731
    wanted = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(wanted) - set(BACKENDS)
    if unknown or not wanted:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown)) or repr(args.backends)}; "
                     f"choose from {', '.join(BACKENDS)}")
    if args.arch != "dense" and not args.no_scaling:
        parser.error("the scaling tables vary the dense model's hidden size: give --no-scaling with --arch conv")
    signal.signal(signal.SIGTERM, _terminated)
    if args.quick:
        log("smoke test (--quick): checks that every part of the benchmark runs, on a few hundred images; "
            "its timings are too short to judge speed, and no speed target is checked")
    try:
        if args.busy_load:
            return busy_load(args, argv, log)
        return backends_benchmark(args, argv, parser, log)
    except SystemExit as stop:
        if isinstance(stop.code, int) and stop.code > 128:
            log(f"bench_backends.py: terminated ({signal.Signals(stop.code - 128).name}); workers stopped")
        raise
    except KeyboardInterrupt:
        log("bench_backends.py: interrupted; workers stopped")
        return 128 + signal.SIGINT


def results_dir(args):
    """--out, made if missing; without it, benchmarks/results, or with --quick a new temporary directory
    (made only now, when there are results to write: a failed run leaves none behind)."""
    if args.out is None:
        return Path(tempfile.mkdtemp(prefix="bench_backends_quick_")) if args.quick else HERE / "results"
    args.out.mkdir(parents=True, exist_ok=True)
    return args.out


def backends_benchmark(args, argv, parser, log):
    """The training and scaling runs, their report, tables and figure."""
    settings = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "repeats", "images"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    wanted = [name.strip() for name in args.backends.split(",") if name.strip()]
    log("checking which backends can run (imports CuPy and PyTorch where installed)...")
    backends, skipped = available_backends(wanted)
    if not backends:
        parser.error("none of the requested backends can run here: " + "; ".join(skipped.values()))
    timeout = 600 if args.quick else 3600
    config = dict(MODEL, **settings, arch=args.arch)
    base = {"seed": args.seed, "threads": args.threads, "quick": args.quick, "allow_synthetic": args.quick,
            "images": settings["images"], **MODEL, "arch": args.arch}

    log(f"training runs: {', '.join(backends)}" + (f" (skipped: {'; '.join(f'{k}: {v}' for k, v in skipped.items())})"
                                                     if skipped else ""))
    train = interleaved(backends, settings["repeats"],
                        lambda name, r: dict(base, backend=name, task="train", epochs=settings["epochs"], noise_seed=r),
                        args.threads, timeout, log)
    flops_per_image = matmul_flops(network_shapes(1, network(base)))
    rows = [summarize(name, train[name], flops_per_image) for name in backends]

    scaling, raw_scaling = {}, {}
    if not args.no_scaling:
        configs = ([(b, MODEL["hidden_dim"]) for b in settings["scaling_batches"]]
                   + [(MODEL["batch_size"], h) for h in settings["scaling_hidden"]])
        configs = list(dict.fromkeys(configs))   # the default (128, 400) appears in both lists
        raw_scaling = interleaved(backends, settings["scaling_repeats"],
                                  lambda name, r: dict(base, backend=name, task="scaling", configs=configs,
                                                       scaling_images=settings["scaling_images"]),
                                  args.threads, timeout, log)
        for key, values, make in (("batch", settings["scaling_batches"], lambda v: (v, MODEL["hidden_dim"])),
                                  ("hidden", settings["scaling_hidden"], lambda v: (MODEL["batch_size"], v))):
            scaling[key] = {}
            for name in backends:
                scaling[key][name] = {}
                for value in values:
                    batch, hidden = make(value)
                    step = statistics.median(run["seconds_per_step"][f"{batch},{hidden}"] for run in raw_scaling[name])
                    scaling[key][name][str(value)] = {"seconds_per_step": step, "images_per_second": batch / step}

    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
        "command": "python benchmarks/bench_backends.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                           if (argv if argv is not None else sys.argv[1:]) else ""),
        "machine": machine_info(), "threads": args.threads, "config": config, "backends": backends,
        "skipped": skipped, "rows": rows, "scaling": scaling, "raw": {"train": train, "scaling": raw_scaling},
    }
    if "torch" in backends:
        report["numpy_over_torch_epoch_time"] = (
            next(r for r in rows if r["backend"] == "numpy")["seconds_per_epoch"]
            / next(r for r in rows if r["backend"] == "torch")["seconds_per_epoch"]) if "numpy" in backends else None
    out = results_dir(args)
    stem = "bench_backends" + ("" if args.arch == "dense" else f"_{args.arch}")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    log("drawing the figure...")
    plot(report, out / f"{stem}.png")
    print(markdown(report))
    log(f"wrote {out / stem}.json, .md and .png")
    return 0


def busy_load(args, argv, log):
    """The busy-machine measurement alone (benchkit.busy): busy_load.{json,md} in --out."""
    settings = QUICK if args.quick else FULL
    loads = args.busy_cores
    base = {"seed": args.seed, "threads": args.threads, "quick": args.quick, "allow_synthetic": args.quick,
            "images": args.images if args.images is not None else settings["images"], **MODEL}
    timeout = 600 if args.quick else 3600
    report = run_busy_load(base, args.repeats or (1 if args.quick else 3), loads, args.epochs or 1,
                           args.max_seconds,
                           lambda spec: spawn(spec, args.threads, timeout,
                                              on_start=lambda pid: log(f"  running (worker {pid})...")), log)
    report.update(bookkeeping=measure_bookkeeping())
    report.update(date=datetime.datetime.now().isoformat(timespec="seconds"), machine=machine_info(), quick=args.quick,
                  command="python benchmarks/bench_backends.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    out = results_dir(args)
    (out / "busy_load.json").write_text(json.dumps(report, indent=1) + "\n")
    text = busy_markdown(report, report["machine"]) + f"\nCommand: `{report['command']}` ({report['date']}).\n"
    (out / "busy_load.md").write_text(text)
    print(text)
    log(f"wrote {out / 'busy_load.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
