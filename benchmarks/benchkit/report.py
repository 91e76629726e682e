"""From raw runs to the report: one row of medians per backend, and the Markdown tables."""
from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import numpy as np

from benchkit.config import LABELS, TARGET_CONV_OVER_TORCH, TARGET_OVER_MATMUL_FLOOR, TARGET_OVER_TORCH


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
    # the same floor run by run: each run's median epoch over the floor measured in that run's own process
    # (same machine state), then the median over runs; 1.0 would mean nothing but matrix products
    row["epoch_over_matmul_floor"] = statistics.median(
        statistics.median(run["epoch_seconds"]) * run["matmul_gflops"] * 1e9 / (flops_per_image * run["num_images"])
        for run in runs)
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
    kernel = "unknown"
    try:   # which OpenBLAS kernel runs: OPENBLAS_CORETYPE can force an older one than the CPU supports
        from threadpoolctl import threadpool_info
        kernel = ", ".join(f"{i.get('internal_api')} {i.get('architecture')} x{i.get('num_threads')}"
                           for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        pass
    forced = {name: os.environ[name] for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas, "blas_kernel": kernel,
            "blas_environment": forced or "none (the library picks the kernel for this CPU)",
            "platform": platform.platform()}


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
        + (f"{cfg['input_dim']}-{cfg['hidden_dim']}-{cfg['latent_dim']} VAE" if cfg.get("arch", "dense") == "dense"
           else f"{cfg['arch']} VAE (TensorFlow's CVAE shape, Z = {cfg['latent_dim']})") + f", batch {cfg['batch_size']}, "
        f"Adam lr {cfg['lr']:g}; {m['cpu']}, {m['cores']} cores, {report['threads']} threads; "
        f"NumPy {m['numpy']} ({m['blas']}, kernel {m.get('blas_kernel', '?')}; forced by the environment: "
        f"{m.get('blas_environment', '?')})" + (f", PyTorch {torch_version}" if torch_version else "") + ". "
        f"{cfg['repeats']} runs x {cfg['epochs']} epochs per backend, each run its own process, backends "
        f"interleaved; medians. 1-minute load average during the runs: {min(loads):.1f} to {max(loads):.1f} "
        f"(the benchmark's own {report['threads']} threads count in it; more means other work shared the machine).",
        "",
        "| backend | s/epoch (min-max) | ms/step | images/s | matmul GFLOP/s achieved | matmul GFLOP/s, same shapes alone "
        "| share | epoch / matmul floor | peak RSS | GPU pool | epoch time / PyTorch's |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"**{row['seconds_per_epoch'] / reference['seconds_per_epoch']:.2f}**" if reference else "-"
        lines.append(
            f"| {row['label']} | {row['seconds_per_epoch']:.2f} ({row['seconds_per_epoch_min']:.2f}-"
            f"{row['seconds_per_epoch_max']:.2f}) | {1e3 * row['seconds_per_step']:.2f} | "
            f"{row['images_per_second']:,.0f} | {row['achieved_gflops']:.0f} | {row['matmul_gflops']:.0f} | "
            f"{100 * row['matmul_share']:.0f}% | {row['epoch_over_matmul_floor']:.2f} | {mb(row['peak_rss_bytes'])} | "
            f"{mb(row['pool_total_bytes']) if 'pool_total_bytes' in row else '-'} | {ratio} |")
    for name, why in skipped.items():
        lines.append(f"| {LABELS.get(name, name)} | {why} ||||||||||")
    lines += [
        "",
        "*share*: achieved / same-shapes rate, i.e. the part of a step the matrix products would take at "
        "the rate the library reaches on them alone; the rest is elementwise work, the optimizer and overhead. "
        "*epoch / matmul floor*: each run's epoch time over the time of its matrix products alone at the same "
        "shapes, measured in the same process right after training; median over runs. "
        "Peak RSS is the whole process (interpreter, libraries, data: numpyvae keeps the images as uint8, "
        "PyTorch as one float32 tensor).",
    ]
    numpy_row = by_name.get("numpy")
    if report.get("quick"):
        lines.append("**Smoke test (--quick)**: a few steps per epoch, timings too short to mean anything; "
                     "no speed target is judged. Run without --quick to measure.")
    elif numpy_row and cfg.get("arch", "dense") != "dense":
        lines.append(f"Speed target: a numpyvae {cfg['arch']} epoch at most {TARGET_CONV_OVER_TORCH} x PyTorch's"
                     + (f": measured {numpy_row['seconds_per_epoch'] / reference['seconds_per_epoch']:.2f}."
                        if reference else "."))
    elif numpy_row:
        lines.append(f"Speed targets: NumPy epoch / matmul floor <= {TARGET_OVER_MATMUL_FLOOR}: measured "
                     f"{numpy_row['epoch_over_matmul_floor']:.2f}" + (
                         f"; NumPy epoch / PyTorch's <= {TARGET_OVER_TORCH}: measured "
                         f"{numpy_row['seconds_per_epoch'] / reference['seconds_per_epoch']:.2f}." if reference else "."))
    if reference and not report.get("quick"):
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
                  "`pip install -e '.[cuda]'` in the checkout and run the same command: the CuPy row is measured when a "
                  "CUDA device is usable."]
    return "\n".join(lines) + "\n"
