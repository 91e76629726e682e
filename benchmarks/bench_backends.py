"""Benchmark: numpyvae on NumPy (and on CuPy where a GPU is usable) against the same model in PyTorch.

    python benchmarks/bench_backends.py                       # full run, a few minutes; writes benchmarks/results/
    python benchmarks/bench_backends.py --quick --out DIR     # seconds, on a small subset: a smoke test for CI

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

Results: bench_backends.json (everything, raw runs included), bench_backends.md (the tables)
and bench_backends.png (epoch times, loss curves, scaling) in --out.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))          # torch_reference, when the worker runs PyTorch
sys.path.insert(0, str(HERE.parent))   # numpyvae itself, when run from a checkout without installing

BACKENDS = ("numpy", "cupy", "torch")
LABELS = {"numpy": "numpyvae, NumPy float32", "cupy": "numpyvae, CuPy float32", "torch": "PyTorch float32 (CPU)"}
MODEL = {"input_dim": 784, "hidden_dim": 400, "latent_dim": 20, "batch_size": 128, "lr": 1e-3}

FULL = {"epochs": 5, "repeats": 5, "images": None, "scaling_repeats": 3, "scaling_images": 8192,
        "scaling_batches": (32, 64, 128, 256, 512, 1024), "scaling_hidden": (100, 200, 400, 800, 1600)}
QUICK = {"epochs": 2, "repeats": 1, "images": 512, "scaling_repeats": 1, "scaling_images": 256,
         "scaling_batches": (32, 128), "scaling_hidden": (100,)}


# -- what a step costs ------------------------------------------------------------------------

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


# -- the worker: one backend, in its own process ----------------------------------------------------

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


def peak_rss_bytes():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def numpyvae_training(backend, data, spec):
    """Train `spec["epochs"]` epochs; per-epoch seconds and mean train loss per image."""
    from numpyvae import VAE, Adam
    xp = backend.xp
    batch, hidden, seed = spec["batch_size"], spec["hidden_dim"], spec["seed"]

    # warm up: kernels compiled (CuPy), BLAS threads started, buffers allocated, on a throwaway model
    warm = VAE(hidden_dim=hidden, latent_dim=spec["latent_dim"], backend=backend, seed=seed)
    warm_optimizer = Adam(warm, lr=spec["lr"])
    for x in islice(data.batches(batch), 3):
        warm.loss_and_grads(x)
        warm_optimizer.step()
    del warm, warm_optimizer

    model = VAE(hidden_dim=hidden, latent_dim=spec["latent_dim"], backend=backend, seed=seed)
    optimizer = Adam(model, lr=spec["lr"])
    eps_rng = backend.rng((seed, spec["noise_seed"]))   # repeats differ only in this noise
    seconds, losses, steps = [], [], 0
    for epoch in range(1, spec["epochs"] + 1):
        total = xp.zeros((), dtype=np.float64)          # summed on the device, read once per epoch
        steps = 0
        backend.synchronize()
        started = time.perf_counter()
        for x in data.batches(batch, shuffle=True, seed=(seed, epoch)):
            loss, _, _ = model.loss_and_grads(x, rng=eps_rng)
            optimizer.step()
            total += loss
            steps += 1
        backend.synchronize()
        seconds.append(time.perf_counter() - started)
        losses.append(backend.scalar(total) / len(data))
    return seconds, losses, steps


def numpyvae_seconds_per_step(backend, data, batch, hidden, spec, steps):
    from numpyvae import VAE, Adam
    model = VAE(hidden_dim=hidden, latent_dim=spec["latent_dim"], backend=backend, seed=spec["seed"])
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


def run_worker(spec):
    """Run one measurement in this process (a fresh one per run) and return its results as a dict."""
    images, source = load_train_images(spec["images"], spec["allow_synthetic"])
    name = spec["backend"]
    result = {"backend": name, "task": spec["task"], "data": source, "num_images": len(images),
              "loadavg_before": os.getloadavg()}
    if name == "torch":
        import torch
        from torch_reference import TorchRun
        torch.set_num_threads(spec["threads"])
        device = spec.get("device", "cpu")
        result.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(), device=device)
        if spec["task"] == "train":
            run = TorchRun(images, spec["batch_size"], spec["hidden_dim"], spec["latent_dim"],
                           spec["seed"], spec["lr"], device)
            run.generator.manual_seed(1000 + spec["noise_seed"])
            TorchRun(images[:spec["batch_size"] * 3], spec["batch_size"], spec["hidden_dim"],
                     spec["latent_dim"], spec["seed"], spec["lr"], device).time_steps(1, warmup=2)   # warm-up
            epochs = [run.epoch(epoch) for epoch in range(1, spec["epochs"] + 1)]
            result.update(epoch_seconds=[e[0] for e in epochs], epoch_loss=[e[1] for e in epochs],
                          steps=epochs[-1][2])
        else:
            result["seconds_per_step"] = {
                f"{batch},{hidden}": TorchRun(images, batch, hidden, spec["latent_dim"], spec["seed"],
                                              spec["lr"], device).time_steps(max(5, spec["scaling_images"] // batch))
                for batch, hidden in spec["configs"]}
        library = "torch"
    else:
        from numpyvae.backend import get_backend
        from numpyvae.batches import DeviceDataset
        backend = get_backend(name)
        data = DeviceDataset(images, backend)
        result["numpy_version"] = np.__version__
        if spec["task"] == "train":
            seconds, losses, steps = numpyvae_training(backend, data, spec)
            result.update(epoch_seconds=seconds, epoch_loss=losses, steps=steps)
        else:
            result["seconds_per_step"] = {
                f"{batch},{hidden}": numpyvae_seconds_per_step(backend, data, batch, hidden, spec,
                                                               max(5, spec["scaling_images"] // batch))
                for batch, hidden in spec["configs"]}
        if name == "cupy":
            pool = backend.xp.get_default_memory_pool()
            result.update(pool_total_bytes=pool.total_bytes(), pool_used_bytes=pool.used_bytes())
        library = name
    if spec["task"] == "train":
        shapes = matmul_shapes(spec["batch_size"], images.shape[1], spec["hidden_dim"], spec["latent_dim"])
        result["matmul_gflops"] = measure_matmul_rate(library, shapes, spec.get("device"),
                                                      *((2, 2) if spec["quick"] else (7, 10)))
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["loadavg_after"] = os.getloadavg()
    return result


# -- the driver: interleaved runs, medians, tables ------------------------------------------------

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


def spawn(spec, threads, timeout):
    """Run one worker in a fresh Python process with `threads` BLAS/OpenMP threads; return its results."""
    env = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[variable] = str(threads)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the {spec['backend']} {spec['task']} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved(backends, repeats, make_spec, threads, timeout, log):
    """repeats rounds over the backends, the order rotated each round; {backend: [results]}."""
    results = {name: [] for name in backends}
    for round_ in range(repeats):
        order = backends[round_ % len(backends):] + backends[:round_ % len(backends)]
        for name in order:
            started = time.perf_counter()
            results[name].append(spawn(make_spec(name, round_), threads, timeout))
            log(f"  {make_spec(name, round_)['task']} {name} round {round_ + 1}/{repeats}: "
                f"{time.perf_counter() - started:.1f} s")
    return results


def summarize(name, runs, flops_per_image):
    """The table row of one backend from its runs."""
    epochs = [s for run in runs for s in run["epoch_seconds"]]
    first = runs[0]
    epoch = statistics.median(epochs)
    losses = np.array([run["epoch_loss"] for run in runs])              # (runs, epochs)
    row = {
        "backend": name, "label": LABELS.get(name, name), "runs": len(runs), "epochs_per_run": len(epochs) // len(runs),
        "num_images": first["num_images"], "steps_per_epoch": first["steps"],
        "seconds_per_epoch": epoch, "seconds_per_epoch_min": min(epochs), "seconds_per_epoch_max": max(epochs),
        "seconds_per_step": epoch / first["steps"], "images_per_second": first["num_images"] / epoch,
        "achieved_gflops": flops_per_image * first["num_images"] / epoch / 1e9,
        "matmul_gflops": statistics.median(run["matmul_gflops"] for run in runs),
        "peak_rss_bytes": statistics.median(run["peak_rss_bytes"] for run in runs),
        "loss_mean": losses.mean(axis=0).tolist(), "loss_min": losses.min(axis=0).tolist(),
        "loss_max": losses.max(axis=0).tolist(),
    }
    row["matmul_share"] = row["achieved_gflops"] / row["matmul_gflops"]
    # the epoch's matrix products alone, at the rate this library reaches on them: a floor for its epoch time
    row["matmul_seconds_per_epoch"] = flops_per_image * first["num_images"] / (row["matmul_gflops"] * 1e9)
    if "pool_total_bytes" in first:
        row["pool_total_bytes"] = max(run["pool_total_bytes"] for run in runs)
    return row


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "unknown"
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{config.get('name', '?')} {config.get('version', '')}".strip()
    except Exception:   # the layout of show_config differs across NumPy versions
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas, "platform": platform.platform()}


def mb(n):
    return f"{n / 2 ** 20:,.0f} MB"


def markdown(report):
    """The Markdown tables of a report."""
    m, rows, skipped = report["machine"], report["rows"], report["skipped"]
    by_name = {row["backend"]: row for row in rows}
    reference = by_name.get("torch")
    cfg = report["config"]
    loads = [x for runs in report["raw"]["train"].values() for run in runs
             for x in (run["loadavg_before"][0], run["loadavg_after"][0])]
    torch_version = next((run["torch_version"] for run in report["raw"]["train"].get("torch", [])), None)
    lines = [
        f"Fashion-MNIST, {rows[0]['num_images']:,} training images held in memory; "
        f"{cfg['input_dim']}-{cfg['hidden_dim']}-{cfg['latent_dim']} VAE, batch {cfg['batch_size']}, "
        f"Adam lr {cfg['lr']:g}; {m['cpu']}, {m['cores']} cores, {report['threads']} threads; "
        f"NumPy {m['numpy']} ({m['blas']})" + (f", PyTorch {torch_version}" if torch_version else "") + ". "
        f"{cfg['repeats']} runs x {cfg['epochs']} epochs per backend, each run its own process, backends "
        f"interleaved; medians. 1-minute load average during the runs: {min(loads):.1f} to {max(loads):.1f} "
        f"(other jobs shared the machine).",
        "",
        "| backend | s/epoch (min-max) | ms/step | images/s | matmul GFLOP/s achieved | matmul GFLOP/s, same shapes alone "
        "| share | peak RSS | GPU pool | epoch time / PyTorch's |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"**{row['seconds_per_epoch'] / reference['seconds_per_epoch']:.2f}**" if reference else "-"
        lines.append(
            f"| {row['label']} | {row['seconds_per_epoch']:.2f} ({row['seconds_per_epoch_min']:.2f}-"
            f"{row['seconds_per_epoch_max']:.2f}) | {1e3 * row['seconds_per_step']:.2f} | "
            f"{row['images_per_second']:,.0f} | {row['achieved_gflops']:.0f} | {row['matmul_gflops']:.0f} | "
            f"{100 * row['matmul_share']:.0f}% | {mb(row['peak_rss_bytes'])} | "
            f"{mb(row['pool_total_bytes']) if 'pool_total_bytes' in row else '-'} | {ratio} |")
    for name, why in skipped.items():
        lines.append(f"| {LABELS.get(name, name)} | {why} |||||||||")
    lines += [
        "",
        "*share*: achieved / same-shapes rate, i.e. the part of a step the matrix products would take at "
        "the rate the library reaches on them alone; the rest is elementwise work, the optimizer and overhead. "
        "Peak RSS is the whole process (interpreter, libraries, data: numpyvae keeps the images as uint8, "
        "PyTorch as one float32 tensor).",
    ]
    if reference:
        for row in rows:
            if row is not reference:
                lines.append(
                    f"At the rate {row['label']} reaches on the same matrix shapes alone, an epoch's matrix products "
                    f"take {row['matmul_seconds_per_epoch']:.2f} s, {row['matmul_seconds_per_epoch'] / reference['seconds_per_epoch']:.2f} "
                    f"of PyTorch's whole epoch: no amount of elementwise or optimizer work brings the ratio below that.")
    lines += [
        "",
        "Train loss per image (negative ELBO, nats) after each epoch, mean over runs [min, max]; "
        "runs start from the same weights and see the same batches, and differ only in the noise eps:",
        "",
        "| epoch | " + " | ".join(row["label"] for row in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for i in range(len(rows[0]["loss_mean"])):
        lines.append(f"| {i + 1} | " + " | ".join(
            f"{row['loss_mean'][i]:.2f} [{row['loss_min'][i]:.2f}, {row['loss_max'][i]:.2f}]" for row in rows) + " |")
    for title, key, values, fixed in (("batch size", "batch", cfg["scaling_batches"], f"hidden {cfg['hidden_dim']}"),
                                      ("hidden size", "hidden", cfg["scaling_hidden"], f"batch {cfg['batch_size']}")):
        table = report["scaling"].get(key)
        if not table:
            continue
        names = [n for n in report["backends"] if n in table]
        lines += ["", f"Scaling with {title} ({fixed}): images/s, median of {cfg['scaling_repeats']} interleaved runs"
                      + ("; last column: numpyvae NumPy's time / PyTorch's" if {"numpy", "torch"} <= set(names) else ""),
                  "", f"| {title} | " + " | ".join(LABELS[n] for n in names)
                  + (" | NumPy / PyTorch |" if {"numpy", "torch"} <= set(names) else " |"),
                  "|---|" + "---|" * (len(names) + ({"numpy", "torch"} <= set(names)))]
        for value in values:
            cells = [f"{table[n][str(value)]['images_per_second']:,.0f}" for n in names]
            if {"numpy", "torch"} <= set(names):
                cells.append(f"{table['numpy'][str(value)]['seconds_per_step'] / table['torch'][str(value)]['seconds_per_step']:.2f}")
            lines.append(f"| {value} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{report['command']}` ({report['date']}). On a machine with an NVIDIA GPU, "
                  "`pip install 'numpyvae[cuda]'` and run the same command: the CuPy row is measured when a "
                  "CUDA device is usable."]
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["rows"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = [row["label"] for row in rows]
    axes[0].barh(names, [row["seconds_per_epoch"] for row in rows], color="C0")
    for i, row in enumerate(rows):
        axes[0].plot([row["seconds_per_epoch_min"], row["seconds_per_epoch_max"]], [i, i], color="k")
    axes[0].set_xlabel("seconds per epoch (median, min-max)")
    axes[0].set_title("Epoch time")
    for row in rows:
        epochs = np.arange(1, len(row["loss_mean"]) + 1)
        line, = axes[1].plot(epochs, row["loss_mean"], marker="o", label=row["label"])
        axes[1].fill_between(epochs, row["loss_min"], row["loss_max"], color=line.get_color(), alpha=0.2)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("train loss per image (nats)")
    axes[1].set_title("Loss curves")
    axes[1].legend()
    table = report["scaling"].get("batch", {})
    for name in report["backends"]:
        if name in table:
            values = sorted(int(v) for v in table[name])
            axes[2].plot(values, [table[name][str(v)]["images_per_second"] for v in values], marker="o",
                         label=LABELS[name])
    axes[2].set_xscale("log", base=2)
    axes[2].set_xlabel(f"batch size (hidden {report['config']['hidden_dim']})")
    axes[2].set_ylabel("images per second")
    axes[2].set_title("Scaling with batch size")
    if table:
        axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test in seconds: 512 images, 2 epochs, 1 run")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="directory for the results")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, from: numpy, cupy, torch")
    parser.add_argument("--epochs", type=int, help="epochs per run")
    parser.add_argument("--repeats", type=int, help="runs per backend, interleaved")
    parser.add_argument("--images", type=int, help="train on the first N images (default: all 60,000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS / PyTorch threads (default: all cores)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the batch-size and hidden-size tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)   # internal: one measurement, JSON in and out
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    settings = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "repeats", "images"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    wanted = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(wanted) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}; choose from {', '.join(BACKENDS)}")
    backends, skipped = available_backends(wanted)
    if not backends:
        parser.error("none of the requested backends can run here: " + "; ".join(skipped.values()))
    log = lambda message: print(message, file=sys.stderr, flush=True)   # noqa: E731
    timeout = 600 if args.quick else 3600
    config = dict(MODEL, **settings)
    base = {"seed": args.seed, "threads": args.threads, "quick": args.quick, "allow_synthetic": args.quick,
            "images": settings["images"], **MODEL}

    log(f"training runs: {', '.join(backends)}" + (f" (skipped: {'; '.join(f'{k}: {v}' for k, v in skipped.items())})"
                                                     if skipped else ""))
    train = interleaved(backends, settings["repeats"],
                        lambda name, r: dict(base, backend=name, task="train", epochs=settings["epochs"], noise_seed=r),
                        args.threads, timeout, log)
    flops_per_image = matmul_flops(matmul_shapes(1, MODEL["input_dim"], MODEL["hidden_dim"], MODEL["latent_dim"]))
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
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_backends.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                           if (argv if argv is not None else sys.argv[1:]) else ""),
        "machine": machine_info(), "threads": args.threads, "config": config, "backends": backends,
        "skipped": skipped, "rows": rows, "scaling": scaling, "raw": {"train": train, "scaling": raw_scaling},
    }
    if "torch" in backends:
        report["numpy_over_torch_epoch_time"] = (
            next(r for r in rows if r["backend"] == "numpy")["seconds_per_epoch"]
            / next(r for r in rows if r["backend"] == "torch")["seconds_per_epoch"]) if "numpy" in backends else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_backends.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "bench_backends.md").write_text(markdown(report))
    plot(report, args.out / "bench_backends.png")
    print(markdown(report))
    log(f"wrote {args.out / 'bench_backends.json'}, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
