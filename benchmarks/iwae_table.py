"""Burda, Grosse & Salakhutdinov's VAE-against-IWAE table, reproduced on Fashion-MNIST.

    OPENBLAS_NUM_THREADS=1 python benchmarks/iwae_table.py [--epochs 20] [--seed 0] [--k auto] [--deadline 12:45]

Trains the default dense model (784-400-20, Bernoulli likelihood, Adam 1e-3, batch 128) three
times from the same seed for the same number of epochs: on the ELBO (the VAE), and on the
IWAE bound with K = 5 and K = 50 samples per image. As in the paper, the pixels are binarized
(drawn anew every batch in training, once with a fixed seed for the test set), so the Bernoulli
likelihood is a probability mass and every number is a bound on -log p(x). Then, per model, on
the 10,000 test images:
  - the negative IWAE bound at k importance samples (the paper's k = 5000; with --k auto the
    largest of K_CHOICES whose three evaluations fit before --deadline, measured, and said so),
  - the negative ELBO (mean over evaluate.ELBO_SAMPLES posterior samples per image),
  - the active units (Var over the test set of E_q[z_u | x] > 0.01),
  - the training seconds per epoch (mean over the epochs; test passes not counted).
Results go to benchmarks/results/iwae_table.{json,md}, rewritten after every model evaluated,
with the load average of the machine at each stage. Runs go to runs/iwae_table/ (not committed);
a run already there is resumed or reused, so the script can be restarted where it stopped.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                                    # numpyvae from this checkout

from numpyvae import evaluate                                     # noqa: E402
from numpyvae.rundir import TrainConfig, load_run, read_metrics   # noqa: E402
from numpyvae.train import NothingToDo, train                     # noqa: E402

ROWS = (("VAE (ELBO)", "elbo", 1), ("IWAE, K = 5", "iwae", 5), ("IWAE, K = 50", "iwae", 50))
K_CHOICES = (5000, 2000, 1000, 500, 200, 100)
RESULTS = ROOT / "benchmarks" / "results"
SAFETY = 1.3       # an evaluation is assumed to take this much longer than the timing predicts


def log(message):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {message}", flush=True)


def load():
    return [round(v, 2) for v in os.getloadavg()]


def train_row(objective, samples, args, run_dir):
    """Train (or finish, or reuse) one row's run; return its metrics rows."""
    config = TrainConfig(epochs=args.epochs, seed=args.seed, binarize=True, objective=objective, samples=samples)
    resume = (run_dir / "checkpoint.npz").exists()
    try:
        train(config, run_dir, resume=resume, log=log, progress=False)
    except NothingToDo:
        log(f"{run_dir} has its {args.epochs} epochs already")
    return read_metrics(run_dir)


def test_data(run_dir, images=None):
    """(model, test set) of a run: all 10,000 test images, or the first `images`."""
    from numpyvae import datasets
    config, model, saved = load_run(run_dir)
    pixels, _ = datasets.load_fashion_mnist("test", config.data_dir)
    return model, evaluate.test_dataset(pixels[:images], model.backend, model.dtype, config.binarize)


def choose_k(args, run_dirs):
    """--k, or the largest of K_CHOICES whose evaluations of every model fit before --deadline."""
    if args.k != "auto":
        return int(args.k), "given on the command line"
    model, probe = test_data(run_dirs[0], images=200)
    probe_k = 200
    started = time.perf_counter()
    evaluate.importance_weighted_bound(model, probe, k=probe_k)
    per_pair = (time.perf_counter() - started) / (len(probe) * probe_k)
    test_images = 10_000
    hour, minute = (int(part) for part in args.deadline.split(":"))
    now = datetime.datetime.now(datetime.timezone.utc)
    deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    seconds_left = (deadline - now).total_seconds()
    for k in K_CHOICES:
        # the bound's decoder passes, plus the ELBO and activity passes (about 12 forward passes)
        estimate = SAFETY * per_pair * test_images * (k + 12) * len(run_dirs)
        if estimate <= seconds_left:
            return k, (f"the largest of {', '.join(map(str, K_CHOICES))} whose {len(run_dirs)} evaluations were "
                       f"predicted to finish before {args.deadline} UTC ({per_pair * 1e6:.1f} us per image and "
                       f"sample measured, {estimate / 60:.0f} min predicted, {seconds_left / 60:.0f} min left)")
    return K_CHOICES[-1], f"the smallest offered: even it was predicted to overrun {args.deadline} UTC"


def evaluate_row(run_dir, k, seed):
    model, data = test_data(run_dir)
    started = time.perf_counter()
    elbo = evaluate.negative_elbo(model, data, samples=evaluate.ELBO_SAMPLES, seed=seed)
    activity = evaluate.latent_activity(model, data)
    bound = evaluate.importance_weighted_bound(model, data, k=k, seed=seed)
    return {"test_iwae_nll": -bound, "test_neg_elbo": elbo["loss"], "test_recon": elbo["recon"],
            "test_kl": elbo["kl"], "active_units": int((activity > evaluate.ACTIVE_THRESHOLD).sum()),
            "latent_variances": [round(float(v), 5) for v in activity],
            "eval_seconds": round(time.perf_counter() - started, 1)}


def findings(rows):
    """Whether the paper's two findings hold here, from the evaluated rows (None until all are in)."""
    if len(rows) < len(ROWS) or any("test_iwae_nll" not in row for row in rows):
        return None
    vae, iwaes = rows[0], rows[1:]
    return {"tighter_bound": all(r["test_iwae_nll"] < vae["test_iwae_nll"] for r in iwaes),
            "bound_improves_with_K": iwaes[1]["test_iwae_nll"] < iwaes[0]["test_iwae_nll"],
            "more_active_units": all(r["active_units"] > vae["active_units"] for r in iwaes),
            "at_least_as_many_active_units": all(r["active_units"] >= vae["active_units"] for r in iwaes)}


def write(report):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "iwae_table.json").write_text(json.dumps(report, indent=2) + "\n")
    k = report.get("k")
    lines = [f"# VAE against IWAE on Fashion-MNIST (Burda et al. 2015, Table 1, reproduced)", "",
             f"784-400-20 dense VAE, Bernoulli likelihood on binarized pixels, Adam 1e-3, batch 128, "
             f"{report['epochs']} epochs, seed {report['seed']}, float32 NumPy, OPENBLAS_NUM_THREADS="
             f"{report['openblas_threads']}. Test set: 10,000 images, binarized once (fixed seed). "
             f"Nats per image; lower is better.", "",
             f"| objective | test -log p(x) <= IWAE bound, k = {k} | test negative ELBO | active units "
             f"(of 20) | s / epoch |", "|---|---:|---:|---:|---:|"]
    for row in report["rows"]:
        bound = f"{row['test_iwae_nll']:.2f}" if "test_iwae_nll" in row else "(running)"
        elbo = f"{row['test_neg_elbo']:.2f}" if "test_neg_elbo" in row else ""
        units = row.get("active_units", "")
        lines.append(f"| {row['name']} | {bound} | {elbo} | {units} | {row['seconds_per_epoch']:.1f} |")
    lines += ["", f"k = {k}: {report.get('k_reason', '')}.",
              f"Negative ELBO: mean over {evaluate.ELBO_SAMPLES} posterior samples per image. Active unit: "
              f"Var over the test set of E_q[z_u | x] > {evaluate.ACTIVE_THRESHOLD}. s / epoch: training "
              f"steps only, mean over the epochs.", "",
              f"Load average (1, 5, 15 min) at each stage, on a {report['cpus']}-core machine shared with "
              f"other work:"]
    lines += [f"- {stage}: {value}" for stage, value in report["load"].items()]
    if report.get("findings") is not None:
        f = report["findings"]
        lines += ["", f"Tighter bound with IWAE (both K): {'yes' if f['tighter_bound'] else 'no'}; "
                      f"K = 50 tighter than K = 5: {'yes' if f['bound_improves_with_K'] else 'no'}; "
                      f"more active units with IWAE (both K): {'yes' if f['more_active_units'] else 'no'}."]
    (RESULTS / "iwae_table.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", default="auto", help="importance samples for the test bound, or auto (default)")
    parser.add_argument("--deadline", default="12:45", help="UTC time the evaluations should end by, for --k auto")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "iwae_table"))
    args = parser.parse_args(argv)
    report = {"epochs": args.epochs, "seed": args.seed, "cpus": os.cpu_count(), "machine": platform.processor()
              or platform.machine(), "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
              "started": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "load": {"start": load()}, "rows": []}
    run_dirs = []
    for name, objective, samples in ROWS:
        run_dir = Path(args.runs) / (objective if objective == "elbo" else f"iwae{samples}")
        log(f"training {name} in {run_dir}")
        metrics = train_row(objective, samples, args, run_dir)
        seconds = [row["seconds"] for row in metrics]
        row = {"name": name, "objective": objective, "K": samples, "run_dir": str(run_dir),
               "seconds_per_epoch": sum(seconds) / len(seconds), "final_epoch": metrics[-1]}
        report["rows"].append(row)
        report["load"][f"after training {name}"] = load()
        run_dirs.append(run_dir)
        write(report)
    k, reason = choose_k(args, run_dirs)
    report["k"], report["k_reason"] = k, reason
    log(f"evaluating at k = {k}: {reason}")
    for row, run_dir in zip(report["rows"], run_dirs):
        row.update(evaluate_row(run_dir, k, args.seed))
        report["load"][f"after evaluating {row['name']}"] = load()
        report["findings"] = findings(report["rows"])
        write(report)
        log(f"{row['name']}: {json.dumps({key: row[key] for key in ('test_iwae_nll', 'test_neg_elbo', 'active_units')})}")
    report["finished"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    write(report)
    log("done")


if __name__ == "__main__":
    main()
