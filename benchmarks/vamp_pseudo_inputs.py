"""What a trained VampPrior learned: its pseudo-inputs, their components, and samples (docs/vampprior.md).

    python benchmarks/vamp_pseudo_inputs.py                        # the likelihood table's VampPrior row
    python benchmarks/vamp_pseudo_inputs.py RUN_DIR --figures DIR --out DIR

Reads a `numpyvae train --prior vamp` run (default: the likelihood table's row, trained by
benchmarks/likelihood_table.py into benchmarks/results/likelihood_table_runs/vamp) and writes
  - the figures chapter 11 shows, into --figures (default docs/figures/): vamp_pseudo_inputs.png, the
    pseudo-inputs above the decoder at their codes, and vamp_samples.png, draws from the mixture, both
    drawn by numpyvae's own plots.pseudo_inputs and plots.samples;
  - vamp_pseudo_inputs.{json,md} into --out (default benchmarks/results/): how far the pseudo-inputs moved
    from where they started, and the shape of the mixture (its components' means and log-variances).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # numpyvae itself, when run from a checkout

from numpyvae import load_run, plots                      # noqa: E402
from numpyvae.checkpoint import CheckpointError           # noqa: E402
from numpyvae.datafiles import DataError                  # noqa: E402
from numpyvae.atomicfile import atomic_write              # noqa: E402
from numpyvae.priors import VampPrior                     # noqa: E402
from numpyvae.rundir import RunError, build_model         # noqa: E402

RUN = HERE / "results" / "likelihood_table_runs" / "vamp"


def statistics(model, config, train_images):
    """How the pseudo-inputs u_k = sigmoid(a_k) and their components (m_k, logvar_k) ended up."""
    u = model.prior.inputs(model)                                                   # (K, D)
    a = model.backend.to_host(model.params[VampPrior.PARAM]).reshape(len(u), -1)    # (K, D) logits
    start = build_model(config, "numpy").params[VampPrior.PARAM].reshape(a.shape)   # as training drew them at step 0
    m, logvar = model.prior.mixture(model)                                         # (K, Z) each: the components
    steps = config.epochs * math.ceil(train_images / config.batch_size)
    return {
        "pseudo_inputs": len(u), "epochs": config.epochs, "steps": steps, "lr": config.lr,
        "pixel_mean": float(u.mean()), "pixel_max": float(u.max()), "pixel_min": float(u.min()),
        "init_pixel_mean": VampPrior.INIT_MEAN, "init_pixel_std": VampPrior.INIT_STD,
        "logit_moved_mean": float(np.abs(a - start).mean()), "logit_moved_max": float(np.abs(a - start).max()),
        "adam_reach": config.lr * steps,        # how far Adam moves a logit whose gradient keeps one sign
        "component_mean_spread": float(m.std(axis=0).mean()),                      # per coordinate, over k
        "component_logvar_mean": float(logvar.mean()),
        "distinct_codes": int(len(np.unique(np.round(m, 3), axis=0))),
    }


def markdown(stats, run_dir):
    s = stats
    return "\n".join([
        "# What the VampPrior learned", "",
        f"Written by `benchmarks/vamp_pseudo_inputs.py` from `{run_dir}` ({s['pseudo_inputs']} pseudo-inputs, "
        f"{s['epochs']} epochs, {s['steps']:,} steps of Adam at {s['lr']}).", "",
        "| | |", "|---|---:|",
        f"| pseudo-input pixels at the start | {s['init_pixel_mean']} +- {s['init_pixel_std']} |",
        f"| pseudo-input pixels now: mean | {s['pixel_mean']:.3f} |",
        f"| pseudo-input pixels now: min, max | {s['pixel_min']:.4f}, {s['pixel_max']:.3f} |",
        f"| how far each logit moved from its first value: mean, max | {s['logit_moved_mean']:.2f}, "
        f"{s['logit_moved_max']:.2f} |",
        f"| Adam's reach (learning rate x steps) | {s['adam_reach']:.1f} |",
        f"| distinct component means (to 3 decimals) | {s['distinct_codes']} of {s['pseudo_inputs']} |",
        f"| spread of the component means, per coordinate | {s['component_mean_spread']:.2f} |",
        f"| components' log-variance, mean | {s['component_logvar_mean']:.2f} |", ""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=RUN, help="a VampPrior run (default: the table's)")
    parser.add_argument("--figures", type=Path, default=HERE.parent / "docs" / "figures")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run_dir)
        train_images = len(run.data("train")[0])
    except (RunError, CheckpointError, DataError) as error:   # a missing or damaged run, or no data: one line
        raise SystemExit(f"vamp_pseudo_inputs: {error}") from None
    model = run.model
    if not isinstance(model.prior, VampPrior):
        raise SystemExit(f"vamp_pseudo_inputs: {args.run_dir} was trained with prior {model.spec.prior!r}, "
                         "not the VampPrior (--prior vamp)")
    about = plots.describe(model, run.config.objective, run.config.samples)
    plots.pseudo_inputs(model, model.prior.inputs(model), args.figures / "vamp_pseudo_inputs.png", about=about)
    plots.samples(model, args.figures / "vamp_samples.png", about=about)
    stats = statistics(model, run.config, train_images)
    shown = args.run_dir.resolve()
    shown = shown.relative_to(HERE.parent) if shown.is_relative_to(HERE.parent) else shown
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "vamp_pseudo_inputs.json") as file:
        file.write((json.dumps(stats, indent=2) + "\n").encode())
    with atomic_write(args.out / "vamp_pseudo_inputs.md") as file:
        file.write(markdown(stats, shown).encode())
    print(markdown(stats, shown))


if __name__ == "__main__":
    main()
