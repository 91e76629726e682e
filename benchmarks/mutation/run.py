"""The mutation run: how many deliberate bugs in numpyvae's math does the test suite catch?

    python benchmarks/mutation/run.py                      # every file in FILES, 2 workers (~30 min)
    python benchmarks/mutation/run.py --files optim.py     # one file
    python benchmarks/mutation/run.py --match _noise       # the mutants whose key contains _noise (or any of
                                                           # several texts)

Each mutant (mutants.py) is written into a private copy of the repository, never into the checkout
(--files takes names of numpyvae/'s own .py files, or paths that resolve to one, and refuses anything
else), and the tests that can see it run there, in a fresh process, until one fails (killed), the
time runs out (timeout) or all pass (survived). The copy's file is restored after every mutant, and
the copies are deleted at the end, Ctrl-C included.

Only a failed test is a kill. A timeout is its own fate: the bug made something loop or crawl, which
no test asserts, so a timed-out mutant counts as not killed and is reviewed like a survivor (listed
in equivalent.md with its reason, usually "only speed depends on it").

Test order: a mutant's tests run in an order of their own (below), not the suite's, so a test that
leaves global state behind (a registry entry, a patched module) could fail after another test for
that reason alone and look like a kill. A kill therefore counts only if it does not depend on what
ran before: when the failing test was not the first to run, it is run again alone on the same
mutant, and a test that passes alone marks the mutant "killed only after other tests", which is not a
kill (fix the leaking test; the suite must pass in any order).

Which tests: a first, unmutated run of the suite records which test executes which line of the
mutated files (a line tracer), how long each test takes, and which workspace buffers share a shape.
A mutant then runs the tests that execute its lines, fastest first, and after them the rest of those
tests' files (a module-scoped fixture runs lines on behalf of every test of its file). A mutant on a
line no test executes survives without a run. Tests that drive the `numpyvae` command in a
subprocess run code this tracer cannot see, so they do not count; neither do the slow tests that
need the real Fashion-MNIST files, nor the notebook, packaging and GPU-rehearsal tests.

Every mutant not killed (survived, timed out, not run) must be listed, with the reason it is harmless,
in equivalent.md. The run fails (exit 1) on one not listed there and on a listed mutant that a test
now kills, so the list stays reviewed. It writes benchmarks/results/mutation.md (the score and the
mutants not killed) and mutation.json (every mutant, its fate and the test that killed it).

Bad arguments (a file outside numpyvae/, --workers 0, a --timeout-factor that is not a positive
number, an --out that is a file, no git checkout to copy) are refused in one line before any work.

Rerun it whenever the math changes.
"""
from __future__ import annotations

import os

# One BLAS and OpenMP thread per worker, set before NumPy and PyTorch load: the workers already
# fill the cores, and threads spinning against each other would make the timeouts meaningless.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
os.environ["MPLBACKEND"] = "Agg"

import argparse
import ast
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutants as mutation                      # noqa: E402  (this folder's module, not an installed one)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "numpyvae"
RESULTS = ROOT / "benchmarks" / "results"
EQUIVALENT = Path(__file__).resolve().parent / "equivalent.md"

# The math, and what a wrong line of it would cost a reader; and the checker that proves it, with the
# description every model is built from.
FILES = ["layers.py", "conv.py", "im2col.py", "losses.py", "optim.py", "vae.py", "iwae.py", "evaluate.py", "gradcheck.py",
         "network.py", "objectives.py", "priors.py", "output_bias.py"]
MAX_WORKERS = 64          # each worker is a whole copy of the repository

# A mutant's fate (results[key]["status"]); only KILLED counts as caught.
KILLED, SURVIVED, TIMEOUT, NOT_RUN = "killed", "survived", "timeout", "not run by any test"
ORDER_DEPENDENT = "killed only after other tests"     # its failing test passes alone: no kill

# Code that is not the math, or that no CPU can run, by function: left unmutated, with the reason.
SKIP = {
    "_fused_gaussian_grad": "a CuPy ElementwiseKernel: runs only on a GPU (benchmarks/gpu_check.sh)",
    "_fused_adam": "a CuPy ElementwiseKernel: runs only on a GPU (benchmarks/gpu_check.sh)",
    "is_cupy": "backend dispatch: True only on a GPU",
    "test_dataset": "data loading for evaluate's command, not math",
    "binarize_fixed": "data loading for evaluate's command, not math",
    "evaluate": "evaluate's command-level driver: report formatting and progress",
}

# Test files that cannot see the mutated code in-process, or that need what a mutation run lacks: the
# notebook, the wheel, the GPU rehearsal and the benchmarks' smoke tests run their code in subprocesses;
# test_mutation_tool.py tests this tool, not numpyvae; test_docs.py builds the docs site (mkdocs, in a subprocess)
# and opens it in a browser.
EXCLUDED_TESTS = ["test_notebook.py", "test_packaging.py", "test_gpu_check.py", "test_gpu.py", "test_bench.py",
                  "test_mutation_tool.py", "test_docs.py"]
PYTEST_ARGS = ["-q", "-p", "no:cacheprovider", "-m", "not slow and not gpu", "--hypothesis-seed=0",
               "-o", "addopts=",
               # they check README and the docs against committed reports (the copy holds none)
               "--deselect", "tests/test_readme.py::test_the_mutation_score_is_the_committed_runs",
               "--deselect", "tests/test_readme.py::test_the_checkers_mutation_numbers_are_its_committed_runs",
               "--deselect", "tests/test_readme.py::test_the_registries_mutation_numbers_are_their_committed_runs",
               "--deselect", "tests/test_likelihood_table.py::test_readme_and_chapter_7_state_the_committed_tables_numbers"]


def pretend_to_be_a_test_process():
    """The modules every test process loads, loaded once here so each forked worker starts with them."""
    import matplotlib                            # noqa: F401
    import numpy                                 # noqa: F401
    import pytest                                # noqa: F401
    try:
        import hypothesis                        # noqa: F401
        import torch                             # noqa: F401  (imported only: no op has run, fork is safe)
    except ImportError:
        pass


# -- the copies ---------------------------------------------------------------------------------

def tracked_files():
    """The repository's tracked files, by `git ls-files`; ValueError when this is no git checkout (an sdist)."""
    try:
        done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    except OSError as error:
        raise ValueError(f"cannot run git ({error}): the run copies a git checkout's tracked files") from None
    if done.returncode != 0:
        raise ValueError(f"{ROOT} is not a git checkout (git ls-files: {done.stderr.decode().strip()[:200]}); "
                         "the run copies its tracked files")
    return [name for name in done.stdout.decode().split("\0") if name]


def make_copy(target, files=None):
    """The tracked files of the repository, except results and the docs site, copied to `target`: of docs/ only
    its Markdown pages, which tests read (test_readme runs the worked examples in docs/extending.md)."""
    for name in files if files is not None else tracked_files():
        if name.startswith(("benchmarks/results/", ".git")) or (name.startswith("docs/") and not name.endswith(".md")):
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, target / name)
    return target


# -- one pytest process, forked ---------------------------------------------------------------

def fork_pytest(copy, args, log, plugin_factory):
    """Fork a child that runs pytest on `args` inside `copy`; returns its pid.

    The child imports numpyvae from the copy (never imported by this process, so every mutant is
    imported fresh) and writes no bytecode: a cached .pyc of an earlier mutant of the same size and
    second could otherwise stand in for the file.
    """
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        os.setpgid(0, 0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(copy)
        sys.path.insert(0, str(copy))
        sys.dont_write_bytecode = True
        # Ctrl-C as a test process has it, even when this run was started in the background with
        # SIGINT ignored (the tests of Ctrl-C send it to themselves and to their subprocesses)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        import pytest
        code = int(pytest.main(PYTEST_ARGS + args, plugins=[plugin_factory()]))
    except BaseException:                        # noqa: BLE001  the child must never return into the parent's loop
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class FirstFailure:
    """Pytest plugin: write the id of the first failing test (or collection error) to a file."""

    def __init__(self, path):
        self.path = path

    def _record(self, report):
        if report.failed and not self.path.exists():
            self.path.write_text(report.nodeid or "collection")

    pytest_runtest_logreport = _record
    pytest_collectreport = _record


class Timer:
    """Pytest plugin for the unmutated run: each test's seconds, and the order the tests ran in."""

    def __init__(self, out):
        self.out, self.seconds, self.order = out, {}, []

    def pytest_runtest_protocol(self, item, nextitem):
        self.order.append(item.nodeid)
        self.started = time.perf_counter()

    def pytest_runtest_logfinish(self, nodeid, location):
        self.seconds[nodeid] = time.perf_counter() - self.started

    def pytest_sessionfinish(self, session, exitstatus):
        self.out.write_text(json.dumps({"seconds": self.seconds, "order": self.order}))


class LineRecorder:
    """Pytest plugin for a second unmutated run: which test runs which line of the target files, and
    the (shape, dtype) of every workspace buffer name.

    Its outcome does not count: the tracer itself allocates and takes time, which the tests that
    check a step allocates nothing, or that time a step, can see.
    """

    def __init__(self, copy, files, out):
        self.targets = {str((copy / PACKAGE / name).resolve()): name for name in files}
        self.out = out
        self.lines = defaultdict(set)            # (file, line) -> test ids
        self.buffers = defaultdict(set)          # name -> {(shape, dtype)}
        self.test = None

    def _local(self, frame, event, arg):
        if event == "line" and self.test is not None:
            self.lines[(self.targets[frame.f_code.co_filename], frame.f_lineno)].add(self.test)
        return self._local

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename in self.targets else None

    def pytest_sessionstart(self, session):
        import threading
        from numpyvae import layers
        get, buffers = layers.Workspace.get, self.buffers

        def recording_get(ws, name, shape, dtype=None):
            buffers[name].add((tuple(int(n) for n in shape), str(np_dtype(dtype or ws.dtype))))
            return get(ws, name, shape, dtype)
        layers.Workspace.get = recording_get
        sys.settrace(self._global)
        threading.settrace(self._global)         # parallel.ChunkPool's threads run Adam's chunks

    def pytest_runtest_protocol(self, item, nextitem):
        self.test = item.nodeid

    def pytest_runtest_logfinish(self, nodeid, location):
        self.test = None

    def pytest_sessionfinish(self, session, exitstatus):
        sys.settrace(None)
        self.out.write_text(json.dumps({
            "lines": [[file, line, sorted(tests)] for (file, line), tests in self.lines.items()],
            "buffers": {name: sorted(map(list, seen)) for name, seen in self.buffers.items()}}))


def np_dtype(dtype):
    import numpy
    return numpy.dtype(dtype)


def wait(pid, deadline=None):
    """Wait for a child; kill its process group at the deadline, or when this process is interrupted.
    Returns its exit code or 'timeout'."""
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.02)
    except BaseException:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "timeout"


# -- the run ------------------------------------------------------------------------------------

def test_files(copy):
    return sorted(str(p.relative_to(copy)) for p in (copy / "tests").glob("test_*.py")
                  if p.name not in EXCLUDED_TESTS)


def baseline(copy, files, work):
    """The unmutated suite, timed, then traced. Exits if it fails: a mutant cannot be judged against a
    red suite. Returns (test ids by (file, line), seconds by test id, test ids in run order, buffers)."""
    timed, traced, log = work / "timed.json", work / "traced.json", work / "baseline.log"
    started = time.perf_counter()
    code = wait(fork_pytest(copy, test_files(copy), log, lambda: Timer(timed)))
    if code != 0 or not timed.exists():
        sys.exit(f"the unmutated suite fails (pytest exit {code}):\n" + log.read_text()[-3000:])
    times = json.loads(timed.read_text())
    print(f"baseline: {len(times['order'])} tests pass in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    wait(fork_pytest(copy, test_files(copy), log, lambda: LineRecorder(copy, files, traced)))
    if not traced.exists():
        sys.exit("the traced run of the suite wrote no record:\n" + log.read_text()[-3000:])
    lines = json.loads(traced.read_text())
    print(f"baseline: traced in {time.perf_counter() - started:.0f} s", flush=True)
    covered = defaultdict(set)
    for file, line, tests in lines["lines"]:
        covered[(file, line)].update(tests)
    return covered, times["seconds"], times["order"], lines["buffers"]


def tests_for(mutant, covered, seconds, order):
    """The test ids that can see the mutant: those running its lines, fastest first, then the rest of
    their files in file order. Empty when no test runs them."""
    def running(span):
        first, last = span
        return set().union(*(covered.get((mutant.file, line), set()) for line in range(first, last + 1)))
    direct = running(mutant.span)
    if not direct and mutant.fallback:
        direct = running(mutant.fallback)
    files = {test.split("::")[0] for test in direct}
    rest = [test for test in order if test.split("::")[0] in files and test not in direct]
    return sorted(direct, key=lambda test: (seconds.get(test, 0), test)) + rest


def mutated_path(copy, package, file):
    """Where a mutant of `file` is written: inside `copy`, always. A name that would lead out of it (an
    absolute path, ..) is a bug of the caller, and must never write into the checkout."""
    path = copy / package / file
    if not path.resolve().is_relative_to((copy / package).resolve()):
        raise ValueError(f"{file!r} is not a file of the copy's {package}/: refusing to write outside the copy")
    return path


def run_mutants(todo, copies, covered, seconds, order, work, timeout_factor, timeout_floor=20.0, package=PACKAGE,
                progress_every=25):
    """Run every mutant on the first free copy; returns {key: result}. Each copy's file is restored
    after its mutant, whatever happens.

    A mutant's time limit is timeout_factor times its tests' unmutated seconds plus timeout_floor,
    for the fork, pytest's start and the collection of the test files. A failure of any test but the
    first is confirmed by running that test alone on the same mutant (see the module docstring).
    """
    originals = {(copy, m.file): mutated_path(copy, package, m.file).read_text() for copy in copies for m in todo}
    results, free, running = {}, list(copies), {}
    queue = list(todo)
    started = time.monotonic()

    def launch(copy, mutant, tests, result=None):
        """Fork pytest on `tests` in `copy` (the mutant already written there); `result` set: a confirmation."""
        failure = work / f"{copy.name}.failure"
        failure.unlink(missing_ok=True)
        budget = timeout_factor * sum(seconds.get(t, 0) for t in tests) + timeout_floor
        pid = fork_pytest(copy, ["-x"] + tests, work / f"{copy.name}.log", lambda f=failure: FirstFailure(f))
        running[pid] = (copy, mutant, tests, result, time.monotonic(), time.monotonic() + budget)

    def finish(copy, mutant, result):
        mutated_path(copy, package, mutant.file).write_text(originals[(copy, mutant.file)])
        free.append(copy)
        results[mutant.key] = result
        if len(results) % progress_every == 0:
            rate = (time.monotonic() - started) / len(results)
            print(f"  {len(results)}/{len(todo)} mutants, {rate:.1f} s each", flush=True)

    try:
        while queue or running:
            while queue and free:
                mutant = queue.pop(0)
                tests = tests_for(mutant, covered, seconds, order)
                if not tests:
                    results[mutant.key] = {"status": NOT_RUN, "tests": 0, "seconds": 0.0}
                    continue
                copy = free.pop()
                mutated_path(copy, package, mutant.file).write_text(mutant.source)
                launch(copy, mutant, tests)
            for pid in list(running):
                copy, mutant, tests, confirming, begun, deadline = running[pid]
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done and time.monotonic() <= deadline:
                    continue
                if done:
                    code = os.waitstatus_to_exitcode(status)
                else:
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    code = TIMEOUT
                del running[pid]
                failure = work / f"{copy.name}.failure"
                failed = failure.read_text() if failure.exists() else "?"
                if confirming is not None:           # the failing test, run again alone
                    confirming["seconds"] = round(confirming["seconds"] + time.monotonic() - begun, 2)
                    if code == 0:
                        confirming["status"] = ORDER_DEPENDENT
                    elif code == TIMEOUT:
                        confirming["status"] = TIMEOUT
                    confirming["alone"] = "passes" if code == 0 else "fails"
                    finish(copy, mutant, confirming)
                    continue
                result = {"tests": len(tests), "seconds": round(time.monotonic() - begun, 2)}
                if code == TIMEOUT:
                    result["status"] = TIMEOUT
                elif code == 0:
                    result["status"] = SURVIVED
                elif code in (1, 2):             # tests failed, or collection failed (an import broke)
                    result["status"], result["killed_by"] = KILLED, failed
                    if failed in tests and failed != tests[0]:     # other tests ran first: is it their doing?
                        launch(copy, mutant, [failed], result)
                        continue
                else:
                    result["status"] = f"error (pytest exit {code})"
                    result["log"] = (work / f"{copy.name}.log").read_text()[-2000:]
                finish(copy, mutant, result)
            time.sleep(0.02)
    finally:
        for pid in running:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for (copy, file), text in originals.items():
            mutated_path(copy, package, file).write_text(text)
    return results


# -- the reviewed list ----------------------------------------------------------------------------

def read_equivalent(path=EQUIVALENT):
    """equivalent.md: '## reason' headings, each over a list of '- `key`' lines. Returns {key: reason}."""
    reasons, reason = {}, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("## "):
            reason = line[3:].strip()
        elif line.startswith("- `"):
            if reason is None:
                sys.exit(f"{path}:{number}: a mutant listed before any '## reason' heading")
            reasons[line[3:line.rindex("`")]] = reason
    return reasons


# A reason in equivalent.md that starts with one of these marks a survivor that is not strictly equivalent.
KINDS = {"Rounding": "compute the same mathematics with different rounding",
         "Another draw": "give an estimate a different, equally valid draw of its noise",
         "GPU only": "are in code only a GPU runs"}


def report(all_mutants, results, equivalent, files, seconds_total, partial):
    """(markdown, unexplained mutants, stale keys of the reviewed list).

    Only a failed test kills; every other fate (survived, timeout, not run, killed only after other
    tests) is reviewed: listed in equivalent.md with its reason, or unexplained.
    """
    def status(m):
        return results[m.key]["status"]
    not_killed = [m for m in all_mutants if status(m) != KILLED]
    timed_out = [m for m in not_killed if status(m) == TIMEOUT]
    unexplained = [m for m in not_killed if m.key not in equivalent]
    reviewed = [m for m in not_killed if m.key in equivalent]
    kind = {m.key: next((k for k in KINDS if equivalent[m.key].startswith(k)), "equivalent") for m in reviewed}
    count = {k: sum(v == k for v in kind.values()) for k in ["equivalent", *KINDS]}
    run_keys = {m.key for m in all_mutants}
    stale = [] if partial else [key for key in equivalent if key not in run_keys]
    stale += [m.key for m in all_mutants if m.key in equivalent and status(m) == KILLED]
    killed = len(all_mutants) - len(not_killed)
    kinds = [f"{count['equivalent']} are equivalent (the program computes the same thing)"]
    kinds += [f"{count[k]} {text}" for k, text in KINDS.items() if count[k]]
    fates = "survive" if not timed_out else (f"survive or time out ({len(timed_out)} only made the tests too slow "
                                             f"to finish, which no test counts as failing)")
    score = (f"The suite kills **{killed} of {len(all_mutants)}** mutants of {', '.join(files)}. "
             f"The other {len(not_killed)} {fates}, each listed with its reason in "
             f"`benchmarks/mutation/equivalent.md`: "
             + (", ".join(kinds[:-1]) + " and " + kinds[-1] if len(kinds) > 1 else kinds[0])
             + (f"; **{len(unexplained)} are not yet explained**." if unexplained else "."))
    lines = ["# Mutation run", "", score, "",
             f"Run in {seconds_total / 60:.0f} minutes by `python benchmarks/mutation/run.py`. What is mutated and "
             f"what is not: `benchmarks/mutation/mutants.py` and `run.py`. Only a failed test is a kill; a kill whose "
             f"test passes when run alone is not one (\"{ORDER_DEPENDENT}\").", "",
             "| file | mutants | killed | timed out | reviewed (not killed) | unexplained |",
             "|---|---:|---:|---:|---:|---:|"]
    for file in files:
        mine = [m for m in all_mutants if m.file == file]
        fate = [status(m) for m in mine]
        lines.append(f"| {file} | {len(mine)} | {fate.count(KILLED)} | {fate.count(TIMEOUT)} | "
                     f"{sum(m in reviewed for m in mine)} | {sum(m in unexplained for m in mine)} |")
    lines += ["", "| operator | mutants | killed |", "|---|---:|---:|"]
    for op in sorted({m.operator for m in all_mutants}):
        mine = [m for m in all_mutants if m.operator == op]
        lines.append(f"| {op} | {len(mine)} | {sum(status(m) == KILLED for m in mine)} |")
    if unexplained:
        lines += ["", "## Not killed and not yet explained", ""]
        lines += [f"- line {m.line}: `{m.key}` ({status(m)})" for m in unexplained]
    if stale:
        lines += ["", "## Listed in equivalent.md but now killed (or no longer made)", ""]
        lines += [f"- `{key}`" for key in stale]
    lines += ["", "## Reviewed, by reason", ""]
    by_reason = defaultdict(list)
    for m in reviewed:
        by_reason[equivalent[m.key]].append(m)
    for reason, mine in by_reason.items():
        lines += [f"- {reason}: " + ", ".join(f"{m.file}:{m.line}" + (" (timeout)" if status(m) == TIMEOUT else "")
                                             for m in mine)]
    return "\n".join(lines) + "\n", unexplained, stale


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def workers(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_WORKERS} (each is a copy of the repository), got {text}")
    return value


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def package_file(name, package_dir=None):
    """`name` as the name of a .py file directly in the package (optim.py), from that name or any path that
    resolves to it; ValueError for anything else, so that no mutant is ever written outside a copy."""
    package_dir = (package_dir or ROOT / PACKAGE).resolve()
    given = Path(name)
    candidates = [given] if given.is_absolute() else [package_dir / given, Path.cwd() / given]
    for candidate in candidates:
        path = candidate.resolve()
        if path.parent == package_dir and path.suffix == ".py" and path.is_file():
            try:
                ast.parse(path.read_text())
            except (SyntaxError, UnicodeDecodeError, ValueError) as error:
                raise ValueError(f"{name} is not a Python file that parses ({error})") from None
            return path.name
    raise ValueError(f"{name} is not a .py file of {package_dir} (give names like optim.py)")


def check_out(out):
    """--out must be a directory, or a path where one can be made: refused before the run, not after it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory for mutation.md and mutation.json")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ValueError(f"--out {out}: {existing} is not a directory this run can write in")


def main(argv=None):
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=FILES,
                        help="files of numpyvae/ to mutate (names, or paths to them)")
    parser.add_argument("--match", nargs="+", default=[""], metavar="TEXT",
                        help="only the mutants whose key contains one of these texts")
    parser.add_argument("--workers", type=workers, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--timeout-factor", type=positive_number, default=4.0,
                        help="a mutant's time limit: this many times its tests' unmutated seconds, plus 20 s")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where mutation.md and .json go (default: {RESULTS.relative_to(ROOT)} for a whole run, "
                             f"nowhere for a part of one)")
    args = parser.parse_args(argv)
    try:
        args.files = list(dict.fromkeys(package_file(name) for name in args.files))
        if args.out is not None:
            check_out(args.out)
        tracked = None if args.list else tracked_files()
    except ValueError as error:
        parser.error(str(error))

    partial = args.match != [""] or sorted(args.files) != sorted(FILES)

    def chosen(mutant):
        return any(text in mutant.key for text in args.match)
    equivalent = read_equivalent(EQUIVALENT)
    sources = {file: (ROOT / PACKAGE / file).read_text() for file in args.files}
    if args.list:
        try:
            for file, source in sources.items():
                for m in mutation.mutants(source, file, SKIP):
                    if chosen(m):
                        print(f"{m.line:5d}  {m.key}")
        except BrokenPipeError:                  # `--list | head`: the reader has all it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # (Python's documented way out)
        return 0

    started = time.monotonic()
    # SIGTERM unwinds like Ctrl-C, so the `finally` below stops the workers and removes the copies
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    pretend_to_be_a_test_process()
    work = Path(tempfile.mkdtemp(prefix="numpyvae-mutation-"))
    try:
        copies = [make_copy(work / f"copy{i}", tracked) for i in range(args.workers)]
        covered, seconds, order, buffers = baseline(copies[0], args.files, work)
        requests = {name: {tuple(map(str, s)) for s in seen} for name, seen in buffers.items()}
        all_mutants = []
        for file, source in sources.items():
            partners = mutation.buffer_partners(mutation.buffer_names(source), requests)
            all_mutants += [m for m in mutation.mutants(source, file, SKIP, partners) if chosen(m)]
        print(f"{len(all_mutants)} mutants of {', '.join(args.files)}, {args.workers} at a time", flush=True)
        results = run_mutants(all_mutants, copies, covered, seconds, order, work, args.timeout_factor,
                              package=PACKAGE)
    finally:
        shutil.rmtree(work)                      # only the folder this run made
    text, unexplained, stale = report(all_mutants, results, equivalent, args.files,
                                      time.monotonic() - started, partial)
    print(text)
    out = args.out or (None if partial else RESULTS)
    if out is not None:
        args.out = out
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mutation.md").write_text(text)
        (args.out / "mutation.json").write_text(json.dumps(
            [dict(key=m.key, file=m.file, line=m.line, operator=m.operator, before=m.before, after=m.after,
                  **results[m.key]) for m in all_mutants], indent=1) + "\n")
        print(f"wrote {args.out / 'mutation.md'} and mutation.json")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
