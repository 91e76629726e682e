"""Samples of the Gaussian decoder with a fixed, a learned and an optimal sigma, side by side (docs/likelihoods.md).

    python benchmarks/sigma_samples.py --data-dir /usr/share/datasets/fashion-mnist      # about a minute on 1 core
    python benchmarks/sigma_samples.py --epochs 2 --out DIR --figure DIR/sigma_samples.png

Trains `numpyvae train --likelihood gaussian --sigma S` for S = fixed, learned, optimal, every other setting the
default (784-400-20, batch 128, Adam 1e-3, seed 0), for --epochs epochs each, then decodes the same 64 codes
z ~ N(0, I) with each model (the pixel means, sigmoid(logits)) and draws the three grids in one figure. A fixed
sigma is a hidden KL weight beta = 2 sigma^2 on the squared error (docs/likelihoods.md): the seed's sigma^2 = 1/2
is beta = 1; a calibrated sigma finds its own. Writes the figure (--figure, default docs/figures/sigma_samples.png)
and sigma_samples.{json,md} into --out (default benchmarks/results/): the sigma each run reached, its beta,
its last epoch's test reconstruction and KL, and seconds per epoch.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # numpyvae itself, when run from a checkout

from numpyvae import load_run, train as training   # noqa: E402
from numpyvae.rundir import TrainConfig, read_metrics   # noqa: E402

SIGMAS = ("fixed", "learned", "optimal")
GRID = 8                  # GRID x GRID samples per model
SAMPLE_SEED = 0           # the codes every model decodes


def sigma_of(model):
    """The decoder's sigma: the seed's 1/sqrt(2) for the fixed squared error, else the one the model holds."""
    if model.spec.sigma == "fixed":
        return math.sqrt(0.5)
    return float(model.recon_term.sigma(model.xp)[0])


def grid(images, side=28):
    """(GRID * GRID, D) pixel means -> one (GRID * side, GRID * side) picture."""
    return images.reshape(GRID, GRID, side, side).transpose(0, 2, 1, 3).reshape(GRID * side, GRID * side)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="the Fashion-MNIST files (default: numpyvae's)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "figures" / "sigma_samples.png")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, pictures = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for sigma in SIGMAS:
            config = TrainConfig(likelihood="gaussian", sigma=sigma, epochs=args.epochs, data_dir=args.data_dir)
            run_dir = Path(scratch) / sigma
            training.train(config, run_dir, log=lambda line: print(line, flush=True), progress=False,
                           threads=args.threads)
            model = load_run(run_dir).model
            z = model.standard_normal((GRID * GRID, model.latent_dim), np.random.default_rng(SAMPLE_SEED))
            pictures.append(grid(np.asarray(model.decode(z))))
            last = read_metrics(run_dir)[-1]
            s = sigma_of(model)
            rows.append({"sigma_setting": sigma, "sigma": s, "hidden_beta": 2 * s * s,
                         "test_recon": float(last["test_recon"]), "test_kl": float(last["test_kl"]),
                         "seconds_per_epoch": float(np.mean([float(r["seconds"]) for r in read_metrics(run_dir)]))})

    fig, axes = plt.subplots(1, len(SIGMAS), figsize=(9.6, 4.0), dpi=100)
    for ax, picture, row in zip(axes, pictures, rows):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"sigma {row['sigma_setting']}: {row['sigma']:.3f}\n"
                     f"(a hidden beta 2 sigma^2 = {row['hidden_beta']:.3f}), KL {row['test_kl']:.1f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"Gaussian decoder, 784-400-20 VAE, {args.epochs} epochs: the same 64 codes z ~ N(0, I), "
                 f"pixel means", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))          # room for the suptitle above the panels' titles
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure)
    plt.close(fig)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "epochs": args.epochs, "threads": args.threads, "load_average": os.getloadavg()[0], "runs": rows}
    (args.out / "sigma_samples.json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = [f"# Gaussian decoder: fixed, learned and optimal sigma ({args.epochs} epochs each)", "",
             f"`python benchmarks/sigma_samples.py --epochs {args.epochs}`, {meta['date']}, {args.threads} BLAS "
             f"thread(s), load average {meta['load_average']:.1f}. 784-400-20 dense VAE, batch 128, Adam 1e-3, "
             "seed 0, Fashion-MNIST grey pixels. sigma: fixed is the seed's squared error (sigma^2 = 1/2); learned "
             "is exp of the soft-floored log sigma after the last step; optimal is the one the last training batch "
             "solved for (what evaluation uses). Test numbers per image, last epoch; the fixed run's recon has no "
             "normalizing constant, so only its KL compares.", "",
             "| --sigma | sigma reached | hidden beta 2 sigma^2 | test recon | test KL | s / epoch |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['sigma_setting']} | {r['sigma']:.4f} | {r['hidden_beta']:.4f} | {r['test_recon']:.2f} | "
              f"{r['test_kl']:.2f} | {r['seconds_per_epoch']:.1f} |" for r in rows]
    (args.out / "sigma_samples.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
