"""Every gradcheck command README shows, at many seeds, on correct code: each must exit 0 (issue #26).

    python benchmarks/gradcheck_seeds.py                     # seeds 0-19, every command below (about an hour)
    python benchmarks/gradcheck_seeds.py --seeds 0-4 --only conv,bare

Each command runs as `numpyvae gradcheck --threads 1 --seed S ...` in its own process; "readme
examples" first registers the worked likelihood and layer of docs/extending.md (blocks
<!-- extend-likelihood --> and <!-- extend-layer -->, moved there from README) and then runs the bare command and two models built from them. Prints one line
per run as it ends, then a Markdown table (benchmarks/results/gradcheck_seeds.md holds the last one),
and exits 1 if any run failed.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {   # name: the flags after `numpyvae gradcheck` (README shows the first two; the rest vary them)
    "bare": [],                                    # dense 784-400-20 and 6-5-3, plain and conditional, every likelihood
    "conv": ["--arch", "conv"],
    "conv conditional": ["--arch", "conv", "--conditional"],
    "conv gaussian": ["--arch", "conv", "--likelihood", "gaussian"],
    "conv continuous-bernoulli": ["--arch", "conv", "--likelihood", "continuous-bernoulli"],
    "conv 3 convolutions": ["--arch", "conv", "--hidden-dims", "32,64,128"],
    "conv 3 convolutions, conditional, gaussian": ["--arch", "conv", "--hidden-dims", "32,64,128", "--conditional",
                                                   "--likelihood", "gaussian"],
    "dense 2 layers": ["--hidden-dims", "512,256"],
    "dense 2 layers, conditional, gaussian": ["--hidden-dims", "512,256", "--conditional", "--likelihood", "gaussian"],
    "dense 3 layers": ["--hidden-dims", "400,300,200"],
    "dense 3 layers, conditional, continuous-bernoulli": ["--hidden-dims", "400,300,200", "--conditional",
                                                          "--likelihood", "continuous-bernoulli"],
    "bare float32": ["--dtype", "float32"],
    "conv float32": ["--arch", "conv", "--dtype", "float32"],
    "readme examples": None,                       # README's SharpGaussian and LeakyReLU, registered first
}

README_EXAMPLES = """
import sys
from pathlib import Path
readme = Path("docs/extending.md").read_text()      # README's worked examples live there now
for marker in ("extend-likelihood", "extend-layer"):
    block = readme.split(f"<!-- {marker} -->", 1)[1].split("```python\\n", 1)[1].split("```", 1)[0]
    exec(compile(block, marker, "exec"), {})
from numpyvae import cli
seed = sys.argv[1]
runs = ([], ["--arch", "leaky"], ["--arch", "leaky", "--likelihood", "sharp-gaussian", "--hidden-dims", "64,32",
                                  "--conditional"])
sys.exit(max(cli.main(["gradcheck", "--threads", "1", "--seed", seed, *flags]) for flags in runs))
"""


def run(name, seed):
    """(exit status, the summary lines, the FAIL and crash lines) of one command at one seed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    flags = COMMANDS[name]
    command = ([sys.executable, "-c", README_EXAMPLES, str(seed)] if flags is None else
               [sys.executable, "-m", "numpyvae", "gradcheck", "--threads", "1", "--seed", str(seed), *flags])
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    summary = [line for line in lines if re.match(r"\d+ of \d+ gradients pass", line)]
    problems = [line.strip() for line in lines if "FAIL:" in line or "crashed" in line or "Traceback" in line]
    return done.returncode, summary, problems


def seeds(text):
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seeds, default=seeds("0-19"), help="a range, e.g. 0-19 (the default)")
    parser.add_argument("--only", help="comma-separated names of COMMANDS")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(COMMANDS)
    results, started = {}, time.perf_counter()
    for seed in args.seeds:
        for name in names:
            status, summary, problems = run(name, seed)
            results[name, seed] = (status, problems)
            print(f"{name}, seed {seed}: exit {status}; {' | '.join(summary)}", file=sys.stderr, flush=True)
            for line in problems:
                print(f"    {line}", file=sys.stderr, flush=True)
    print(f"# gradcheck at seeds {args.seeds[0]}-{args.seeds[-1]}: every command exits 0 on correct code\n")
    print(f"`python benchmarks/gradcheck_seeds.py`, {time.perf_counter() - started:.0f} s, one BLAS thread.\n")
    print("| command | flags | seeds that pass |\n|---|---|---|")
    for name in names:
        passed = [seed for seed in args.seeds if results[name, seed][0] == 0]
        flags = "README's examples" if COMMANDS[name] is None else " ".join(COMMANDS[name]) or "(none)"
        print(f"| {name} | `{flags}` | {len(passed)} of {len(args.seeds)} |")
    failed = [(name, seed) for (name, seed), (status, _) in results.items() if status]
    for name, seed in failed:
        print(f"\n{name}, seed {seed} failed:\n" + "\n".join(f"    {line}" for line in results[name, seed][1]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
