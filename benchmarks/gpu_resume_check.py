"""Ctrl-C and exact resume through the real command line, on any backend (issue 17's GPU check).

    python benchmarks/gpu_resume_check.py --backend cupy --work /tmp/resume --json result.json

Three `numpyvae train` processes:
  1. straight:     --epochs E, never stopped;
  2. interrupted:  the same, sent SIGINT (a Ctrl-C) part way into epoch 2, after epoch 1's line
                   has come out; it must exit with 130 and save its state mid-epoch;
  3. resumed:      `numpyvae train --resume` on run 2's directory, to E epochs.
Then the last checkpoints of runs 1 and 3 (weights, Adam's m and v) and their metrics must be
bit for bit the same. On NumPy that is what train.py promises. On a GPU it holds when every
kernel gives the same bits from the same inputs in a fresh process: cuRAND's XORWOW from the
same seed, cuBLAS's GEMMs (deterministic on one GPU model and library version, on one stream),
CuPy's reductions (fixed trees, no atomics). Where the bits differ, the report gives the
largest difference, so the next session can tell "summed in another order" (~1e-7 relative)
from "resumed at the wrong place" (everything off). Exit status 0 only for the bit-exact pass.

Any further arguments after `--` go to every `numpyvae train` (the rehearsal passes small sizes).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # numpyvae from this checkout

EPOCH_LINE = re.compile(r"^epoch\s+1/\d+\b")          # train.format_epoch's line for epoch 1
EPOCH_SECONDS = re.compile(r"([0-9.]+)\s*s\s*$")     # ... which ends with the epoch's seconds


def train_command(backend, epochs, run_dir, extra, resume=False):
    command = [sys.executable, "-m", "numpyvae", "train", "--backend", backend, "--epochs", str(epochs),
               "--run-dir", str(run_dir), "--no-figures", *extra]
    # bit-exact resume needs the same BLAS threads throughout; --threads auto follows the load
    # (on CuPy the flag changes nothing: the threads are the host BLAS's)
    command += ["--threads", "1"]
    return command + ["--resume"] if resume else command


def run(command, log):
    """Run a command to its end; its output goes to `log`. Returns the exit status."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    return subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, timeout=600).returncode


def run_and_interrupt(command, log, fraction=0.4):
    """Start a run, and once epoch 1's line is out, send SIGINT `fraction` of an epoch later.

    Returns (exit status, the whole output). An epoch's length is read off epoch 1's own line.
    """
    log.write(f"$ {' '.join(command)}   # SIGINT in epoch 2\n")
    log.flush()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        log.write(line)
        if EPOCH_LINE.match(line.strip()):
            seconds = EPOCH_SECONDS.search(line.strip())
            wait = fraction * (float(seconds.group(1)) if seconds else 1.0)
            time.sleep(wait)
            process.send_signal(signal.SIGINT)
            log.write(f"# sent SIGINT {wait:.2f} s after epoch 1's line\n")
            break
    rest, _ = process.communicate(timeout=600)
    log.write(rest)
    log.flush()
    return process.returncode, "".join(lines) + rest


def compare(straight_dir, resumed_dir):
    """{what: largest absolute difference} between two finished runs' checkpoints and metrics."""
    from numpyvae import checkpoint
    a, b = checkpoint.load(straight_dir / checkpoint.FILENAME), checkpoint.load(resumed_dir / checkpoint.FILENAME)
    differences = {"epoch": abs(a.epoch - b.epoch), "params": float(abs(a.params - b.params).max()),
                   "adam_m": float(abs(a.adam["m"] - b.adam["m"]).max()),
                   "adam_v": float(abs(a.adam["v"] - b.adam["v"]).max())}
    rows = [list(csv.DictReader((d / "metrics.csv").open())) for d in (straight_dir, resumed_dir)]
    columns = [c for c in rows[0][0] if c not in ("epoch", "seconds")]
    differences["metrics"] = max(abs(float(r[c]) - float(s[c])) for r, s in zip(*rows) for c in columns)
    differences["metric_rows"] = abs(len(rows[0]) - len(rows[1]))
    scale = float(abs(a.params).max())
    return differences, scale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cupy")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, required=True, help="a fresh directory for the three runs")
    parser.add_argument("--json", type=Path, help="write the result here too")
    parser.add_argument("extra", nargs="*", help="after --: more `numpyvae train` arguments")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=False)
    straight, stopped = args.work / "straight", args.work / "interrupted"
    result = {"backend": args.backend, "epochs": args.epochs, "extra": args.extra}
    with (args.work / "runs.log").open("w") as log:
        result["straight_exit"] = run(train_command(args.backend, args.epochs, straight, args.extra), log)
        result["interrupted_exit"], output = run_and_interrupt(
            train_command(args.backend, args.epochs, stopped, args.extra), log)
        saved = re.search(r"at step (\d+) of (\d+) in epoch (\d+); saved to", output)
        result["interrupted_at"] = saved.group(0) if saved else None
        result["resumed_exit"] = run(train_command(args.backend, args.epochs, stopped, args.extra, resume=True), log)
    print((args.work / "runs.log").read_text())
    problems = []
    if result["straight_exit"] != 0:
        problems.append(f"the straight run exited with {result['straight_exit']}")
    if result["interrupted_exit"] != 130:
        problems.append(f"the interrupted run exited with {result['interrupted_exit']}, not 130 (Ctrl-C)")
    if not saved or saved.group(3) != "2" or saved.group(1) == "0":
        problems.append("the interrupted run did not save its state in the middle of epoch 2")
    if result["resumed_exit"] != 0:
        problems.append(f"the resumed run exited with {result['resumed_exit']}")
    if not problems:
        differences, scale = compare(straight, stopped)
        result.update(differences=differences, largest_weight=scale)
        result["bit_exact"] = all(value == 0 for value in differences.values())
        if not result["bit_exact"]:
            problems.append(f"resumed run differs from the straight one: {differences} "
                            f"(largest weight {scale:.3g}); ~1e-7 of it means summation order, more a wrong resume")
    result["problems"] = problems
    result["passed"] = not problems
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
