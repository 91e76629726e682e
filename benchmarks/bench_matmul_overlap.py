"""Benchmark: do independent matrix products of the model run faster side by side, one BLAS thread each?

    python benchmarks/bench_matmul_overlap.py [--rounds 31] [--block 0.05] [--out benchmarks/results/matmul_overlap.md]

At the model's shapes (B = 128 batch, D = 784 pixels, H = 400 hidden, Z = 20 latent, float32), each
pair of products that a training step could compute at the same time is timed three ways:

- "one after the other, BLAS 2 threads": what numpyvae does today (OpenBLAS splits each product);
- "one after the other, BLAS 1 thread": for reference;
- "side by side": the two products at once, in two threads of numpyvae.parallel.ChunkPool, BLAS held
  to one thread (threadpoolctl), so each core does one whole product.

The pairs: a Linear's backward, dW = x^T dy and dx = dy W^T, for the D x H encoder and the H x D output
layer; the mu and logvar heads, h W_mu and h W_logvar; and, for the heads, the fused alternative: one
(B, H) @ (H, 2Z) product. Rounds alternate the order of the ways, so load from elsewhere on the machine
hits them alike, and each round records how much CPU the rest of the machine used meanwhile: the
table gives medians over the quiet rounds (where the comparison means something) and, for the
ratio, over all rounds too. Each way first runs untimed for WARM_UP seconds (see there why). The script
then runs itself once more with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as a side note (CI sets
them; they pick OpenBLAS's kernel and blocking), and writes both to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))        # benchkit
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # numpyvae from this checkout
from benchkit.quiet import OthersMeter                             # noqa: E402
from numpyvae.parallel import ChunkPool                           # noqa: E402

B, D, H, Z = 128, 784, 400, 20
# Seconds each way runs untimed before its timed block. After a 2-thread product OpenBLAS's idle thread spins
# on the other core for ~0.1 s (measured), which would slow whatever comes next; and a core that sat idle
# for a while serves thread wake-ups slowly for a few tens of ms (measured: side by side 1070 us per pair
# right after a 0.25 s sleep, 745 us once busy). A training step keeps one mode busy, so time it warm.
WARM_UP = 0.15
QUIET = 0.25      # a round is quiet when the rest of the machine used less than this many cores
MARK = "<!-- conclusions: written by hand, kept when the script rewrites the tables above -->"
SIDE_NOTE_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def cases(rng):
    """{name: [(a, b, out), ...]}: the products of each case, operands and preallocated outputs."""
    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    def product(a, b):
        return a, b, np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    x, h = r(B, D), r(B, H)                                     # encoder input, hidden activation
    W_enc, W_out, W_mu, W_logvar = r(D, H), r(H, D), r(H, Z), r(H, Z)
    dy_enc, dy_out = r(B, H), r(B, D)
    return {
        "enc backward, dW (784x128 @ 128x400) + dx (128x400 @ 400x784)": [product(x.T, dy_enc), product(dy_enc, W_enc.T)],
        "out backward, dW (400x128 @ 128x784) + dx (128x784 @ 784x400)": [product(h.T, dy_out), product(dy_out, W_out.T)],
        "heads forward, h W_mu + h W_logvar (128x400 @ 400x20, twice)": [product(h, W_mu), product(h, W_logvar)],
        "heads forward fused, h [W_mu W_logvar] (128x400 @ 400x40)": [product(h, np.concatenate([W_mu, W_logvar], 1))],
    }


def one_after_the_other(products):
    for a, b, out in products:
        np.matmul(a, b, out=out)


def side_by_side(pool, products):
    def one(worker, start, end):
        a, b, out = products[start]
        np.matmul(a, b, out=out)
    pool.run(one, len(products), 1)


def timed_block(threads, run, products, reps):
    """Seconds per run(products), BLAS on `threads` threads, over reps runs after WARM_UP seconds untimed."""
    with threadpool_limits(threads, user_api="blas"):
        warm_until = time.perf_counter() + WARM_UP
        while time.perf_counter() < warm_until:
            run(products)
        started = time.perf_counter()
        for _ in range(reps):
            run(products)
        return (time.perf_counter() - started) / reps


def measure(rounds, block_seconds):
    """{case: {"seconds": {way: [seconds per pair, one per round]}, "others": [cores used by others, per round]}}

    Each way runs as many repetitions as fill about block_seconds; "others" is the CPU the rest of
    the machine used during the round, in cores (0: we had the machine to ourselves).
    """
    pool = ChunkPool(2)
    ways = {"one after the other, BLAS 2 threads": (2, one_after_the_other),
            "one after the other, BLAS 1 thread": (1, one_after_the_other),
            "side by side, BLAS 1 thread each": (1, lambda products: side_by_side(pool, products))}
    results = {}
    for name, products in cases(np.random.default_rng(0)).items():
        usable = {w: v for w, v in ways.items() if len(products) > 1 or not w.startswith("side")}
        with threadpool_limits(1, user_api="blas"):
            started = time.perf_counter()
            one_after_the_other(products)
            reps = max(5, int(block_seconds / max(time.perf_counter() - started, 1e-6)))
        results[name] = {"seconds": {way: [] for way in usable}, "others": [], "reps": reps}
        for round_ in range(rounds):
            order = list(usable.items())
            order = order[round_ % len(order):] + order[:round_ % len(order)]
            with OthersMeter() as meter:
                for way, (threads, run) in order:
                    results[name]["seconds"][way].append(timed_block(threads, run, products, reps))
            results[name]["others"].append(meter.cores)
    pool.close()
    return results


def environment():
    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    blas = [{k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
            for info in threadpool_info() if info["user_api"] == "blas"]
    return {"cpu": cpu, "cores": os.cpu_count(), "numpy": np.__version__, "blas": blas,
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}}


def run_here(rounds, block_seconds):
    load_before = os.getloadavg()[0]
    results = measure(rounds, block_seconds)
    return {"environment": environment(), "results": results, "load": [load_before, os.getloadavg()[0]]}


def table(report):
    env, lines = report["environment"], []
    blas = "; ".join(f"{b['internal_api']} {b['version']}, kernel {b['architecture']}, {b['num_threads']} threads "
                     f"({b['threading_layer']})" for b in env["blas"])
    lines += [f"OpenBLAS as threadpoolctl sees it: {blas}. OPENBLAS_* set: "
              f"{', '.join(f'{k}={v}' for k, v in env['openblas_env'].items()) or 'none'}. "
              f"1-minute load average {report['load'][0]:.1f} before, {report['load'][1]:.1f} after.", "",
              f"Microseconds per pair, median over the quiet rounds: those in which the rest of the machine used "
              f"less than {QUIET} of a core (from /proc/stat; steal included). Ratios are medians of per-round ratios.", "",
              "| products | one after the other, BLAS 2 threads (today) | same, BLAS 1 thread | side by side, "
              "1 thread each | side by side / today, quiet rounds | same, all rounds | quiet rounds |",
              "|---|---|---|---|---|---|---|"]
    names = ("one after the other, BLAS 2 threads", "one after the other, BLAS 1 thread", "side by side, BLAS 1 thread each")
    for name, case in report["results"].items():
        seconds, others = case["seconds"], case["others"]
        quiet = [i for i, o in enumerate(others) if o is not None and o < QUIET]

        def median(way, rounds):
            return f"{1e6 * statistics.median(seconds[way][i] for i in rounds):.1f}" if way in seconds and rounds else "-"

        def ratio(rounds):
            if names[2] not in seconds or not rounds:
                return "-"
            return f"{statistics.median(seconds[names[2]][i] / seconds[names[0]][i] for i in rounds):.2f}"
        lines.append(f"| {name} | " + " | ".join(median(way, quiet) for way in names)
                     + f" | **{ratio(quiet)}** | {ratio(range(len(others)))} | {len(quiet)} of {len(others)} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--block", type=float, default=0.05, help="seconds each way runs in each round")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "matmul_overlap.md")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)   # internal: the side-note run
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(run_here(args.rounds, args.block)))
        return 0
    report = run_here(args.rounds, args.block)
    env = {k: v for k, v in os.environ.items() if k not in SIDE_NOTE_UNSET}
    done = subprocess.run([sys.executable, __file__, "--json", "--rounds", str(args.rounds), "--block", str(args.block)],
                          env=env, capture_output=True, text=True, check=True)
    side_note = json.loads(done.stdout.strip().splitlines()[-1])
    e = report["environment"]
    lines = ["# Independent matrix products side by side, or one after the other?", "",
             f"{e['cpu']}, {e['cores']} cores (a VM shared with other jobs: timings are noisy; compare only the "
             f"ratios, each over {args.rounds} interleaved rounds of about {args.block:g} s per way), "
             f"NumPy {e['numpy']}, float32, B={B}, D={D}, H={H}, Z={Z}. "
             f"Command: `python benchmarks/bench_matmul_overlap.py --rounds {args.rounds} --block {args.block:g}`.", "",
             "## With the environment as CI has it", ""] + table(report) + [
             "", f"## Side note: the same with {' and '.join(SIDE_NOTE_UNSET)} unset", ""] + table(side_note)
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = args.out.read_text() if args.out.exists() else ""
    if MARK in previous:                # keep the hand-written conclusions below the mark
        text += "\n" + MARK + previous.split(MARK, 1)[1]
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
