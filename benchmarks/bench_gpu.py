"""GPU benchmark (issue 17): numpyvae on CuPy against PyTorch on the same GPU, and numpyvae on the host CPU.

    python benchmarks/bench_gpu.py --out DIR                  # on a machine with a CUDA GPU, ~2 minutes
    python benchmarks/bench_gpu.py --rehearse --out DIR       # anywhere, in seconds: every code path but CUDA's

Rows, each in a fresh process (so its GPU memory is its own), on the default 784-400-20 model,
Adam lr 1e-3, from numpyvae's initial weights:
    numpyvae CuPy        VAE(backend="cupy") and its Adam (the fused kernel)
    PyTorch CUDA eager   benchmarks/torch_reference.TorchVAE, torch.optim.Adam (default: foreach)
    PyTorch CUDA graph   the same whole step (gather, forward, backward, Adam) captured in one
                         torch.cuda.CUDAGraph and replayed
    numpyvae NumPy       VAE(backend="numpy") on the host's CPU, all its cores
Per row at batch 128: seconds per epoch (468 full batches of Fashion-MNIST's 60,000 images: every
row sees the same batches, and a graph needs one batch shape), microseconds per step, images per
second, the achieved TFLOP/s of the step's matrix products (their FLOPs over the step's time)
against cuBLAS's rate on the same GEMM shapes (torch.matmul, replayed from a CUDA graph: no
launch gaps), and peak GPU memory. Then the same per batch size from 128 to 65,536 (training
images tiled when a batch outgrows them). Every timing synchronizes the device before reading the
clock. float32 everywhere; PyTorch's TF32 stays off (its default), as CuPy's does.

--rehearse runs all of it on a machine without CUDA: numpyvae's CuPy row on the fake device
(--backend fakegpu), PyTorch's rows on the CPU (the graph row runs its step function eagerly),
on 2,048 images and small batches. It proves the script, not the numbers.

--conv adds every row again on numpyvae's convolutional VAE (VAE(arch="conv"); PyTorch's built from it by
torch_reference), where this checkout has one; where
it does not, the report says so and the rest runs.

Writes bench_gpu.json (everything), bench_gpu.md (the tables) and bench_gpu.png into --out.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))          # benchkit and torch_reference
sys.path.insert(0, str(HERE.parent))   # numpyvae itself, from this checkout

from benchkit.matmul import matmul_flops, network_shapes   # noqa: E402

MODEL = {"input_dim": 784, "hidden_dim": 400, "latent_dim": 20, "lr": 1e-3, "seed": 0}
BATCH = 128
ROWS = {   # name -> (label, worker settings)
    "numpyvae-cupy": ("numpyvae, CuPy", {"row": "numpyvae", "backend": "cupy", "device": "cuda"}),
    "torch-eager": ("PyTorch CUDA, eager", {"row": "torch", "device": "cuda"}),
    "torch-graph": ("PyTorch CUDA, one CUDA graph per step", {"row": "torch-graph", "device": "cuda"}),
    "numpyvae-numpy": ("numpyvae, NumPy on the host CPU", {"row": "numpyvae", "backend": "numpy", "device": "cpu"}),
}
FULL = {"epochs": 3, "batches": [128 * 2 ** k for k in range(10)], "images": None, "step_seconds": 0.25,
        "cpu_max_batch": 65536}
REHEARSAL = {"epochs": 1, "batches": [32, 128], "images": 1024, "step_seconds": 0.01, "cpu_max_batch": 128,
             "hidden_dim": 32}   # a smaller model: the rehearsal proves code paths, not speed
# issue 17's targets, shown next to the measured ratios
MIN_ROW_SECONDS = 20            # --budget: a row needs at least this long (a process, CUDA's start, an epoch)
WRITE_SECONDS = 10              # --budget: kept back for writing the report and drawing its figure
TARGET_OVER_EAGER = 0.5          # numpyvae CuPy epoch / PyTorch eager's, batch 128
TARGET_SHARE_OF_CUBLAS = 0.5     # numpyvae CuPy's achieved rate / cuBLAS's, largest batch


# -- the worker: one row, in its own process ---------------------------------------------------

def tiled(images, batch):
    """At least 2 batches' worth of images: the set repeated (a 65,536 batch outgrows 60,000 images)."""
    import numpy as np
    need = max(len(images), 2 * batch)
    return images if need == len(images) else images[np.arange(need) % len(images)]


def release(spec):
    """Hand the device memory of a dropped row (`del stepper` first) back, so the next batch size's peak is its own."""
    import gc
    gc.collect()
    if spec["rehearse"]:
        return
    if spec["row"] == "numpyvae" and spec["backend"] == "cupy":
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()
    elif spec["device"] == "cuda":
        import torch
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_row(spec):
    from benchkit import gpu_rows
    from benchkit.numpyvae_runner import load_train_images
    images, source = load_train_images(spec["images"], allow_synthetic=spec["rehearse"])
    result = {"row": spec["name"], "data": source, "num_images": len(images), "loadavg_before": os.getloadavg(),
              "versions": library_versions(spec)}
    stepper = gpu_rows.make_stepper(images, BATCH, spec)
    seconds, losses = gpu_rows.time_epochs(stepper, len(images), BATCH, spec["epochs"], MODEL["seed"])
    result.update(epoch_seconds=seconds, epoch_loss=losses, steps_per_epoch=len(images) // BATCH,
                  memory=stepper.memory())
    del stepper
    release(spec)
    result["scaling"] = {}
    for batch in spec["batches"]:
        if spec["device"] == "cpu" and batch > spec["cpu_max_batch"]:
            continue
        data = tiled(images, batch)
        stepper = gpu_rows.make_stepper(data, batch, spec)
        step, count = gpu_rows.time_steps(stepper, len(data), batch, MODEL["seed"], spec["step_seconds"])
        result["scaling"][str(batch)] = {"seconds_per_step": step, "steps_timed": count, "memory": stepper.memory()}
        del stepper
        release(spec)
    result["loadavg_after"] = os.getloadavg()
    return result


def run_gemm(spec):
    """cuBLAS's (or, rehearsing, the CPU's) seconds for one step's matrix products, per batch size."""
    from benchkit import gpu_rows
    return {"versions": library_versions(spec), "seconds": {
        str(batch): gpu_rows.gemm_seconds(step_shapes(spec, batch), spec["device"], spec["rehearse"],
                                          repeats=2 if spec["rehearse"] else 20)
        for batch in spec["batches"]}}


def step_shapes(config, batch, model=None):
    """The (m, k, n) of one training step's matrix products at this batch size, read off the layer lists
    of the model a row trains (model="conv": the conv VAE; None: the dense one)."""
    return _network_shapes(batch, model, config["hidden_dim"], config["latent_dim"])


@functools.lru_cache(maxsize=None)
def _network_shapes(batch, model, hidden_dim, latent_dim):
    from benchkit.gpu_rows import network     # builds a VAE to read its layers: once per model and batch
    return tuple(network_shapes(batch, network({"model": model, "hidden_dim": hidden_dim, "latent_dim": latent_dim})))


def library_versions(spec):
    """The versions of what this row runs on, read inside the row's own process."""
    import numpy as np
    versions = {"numpy": np.__version__}
    if spec.get("backend") == "cupy":
        import cupy
        versions.update(cupy=cupy.__version__, cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                        cuda_driver=cupy.cuda.runtime.driverGetVersion())
    if spec["row"] in ("torch", "torch-graph", "gemm"):
        import torch
        versions.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                        tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
        if spec["device"] == "cuda":
            versions["gpu"] = torch.cuda.get_device_name()
    return versions


def run_conv_probe(spec):
    """Whether this checkout has VAE(arch="conv"); the reason it is skipped if not."""
    from numpyvae import VAE
    try:
        VAE(arch="conv", backend="numpy")
    except (TypeError, ValueError) as error:
        return {"available": False, "why": f"VAE(arch='conv') does not exist in this checkout ({error})"}
    return {"available": True}


def worker(spec):
    task = spec["task"]
    return {"row": run_row, "gemm": run_gemm, "conv": run_conv_probe}[task](spec)


# -- the parent: rows in turn, then the report --------------------------------------------------

def spawn(spec, timeout, log):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout)
    log(f"  {spec['task']} {spec.get('name', '')}: {time.perf_counter() - started:.1f} s, exit {done.returncode}")
    if done.returncode != 0:
        return {"error": done.stderr[-2000:] or f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu_info():
    """nvidia-smi's view of the GPU, or why there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"nvidia_smi": f"not available ({error})"}
    return {"nvidia_smi": out.stdout.strip() or out.stderr.strip()}


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    packages = {}
    for name in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "torch"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "packages": packages,
            "platform": platform.platform(), **gpu_info()}


def summarize(report):
    """Add the derived numbers: per row and per batch size, steps, rates and ratios."""
    gemm = report["gemm"].get("seconds", {})
    for name, row in report["rows"].items():
        if "error" in row:
            continue
        seconds = sorted(row["epoch_seconds"])[len(row["epoch_seconds"]) // 2]
        model = "conv" if name.endswith("-conv") else None     # cuBLAS was timed on the dense model's shapes
        flops = matmul_flops(step_shapes(report["config"], BATCH, model))
        row["seconds_per_epoch"] = seconds
        row["us_per_step"] = 1e6 * seconds / row["steps_per_epoch"]
        row["images_per_second"] = row["steps_per_epoch"] * BATCH / seconds
        row["achieved_tflops"] = flops * row["steps_per_epoch"] / seconds / 1e12
        if str(BATCH) in gemm and model is None:
            row["cublas_tflops"] = flops / gemm[str(BATCH)] / 1e12
        for batch, entry in row["scaling"].items():
            flops = matmul_flops(step_shapes(report["config"], int(batch), model))
            entry["us_per_step"] = 1e6 * entry["seconds_per_step"]
            entry["images_per_second"] = int(batch) / entry["seconds_per_step"]
            entry["achieved_tflops"] = flops / entry["seconds_per_step"] / 1e12
            if batch in gemm and model is None:
                entry["cublas_tflops"] = flops / gemm[batch] / 1e12
                entry["share_of_cublas"] = entry["achieved_tflops"] / entry["cublas_tflops"]
    return report


def gib(value):
    return "-" if value is None else f"{value / 2 ** 30:.2f} GiB"


def markdown(report):
    rows, m, cfg = report["rows"], report["machine"], report["config"]
    ok = {name: row for name, row in rows.items() if "error" not in row}
    versions = {k: v for row in ok.values() for k, v in row.get("versions", {}).items()}
    versions.update(report["gemm"].get("versions", {}))
    loads = [x for row in ok.values() for x in (row["loadavg_before"][0], row["loadavg_after"][0])]
    any_row = next(iter(ok.values()), None)
    lines = [
        ("**REHEARSAL on a machine without CUDA: the CuPy row ran on the fake device, PyTorch's on the CPU. "
         "These numbers prove the script, not the GPU.**\n" if report["rehearse"] else ""),
        f"GPU: {m.get('nvidia_smi')} (name, driver, memory, max SM clock); "
        f"{versions.get('gpu', 'no CUDA device')}; CUDA runtime {versions.get('cuda_runtime', '-')}, "
        f"driver API {versions.get('cuda_driver', '-')}; CuPy {versions.get('cupy', '-')}, "
        f"PyTorch {versions.get('torch', '-')} (CUDA {versions.get('torch_cuda', '-')}, TF32 matmul "
        f"{versions.get('tf32_matmul', '-')}), NumPy {versions.get('numpy', '-')}; host {m['cpu']}, "
        f"{m['cores']} cores, Python {m['python']}.",
        "",
        f"{cfg['input_dim']}-{cfg['hidden_dim']}-{cfg['latent_dim']} VAE, Adam lr {cfg['lr']:g}, float32, "
        f"batch {BATCH}; an epoch is {any_row['steps_per_epoch'] if any_row else '?'} full batches of "
        f"{any_row['data'] if any_row else '?'} ({any_row['num_images'] if any_row else '?'} images); "
        f"median of {report['config']['epochs']} timed epochs after 3 warm-up steps; each row its own process. "
        f"1-minute load average during the rows: "
        + (f"{min(loads):.1f} to {max(loads):.1f}." if loads else "-."),
        "",
        "| row | s/epoch | us/step | images/s | matmul TFLOP/s achieved | cuBLAS TFLOP/s, same shapes | share "
        "| GPU memory, peak | train loss, last epoch | epoch / PyTorch eager's | epoch / PyTorch graph's |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    eager, graph = ok.get("torch-eager"), ok.get("torch-graph")
    for name, row in rows.items():
        label = label_of(name)
        if "error" in row:
            lines.append(f"| {label} | failed: {row['error'].strip().splitlines()[-1] if row['error'].strip() else '?'} "
                         "||||||||||")
            continue
        lines.append(_row_line(label, name, row, eager, graph))
    for name, why in report["skipped"].items():
        lines.append(f"| {name} | skipped: {why} ||||||||||")
    lines += ["", "*share*: achieved / cuBLAS on the same GEMM shapes, i.e. the part of a step that the matrix "
                  "products alone would take; the rest is elementwise work, the optimizer and launch overhead. "
                  "The NumPy row's rate is the host's, so it is not set against cuBLAS."]
    cupy_row = ok.get("numpyvae-cupy")
    if cupy_row and eager:
        ratio = cupy_row["seconds_per_epoch"] / eager["seconds_per_epoch"]
        text = f"Targets (issue 17): numpyvae CuPy epoch / PyTorch eager's <= {TARGET_OVER_EAGER}: measured {ratio:.2f}"
        if graph:
            text += f"; / PyTorch graph's <= 1: measured {cupy_row['seconds_per_epoch'] / graph['seconds_per_epoch']:.2f}"
        largest = max(cupy_row["scaling"], key=int, default=None)
        if largest and "share_of_cublas" in cupy_row["scaling"][largest]:
            text += (f"; at batch {int(largest):,}, share of cuBLAS >= {TARGET_SHARE_OF_CUBLAS:.0%}: measured "
                     f"{cupy_row['scaling'][largest]['share_of_cublas']:.0%}")
        lines += ["", text + "."]
    batches = report["config"]["batches"]
    lines += ["", "Scaling with batch size: images/s (achieved matmul TFLOP/s; GPU peak memory)", "",
              "| batch | " + " | ".join(label_of(n) for n in ok) + " | cuBLAS TFLOP/s, same shapes |",
              "|---|" + "---|" * (len(ok) + 1)]
    gemm = report["gemm"].get("seconds", {})
    for batch in batches:
        cells = []
        for row in ok.values():
            entry = row["scaling"].get(str(batch))
            cells.append("-" if entry is None else
                         f"{entry['images_per_second']:,.0f} ({entry['achieved_tflops']:.2f}; "
                         f"{gib(entry['memory'].get('gpu_peak_bytes'))})")
        flops = matmul_flops(step_shapes(report["config"], batch))
        cells.append(f"{flops / gemm[str(batch)] / 1e12:.2f}" if str(batch) in gemm else "-")
        lines.append(f"| {batch:,} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{report['command']}` ({report['date']}, {report['wall_seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def label_of(name):
    """The table's name for a row ("-conv": the same row on the convolutional VAE)."""
    base = name.removesuffix("-conv")
    return ROWS[base][0] + (", conv VAE" if name.endswith("-conv") else "") if base in ROWS else name


def _row_line(label, name, row, eager, graph):
    cublas = None if name.endswith("-conv") else row.get("cublas_tflops")   # the GEMM shapes are the dense model's
    on_gpu = not name.startswith("numpyvae-numpy")
    against = cublas is not None and on_gpu
    cells = [label, f"{row['seconds_per_epoch']:.3f}", f"{row['us_per_step']:.0f}", f"{row['images_per_second']:,.0f}",
             f"{row['achieved_tflops']:.3f}", f"{cublas:.3f}" if against else "-",
             f"{row['achieved_tflops'] / cublas:.0%}" if against else "-", gib(row["memory"].get("gpu_peak_bytes")),
             f"{row['epoch_loss'][-1]:.2f}"]
    for reference in (eager, graph):
        cells.append(f"{row['seconds_per_epoch'] / reference['seconds_per_epoch']:.2f}" if reference else "-")
    return "| " + " | ".join(cells) + " |"


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = {name: row for name, row in report["rows"].items() if "error" not in row}
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [label_of(name) for name in ok]
    axes[0].barh(labels, [row["seconds_per_epoch"] for row in ok.values()])
    axes[0].set_xscale("log")
    axes[0].set_xlabel(f"seconds per epoch, batch {BATCH} (log)")
    axes[0].set_title("One epoch of Fashion-MNIST")
    for name, row in ok.items():
        batches = sorted(int(b) for b in row["scaling"])
        axes[1].plot(batches, [row["scaling"][str(b)]["images_per_second"] for b in batches], "o-", label=label_of(name))
    axes[1].set_xscale("log", base=2)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("batch size")
    axes[1].set_ylabel("images per second")
    axes[1].set_title("Scaling with batch size")
    axes[1].legend(fontsize=8)
    title = report["machine"].get("nvidia_smi", "")
    figure.suptitle(("REHEARSAL (no GPU): " if report["rehearse"] else "") + f"numpyvae vs PyTorch, {title}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=False, default=HERE / "results", help="directory for the results")
    parser.add_argument("--rehearse", action="store_true", help="no CUDA: fake device and PyTorch on the CPU, tiny sizes")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--epochs", type=int, help="timed epochs per row")
    parser.add_argument("--batches", help="comma-separated batch sizes for the scaling table")
    parser.add_argument("--conv", action="store_true", help="also the convolutional VAE, where the checkout has one")
    parser.add_argument("--row-timeout", type=float, default=240, help="seconds one row's process may take")
    parser.add_argument("--budget", type=float, help="seconds for the whole benchmark: no row starts once less than "
                        f"{MIN_ROW_SECONDS:g} s would be left, so what was measured is written before a caller's limit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    started = time.perf_counter()
    settings = dict(REHEARSAL if args.rehearse else FULL)
    if args.epochs:
        settings["epochs"] = args.epochs
    if args.batches:
        settings["batches"] = [int(b) for b in args.batches.split(",")]
    wanted = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        parser.error(f"unknown row(s) {', '.join(sorted(unknown))}; choose from {', '.join(ROWS)}")
    log = lambda message: print(message, file=sys.stderr, flush=True)   # noqa: E731
    base = dict(MODEL, rehearse=args.rehearse, **settings)

    def spec_for(name):
        spec = dict(base, name=name, task="row", **ROWS[name][1])
        if args.rehearse:   # the fake device for CuPy, the CPU for CUDA
            spec.update(backend="fakegpu" if spec.get("backend") == "cupy" else spec.get("backend"), device="cpu")
        return spec

    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "rehearse": args.rehearse, "machine": machine_info(), "config": dict(MODEL, **settings, batch=BATCH),
              "rows": {}, "skipped": {}}
    log(f"bench_gpu: rows {', '.join(wanted)}" + (" (rehearsal)" if args.rehearse else ""))
    report["gemm"] = spawn(dict(base, task="gemm", row="gemm", name="cuBLAS", device="cpu" if args.rehearse else "cuda"),
                           args.row_timeout, log)
    def run_row_in_budget(name, spec):
        """Spawn one row, with what is left of --budget as its timeout; too little left: list it as skipped."""
        left = math.inf if args.budget is None else args.budget - (time.perf_counter() - started) - WRITE_SECONDS
        if left < MIN_ROW_SECONDS:
            report["skipped"][name] = f"not started: the {args.budget:g} s --budget was spent"
            log(f"bench_gpu: {name} not started, the --budget is spent")
            return
        report["rows"][name] = spawn(spec, min(args.row_timeout, left), log)

    for name in wanted:
        run_row_in_budget(name, spec_for(name))
    if args.conv:
        probe = spawn(dict(base, task="conv", row="conv"), 120, log)
        if not probe.get("available"):
            report["skipped"]["conv"] = probe.get("why", probe.get("error", "?"))
        else:
            for name in wanted:      # PyTorch's conv rows are built from numpyvae's conv VAE (torch_reference)
                run_row_in_budget(f"{name}-conv", dict(spec_for(name), model="conv", name=f"{name}-conv"))
    report["wall_seconds"] = time.perf_counter() - started
    summarize(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "bench_gpu.md").write_text(text)
    plot(report, args.out / "bench_gpu.png")
    print(text)
    failed = [name for name, row in report["rows"].items() if "error" in row] + (["gemm"] if "error" in report["gemm"] else [])
    if failed:
        log(f"bench_gpu: failed rows: {', '.join(failed)} (their errors are in bench_gpu.json)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
