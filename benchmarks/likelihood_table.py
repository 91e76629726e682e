"""A Fashion-MNIST likelihood table under Lawson et al. 2019's protocol (issue 28, item 5), resumable across sessions.

    OPENBLAS_NUM_THREADS=1 python benchmarks/likelihood_table.py [--epochs 50] [--rows vae,iwae5,...] [--threads 1]
    OPENBLAS_NUM_THREADS=1 python benchmarks/likelihood_table.py --time-steps 50     # measure, and write the plan
    python benchmarks/likelihood_table.py --smoke --runs-dir /tmp/t --results-dir /tmp/t   # seconds, for the test

The protocol (Lawson, Tucker, Dai & Ranganath 2019, "Energy-Inspired Models", and their code,
google-research/google-research `eim/`): binarized Fashion-MNIST, a dense 784-300-300-50 encoder
and 50-300-300-784 decoder (`--hidden-dims 300,300 --latent-dim 50`), Bernoulli likelihood, batch 128,
Adam 3e-4, pixels drawn anew as 0 or 1 every batch (`--binarize`), the decoder's output bias at the
logit of the training mean (`--init-output-bias mean`), the same number of epochs for every row,
and the test set scored by the importance-weighted bound at k = 5000. The rows:

    vae            the VAE (ELBO)
    iwae5          IWAE, K = 5
    iwae50         IWAE, K = 50
    vamp           VampPrior, 500 pseudo-inputs (`--prior vamp --pseudo-inputs 500`), ELBO
    vamp-iwae50    VampPrior, 500 pseudo-inputs, IWAE K = 50

Each row is a run directory of its own under --runs-dir, trained by the `numpyvae train` command
(a subprocess), which resumes bit for bit with --resume at the same --threads: a script killed or out
of time picks up where it stopped, at the last epoch saved, or mid-epoch after a Ctrl-C or SIGTERM:
the script passes either on to numpyvae train (run_passing_signals), which saves where it is and stops. A finished row is scored by `numpyvae evaluate --json`, and its
numbers are cached in likelihood_table.json with the epoch and k they belong to, so no row is
evaluated twice. likelihood_table.md is rewritten after every row trained or evaluated; a row not
finished shows the epochs it has reached. A row whose flags this numpyvae lacks (the VampPrior's
`--prior`, before it exists) is said so in one line and skipped; the rest run.

--time-steps N trains each row for one epoch of N steps (N * 128 images) and times it, times an
evaluation's passes on the test set, and writes the plan: seconds per epoch of each row and how
long the whole table takes (training, each epoch's test pass and the k = 5000 evaluation).
--smoke is the same machinery, tiny: 1 epoch on 512 training images, 512 test images, k = 10.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                                        # numpyvae from this checkout

from numpyvae import checkpoint, evaluate                             # noqa: E402
from numpyvae.atomicfile import atomic_write                          # noqa: E402
from numpyvae.rundir import RunError, read_metrics                    # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "likelihood_table_runs"      # checkpoints: not committed (.gitignore)
TRAIN_IMAGES, TEST_IMAGES, BATCH = 60_000, 10_000, 128
STEPS_PER_EPOCH = math.ceil(TRAIN_IMAGES / BATCH)                     # 469
K_EVAL = 5000
LATENT = 50
PROTOCOL_FLAGS = ["--hidden-dims", "300,300", "--latent-dim", str(LATENT), "--likelihood", "bernoulli",
                  "--batch-size", str(BATCH), "--lr", "3e-4", "--binarize", "--init-output-bias", "mean",
                  "--seed", "0", "--dtype", "float32", "--backend", "numpy"]
SMOKE = {"epochs": 1, "images": 512, "k": 10}
BOUND_PROBE = (200, 500)     # --time-steps times the IWAE bound on this many test images at this k


class Row(NamedTuple):
    key: str
    name: str
    flags: tuple            # numpyvae train's flags beside PROTOCOL_FLAGS
    samples: int            # K per image in training (1 for the ELBO)
    published: str          # the published number beside it, with its source


NOT_READ = ("not verified: the search tools return only the opening of each stored copy of the paper, so no number "
            "was read from its tables, and none is given here")
ROWS = (
    Row("vae", "VAE (ELBO)", ("--objective", "elbo"), 1,
        f"Lawson et al. 2019, NeurIPS, the table of VAEs with learned priors on Fashion MNIST (VAE with a Gaussian "
        f"prior): {NOT_READ}"),
    Row("iwae5", "IWAE, K = 5", ("--objective", "iwae", "--samples", "5"), 5,
        "none on Fashion-MNIST known to us (Burda et al. 2016, Table 1, is on MNIST and Omniglot)"),
    Row("iwae50", "IWAE, K = 50", ("--objective", "iwae", "--samples", "50"), 50,
        "none on Fashion-MNIST known to us (Burda et al. 2016, Table 1, is on MNIST and Omniglot)"),
    Row("vamp", "VampPrior, 500 pseudo-inputs", ("--prior", "vamp", "--pseudo-inputs", "500"), 1,
        "Tomczak & Welling 2018, AISTATS, the one-layer VAE on dynamically binarized MNIST (not Fashion-MNIST): "
        "85.57 with the VampPrior against 88.56 with N(0, I), as issue 28 quotes them; not verified (the paper's "
        "table could not be read through the search tools)"),
    Row("vamp-iwae50", "VampPrior, IWAE K = 50", ("--prior", "vamp", "--pseudo-inputs", "500", "--objective", "iwae",
                                                  "--samples", "50"), 50,
        "none known to us"),
)
BY_KEY = {row.key: row for row in ROWS}

# Runs the real numpyvae command with only the first LIKELIHOOD_TABLE_IMAGES images of each split
# (--smoke and --time-steps); a full run is plain `python -m numpyvae`, as anyone would type it.
SUBSET_BOOTSTRAP = """\
import os, sys
from numpyvae import datasets
_load, _count = datasets.load_fashion_mnist, {"train": int(os.environ["LIKELIHOOD_TABLE_TRAIN"]),
                                              "test": int(os.environ["LIKELIHOOD_TABLE_TEST"])}
def load(split="train", *args, **kwargs):
    images, labels = _load(split, *args, **kwargs)
    return images[:_count[split]], labels[:_count[split]]
datasets.load_fashion_mnist = load
from numpyvae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def log(message):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {message}", flush=True)


def load_average():
    return [round(value, 2) for value in os.getloadavg()]


class Numpyvae:
    """The numpyvae command of this checkout, run as a subprocess, on all the data or on its first images."""

    def __init__(self, train_images=None, test_images=None, data_dir=None):
        self.subset = None if train_images is None else (train_images, test_images)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if self.subset:
            self.env.update(LIKELIHOOD_TABLE_TRAIN=str(train_images), LIKELIHOOD_TABLE_TEST=str(test_images))
        self.data_dir = data_dir

    def command(self, *args):
        start = [sys.executable, "-c", SUBSET_BOOTSTRAP] if self.subset else [sys.executable, "-m", "numpyvae"]
        return start + [str(a) for a in args]

    def run(self, *args, capture=False):
        """The command's CompletedProcess; Stopped if this script got SIGINT or SIGTERM meanwhile (passed on)."""
        done, received = run_passing_signals(self.command(*args), self.env, capture)
        if received:
            raise Stopped(received[0])
        return done

    def missing_flags(self, row):
        """The flags of `row` that this numpyvae's `train --help` does not list."""
        if not hasattr(self, "_help"):
            self._help = self.run("train", "--help", capture=True).stdout
        return [flag for flag in row.flags if flag.startswith("--") and flag not in self._help]

    def train(self, run_dir, row, epochs, threads):
        resume = (run_dir / checkpoint.FILENAME).exists()
        data = ["--data-dir", self.data_dir] if self.data_dir else []
        return self.run("train", "--run-dir", run_dir, "--epochs", epochs, "--threads", threads, "--no-figures",
                        *PROTOCOL_FLAGS, *row.flags, *data, *(["--resume"] if resume else [])).returncode

    def evaluate(self, run_dir, k, threads):
        data = ["--data-dir", self.data_dir] if self.data_dir else []
        result = self.run("evaluate", run_dir, "--iw-samples", k, "--threads", threads, "--json", *data, capture=True)
        if result.returncode:
            raise RunError(f"numpyvae evaluate {run_dir} failed: {result.stderr.strip().splitlines()[-1:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


class Stopped(Exception):
    """This script got SIGINT or SIGTERM while numpyvae ran; numpyvae got it too, saved and stopped."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_passing_signals(command, env, capture=False):
    """Run `command` in a session of its own, passing on every SIGINT and SIGTERM this script gets.

    A session of its own, so a Ctrl-C at the terminal reaches numpyvae once, through here, not twice
    (its second signal stops it at once, saving nothing); and passing signals on, so a SIGTERM sent to
    this script alone (`timeout`, a batch system's end of session) stops numpyvae too, saved where it
    was, instead of leaving it training on, orphaned, holding its run's lock when the next session
    starts. (A SIGKILL cannot be passed on: numpyvae then runs on until it finishes or is stopped.)
    Returns (CompletedProcess, the signals received, in order).
    """
    pipe = subprocess.PIPE if capture else None
    received, children = [], []

    def pass_on(signum, frame):
        received.append(signum)
        for child in children:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, pass_on) for signum in STOP_SIGNALS}   # before the child starts
    try:
        child = subprocess.Popen(command, env=env, cwd=ROOT, text=True, stdout=pipe, stderr=pipe,
                                 start_new_session=True)
        children.append(child)
        for signum in received:            # came while it was starting
            child.send_signal(signum)
        stdout, stderr = child.communicate()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr), received


def epochs_done(run_dir):
    """Finished epochs of a run and their median training seconds (0, None for no run yet).

    The median, not the mean: an epoch during which the run was paused (SIGSTOP, to free the cores for
    other work) or the machine was busy elsewhere counts as one slow epoch among fifty, not as hours.
    """
    try:
        rows = read_metrics(run_dir)
    except RunError:
        return 0, None
    return len(rows), (statistics.median(r["seconds"] for r in rows) if rows else None)


# -- the table ------------------------------------------------------------------------------------

def run_table(args, numpyvae, report, paths):
    for key in args.rows:
        row = BY_KEY[key]
        entry = report["rows"].setdefault(key, {})
        run_dir = Path(args.runs_dir) / key
        missing = numpyvae.missing_flags(row)
        if missing:
            entry["status"] = f"needs a numpyvae with {' '.join(missing)} (this one's train has no such flag)"
            log(f"{row.name}: {entry['status']}; skipped")
            write(report, paths)
            continue
        done, _ = epochs_done(run_dir)
        if done < args.epochs:
            log(f"{row.name}: training in {run_dir}, {done} of {args.epochs} epochs done")
            entry.update(status="training", threads=args.threads)
            write(report, paths)
            try:
                code = numpyvae.train(run_dir, row, args.epochs, args.threads)
            except Stopped as stop:            # numpyvae saved where it was: the next run of the script goes on
                entry["status"] = f"training stopped by {stop}; run the script again to go on"
                record_progress(entry, run_dir)
                write(report, paths)
                raise SystemExit(128 + stop.signum) from None
            if code:
                entry["status"] = f"numpyvae train exited {code}; see its message above"
                record_progress(entry, run_dir)
                write(report, paths)
                continue
        record_progress(entry, run_dir, trained=done < args.epochs)
        if entry["epochs"] < args.epochs:
            entry["status"] = "training stopped early"
            write(report, paths)
            continue
        cached = entry.get("evaluation")
        if not cached or cached.get("epoch") != args.epochs or cached.get("iw_samples") != args.k:
            log(f"{row.name}: evaluating at k = {args.k}")
            entry["status"] = "evaluating"
            write(report, paths)
            try:
                scored = numpyvae.evaluate(run_dir, args.k, args.threads)
                scored.pop("run_dir", None)             # this machine's path: the row's key names the run
                entry["evaluation"] = scored
            except Stopped as stop:
                entry["status"] = f"evaluation stopped by {stop}; run the script again to evaluate"
                write(report, paths)
                raise SystemExit(128 + stop.signum) from None
            entry["load_after_evaluation"] = load_average()
        entry["status"] = "done"
        write(report, paths)
        log(f"{row.name}: -log p(x) <= {entry['evaluation']['iwae_nll']:.2f}, negative ELBO "
            f"{entry['evaluation']['test_loss']:.2f}, {entry['evaluation']['active_units']} active units")


def record_progress(entry, run_dir, trained=True):
    """The row's epochs and seconds per epoch, from its metrics; the load average now if it trained just now
    (a row finished in an earlier run keeps the load it stopped at)."""
    entry["epochs"], entry["seconds_per_epoch"] = epochs_done(run_dir)
    if trained or "load" not in entry:
        entry["load"] = load_average()


# -- the plan: timing each row on a short run -----------------------------------------------------

def measure(args, numpyvae, report, paths):
    """Train each row one epoch of args.time_steps steps, time an evaluation's passes, and estimate the table."""
    from numpyvae import datasets
    from numpyvae.rundir import load_run

    plan = {"steps_timed": args.time_steps, "threads": args.threads, "cpus": os.cpu_count(),
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
            "when": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "rows": {}}
    measured = {}
    for key in args.rows:
        row = BY_KEY[key]
        missing = numpyvae.missing_flags(row)
        if missing:
            log(f"{row.name}: needs a numpyvae with {' '.join(missing)}; not timed")
            continue
        run_dir = Path(args.runs_dir) / key
        load_before = load_average()
        code = numpyvae.train(run_dir, row, 1, args.threads)
        if code:
            raise RunError(f"timing {row.name}: numpyvae train exited {code}")
        _, seconds = epochs_done(run_dir)
        measured[key] = seconds / args.time_steps                         # seconds per step
        plan["rows"][key] = {"seconds_per_step": round(measured[key], 4),
                             "load": [load_before, load_average()]}
        log(f"{row.name}: {measured[key] * 1000:.0f} ms per step")
    if "vae" not in measured:
        raise RunError("the VAE row must be timed: its model times the evaluation")
    config, model, _ = load_run(Path(args.runs_dir) / "vae")
    images, _ = datasets.load_fashion_mnist("test", args.data_dir, download=False)
    data = evaluate.test_dataset(images[:1000], model.backend, model.dtype, binarize=True)
    passes = evaluate.estimate_pass_times(model, data)
    probe = evaluate.test_dataset(images[:BOUND_PROBE[0]], model.backend, model.dtype, binarize=True)
    started = time.perf_counter()
    evaluate.importance_weighted_bound(model, probe, k=BOUND_PROBE[1])
    bound = (time.perf_counter() - started) / (BOUND_PROBE[0] * BOUND_PROBE[1])     # per image and sample
    plan["pass_seconds_per_image"] = {"forward": passes.forward, "decoder": passes.decoder, "bound_sample": bound}
    plan["estimate"] = estimate(measured, passes, bound, args.epochs, args.k)
    report["plan"] = plan
    write(report, paths)


def estimate(per_step, passes, bound, epochs, k):
    """Seconds for the whole table from the measured seconds per step, passes and bound samples.

    Training: epochs * STEPS_PER_EPOCH steps. Each epoch's test pass: a negative ELBO (one forward
    pass per test image) and, for an IWAE run, its bound at K (K samples per image at `bound` seconds
    each, timed on evaluate.importance_weighted_bound itself: the decoder and the likelihood's
    log-probability of every pixel). Evaluation: evaluate's 10 ELBO forward passes and k bound samples
    per image. A VampPrior row that could not be timed is estimated: its step adds the encoder, forward
    and backward, on the 500 pseudo-inputs (the encoder's time per image times 500 * 3, backward counted
    as twice forward) to the step of the row with the same objective; its mixture log-density
    (K * B * 500 * Z numbers per step, and 500 * Z per bound sample) is left out.
    """
    encoder = max(passes.forward - passes.decoder, 0.0)
    vamp_extra = 500 * 3 * encoder
    rows = {}
    for row in ROWS:
        if row.key in per_step:
            step, how = per_step[row.key], "measured"
        else:
            base = {1: "vae", 5: "iwae5", 50: "iwae50"}[row.samples]
            if base not in per_step:
                continue
            step, how = per_step[base] + vamp_extra, f"estimated: {base}'s step + the encoder on 500 pseudo-inputs"
        test_pass = TEST_IMAGES * (passes.forward + (row.samples * bound if row.samples > 1 else 0))
        evaluation = TEST_IMAGES * (evaluate.ELBO_SAMPLES * passes.forward + k * bound)
        rows[row.key] = {"seconds_per_epoch": round(step * STEPS_PER_EPOCH, 1), "how": how,
                         "test_pass_seconds": round(test_pass, 1),
                         "training_hours": round(epochs * (step * STEPS_PER_EPOCH + test_pass) / 3600, 2),
                         "evaluation_hours": round(evaluation / 3600, 2)}
    total = sum(r["training_hours"] + r["evaluation_hours"] for r in rows.values())
    return {"epochs": epochs, "k": k, "rows": rows, "total_hours": round(total, 1)}


# -- the report -----------------------------------------------------------------------------------

class Results(NamedTuple):
    """Where the table goes, and the rows this run of the script owns there."""
    json: Path
    md: Path
    rows: list


def write(report, paths):
    """Write the report, its own rows as they are and every other row as the file has it now.

    Two copies of the script with disjoint --rows share one results file: each reads the others'
    rows back under a lock on the results folder before writing, so neither writes over what the
    other found since it started.
    """
    paths.json.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(paths.json.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)            # on the folder: no lock file is left behind
        if paths.json.exists():
            on_disk = json.loads(paths.json.read_text()).get("rows", {})
            report["rows"].update({key: entry for key, entry in on_disk.items() if key not in paths.rows})
        with atomic_write(paths.json) as file:
            file.write((json.dumps(report, indent=2) + "\n").encode())
        with atomic_write(paths.md) as file:
            file.write(markdown(report).encode())
    finally:
        os.close(folder)


def cell(entry, epochs, k):
    """(bound, ELBO, active units, s/epoch, epochs, status) of one row for the Markdown table."""
    evaluation = entry.get("evaluation")
    seconds = entry.get("seconds_per_epoch")
    done = entry.get("epochs", 0)
    status = entry.get("status", "not yet run")
    if evaluation and evaluation.get("epoch") == epochs and evaluation.get("iw_samples") == k:
        return (f"{evaluation['iwae_nll']:.2f}", f"{evaluation['test_loss']:.2f}",
                f"{evaluation['active_units']}", f"{seconds:.1f}", f"{done}", "done")
    if status == "done":           # evaluated, but for another number of epochs or another k
        status = f"evaluated after {evaluation['epoch']} epochs at k = {evaluation['iw_samples']}, not yet again"
    where = f"{status}: {done} of {epochs} epochs" if done else status
    return ("", "", "", f"{seconds:.1f}" if seconds else "", f"{done}" if done else "", where)


def markdown(report):
    epochs, k = report["epochs"], report["k"]
    smoke = " (smoke run)" if report["smoke"] else ""
    lines = [f"# Fashion-MNIST likelihoods under Lawson et al. 2019's protocol{smoke}",
             "", "Written by `benchmarks/likelihood_table.py` (issue 28, item 5); nats per test image, lower is "
                 "better.", "", "## Protocol", "",
             "- Data: Fashion-MNIST, 60,000 training images and the 10,000 test images"
             + (f" (smoke run: the first {report['smoke']} of each)" if report["smoke"] else "") + ". Training pixels "
             "binarized dynamically, drawn anew as 0 or 1 with probability equal to their intensity every batch "
             "(`--binarize`). The test set as `numpyvae evaluate` scores a `--binarize` run: binarized once, with a "
             "fixed seed (`evaluate.binarize_fixed`, seed 0), the same binary images for every row.",
             "- Model: dense, encoder 784-300-300 then mu and logvar (Z = 50), decoder 50-300-300-784, ReLU hidden "
             "units, Bernoulli likelihood (`--hidden-dims 300,300 --latent-dim 50`); the decoder's output bias at "
             "the logit of the training set's mean pixel, clipped to [1e-4, 1 - 1e-4] (`--init-output-bias mean`).",
             f"- Training: Adam, learning rate 3e-4, batch 128, {epochs} epochs for every row, seed 0, float32 "
             f"NumPy, `--threads {report['threads']}`.",
             f"- Test: `numpyvae evaluate --iw-samples {k} --json`: the negative importance-weighted bound at "
             f"k = {k} (Burda et al. 2016), an upper bound on -log p(x); the negative ELBO averaged over "
             f"{evaluate.ELBO_SAMPLES} posterior samples per image; active units, latent dimensions whose posterior "
             f"mean varies over the test set by more than {evaluate.ACTIVE_THRESHOLD}.",
             "- s / epoch: the training steps of an epoch (numpyvae's metrics.csv), the median over the epochs trained, so that an epoch paused or slowed by other work does not count as more than one; "
             "the test pass after each epoch is not counted. Only rows trained on the same machine under a similar "
             "load compare.", "",
             "Where this differs from Lawson et al.'s code (google-research/google-research `eim/`, read for this "
             "table): their hidden units are tanh and their weights Glorot-uniform (numpyvae: ReLU, PyTorch's "
             "uniform); their posterior scale is max(softplus(raw), 1e-5) (numpyvae: exp(logvar / 2)); their encoder "
             "reads x minus the training mean (numpyvae: x); their test images are binarized anew on every pass "
             "(numpyvae: once, fixed); their learning rate drops to a third after 10^6 steps and their code's default "
             "run is 10^7 steps, about 21,000 epochs (how long the paper's runs were was not read; here: a fixed, "
             "much smaller number of epochs, the same for every "
             "row). The output bias is as theirs: the logit of the clipped training mean.", "",
             "## Results", "",
             f"| row | test -log p(x) <= IWAE bound, k = {k} | test negative ELBO | active units (of {LATENT}) | "
             f"s / epoch | epochs | status | published |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for number, row in enumerate(ROWS, 1):
        entry = report["rows"].get(row.key)
        values = cell(entry, epochs, k) if entry else ("", "", "", "", "", "not yet run")
        lines.append(f"| {row.name} | " + " | ".join(values) + f" | see [{number}] |")
    lines += ["", "Published numbers, each with its source (none of them was read from its paper's text here; "
                  "each is marked):", ""]
    lines += [f"{number}. {row.name}: {row.published}." for number, row in enumerate(ROWS, 1)]
    loads = {key: entry["load"] for key, entry in report["rows"].items() if "load" in entry}
    if loads:
        lines += ["", f"Load average (1, 5, 15 min) when each row last stopped training, on a {report['cpus']}-CPU "
                      f"machine: " + "; ".join(f"{key} {value}" for key, value in loads.items()) + "."]
    plan = report.get("plan")
    if plan:
        lines += plan_lines(plan)
    lines += ["", "## How to run it", "",
              "    OPENBLAS_NUM_THREADS=1 python benchmarks/likelihood_table.py --epochs 50",
              "",
              "Each row trains in its own directory under `benchmarks/results/likelihood_table_runs/` (checkpoints; "
              "not committed). Stopped by Ctrl-C or SIGTERM (`timeout`, the end of a session), the script passes "
              "the signal on to `numpyvae train`, which saves mid-epoch; killed or out of time, the same command "
              "goes on where it stopped: each run resumes from its checkpoint, and a row already evaluated is not "
              "evaluated again. `--rows vae,iwae5` runs "
              "some rows only; the VampPrior rows need a numpyvae with `--prior` and are skipped, saying so, "
              "without it."]
    return "\n".join(lines) + "\n"


def plan_lines(plan):
    estimate_ = plan["estimate"]
    lines = ["", "## The plan: timed here, before the full run", "",
             f"Measured {plan['when']}: each row trained for one epoch of {plan['steps_timed']} steps (batch "
             f"{BATCH}), `--threads {plan['threads']}`, OPENBLAS_NUM_THREADS={plan['openblas_threads']}, on a "
             f"{plan['cpus']}-CPU machine shared with other work (load average before and after each row below). "
             f"Evaluation timed on the VAE row's model: "
             f"{plan['pass_seconds_per_image']['forward'] * 1e6:.0f} us per test image for a forward pass, and "
             f"{plan['pass_seconds_per_image']['bound_sample'] * 1e6:.1f} us per image and importance sample for "
             f"`evaluate.importance_weighted_bound` ({BOUND_PROBE[0]} images at k = {BOUND_PROBE[1]}). A full epoch "
             f"is {STEPS_PER_EPOCH} steps.", "",
             f"| row | ms / step | s / epoch | test pass / epoch (s) | training, {estimate_['epochs']} epochs (h) | "
             f"evaluation, k = {estimate_['k']} (h) | how | load before; after |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for row in ROWS:
        guess = estimate_["rows"].get(row.key)
        if not guess:
            continue
        timed = plan["rows"].get(row.key)
        step = f"{timed['seconds_per_step'] * 1000:.0f}" if timed else ""
        load = f"{timed['load'][0]}; {timed['load'][1]}" if timed else ""
        lines.append(f"| {row.name} | {step} | {guess['seconds_per_epoch']:.0f} | {guess['test_pass_seconds']:.0f} | "
                     f"{guess['training_hours']:.1f} | {guess['evaluation_hours']:.2f} | {guess['how']} | {load} |")
    lines += ["", f"Estimated total: **{estimate_['total_hours']} hours** of one CPU thread for the "
                  f"{len(estimate_['rows'])} rows above (training with each epoch's test pass, then the k = "
                  f"{estimate_['k']} evaluation), at the load measured; a busier machine takes longer. Rows train one "
                  f"after another; on a machine with free cores, two copies of the script with disjoint `--rows` "
                  f"run side by side."]
    return lines


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50, help="epochs for every row (default 50)")
    parser.add_argument("--rows", default=",".join(BY_KEY),
                        help=f"comma-separated, of {', '.join(BY_KEY)} (default all)")
    parser.add_argument("--runs-dir", help=f"where the rows' runs go (default {RUNS.relative_to(ROOT)}/, "
                                           "smoke/ and timing/ under it for those modes)")
    parser.add_argument("--results-dir", help="where likelihood_table.{json,md} go (default benchmarks/results; "
                                              "with --smoke, the smoke runs' directory)")
    parser.add_argument("--threads", default="1", help="numpyvae's --threads for every run (default 1: a run "
                                                       "resumes bit for bit at the same number)")
    parser.add_argument("--k", type=int, default=K_EVAL,
                        help=f"importance samples of the test bound (default {K_EVAL})")
    parser.add_argument("--data-dir", help="Fashion-MNIST directory (default numpyvae's)")
    parser.add_argument("--smoke", action="store_true", help="tiny: 1 epoch on 512 training images, 512 test "
                                                             "images, k = 10 (seconds; for the test)")
    parser.add_argument("--time-steps", type=int, help="time each row on one epoch of this many steps and write "
                                                       "the plan (the table's estimated time) instead of running it")
    args = parser.parse_args(argv)
    args.rows = [key.strip() for key in args.rows.split(",") if key.strip()]
    unknown = [key for key in args.rows if key not in BY_KEY]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; the rows are {', '.join(BY_KEY)}")
    if args.smoke and args.time_steps:
        parser.error("--smoke and --time-steps are two different modes; give one")
    if args.smoke:
        args.epochs, args.k = SMOKE["epochs"], SMOKE["k"]
    # smoke and timing runs never mix with the table's; each timing is a fresh set of runs
    mode = "smoke" if args.smoke else (f"timing/{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"
                                       if args.time_steps else "")
    args.runs_dir = Path(args.runs_dir or RUNS) / mode
    # a smoke run never writes over the committed results
    args.results_dir = Path(args.results_dir or (args.runs_dir if args.smoke else RESULTS))
    return args


def main(argv=None):
    args = parse(argv)
    if args.smoke:
        numpyvae = Numpyvae(SMOKE["images"], SMOKE["images"], args.data_dir)
    elif args.time_steps:
        numpyvae = Numpyvae(args.time_steps * BATCH, 512, args.data_dir)
    else:
        numpyvae = Numpyvae(data_dir=args.data_dir)
    results = Path(args.results_dir)
    paths = Results(results / "likelihood_table.json", results / "likelihood_table.md", args.rows)
    # a row's cached evaluation counts only for the epochs and k it was made at (cell, run_table)
    report = json.loads(paths.json.read_text()) if paths.json.exists() else {}
    report.update(epochs=args.epochs, k=args.k, threads=args.threads, smoke=SMOKE["images"] if args.smoke else 0,
                  cpus=os.cpu_count(), machine=platform.processor() or platform.machine())
    report.setdefault("rows", {})
    try:
        if args.time_steps:
            measure(args, numpyvae, report, paths)
        else:
            run_table(args, numpyvae, report, paths)
    except RunError as error:
        raise SystemExit(f"likelihood_table: {error}") from None
    except Stopped as stop:                 # numpyvae, which got the signal too, has said what it saved
        raise SystemExit(128 + stop.signum) from None
    log(f"wrote {paths.md}")


if __name__ == "__main__":
    main()
