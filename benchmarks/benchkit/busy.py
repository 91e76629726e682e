"""numpyvae's epoch on a busy machine: BLAS thread settings under a competing load the benchmark makes itself.

    python benchmarks/bench_backends.py --busy-load      # writes benchmarks/results/busy_load.{md,json}

A competing load is one busy-looping process per core it takes ("1 busy core", "2 busy cores"...),
started before and stopped after each block of measurements; they are always stopped, and each
also stops by itself once this process is gone. In every round, every load condition (none
first) runs every thread setting once, the settings' order rotated round by round, so the three
are compared within the round, under the same load from the rest of the machine:

    fixed N   OpenBLAS's default: one thread per usable CPU
    1 thread  the floor a spinning-free BLAS gets under the same load
    auto      numpyvae's default (numpyvae/threads.py): follows the load

A fixed N under a competing load can take minutes per epoch; such a run stops after
max_seconds and its epoch time is extrapolated from the steps it made (marked in the table).
"""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time

from benchkit.config import BUSY_TARGET_OVER_ONE_THREAD, BUSY_TARGET_OVER_QUIET

# Busy-loops until its parent (the benchmark) is gone, so a killed benchmark leaves no load behind.
BUSY_LOOP = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(10 ** 6): pass\n"


@contextlib.contextmanager
def busy_cores(count, started=None):
    """`count` busy-looping processes for the duration of the block; always stopped after it.

    started: a list that gets each process's id (the test checks that none outlives the benchmark).
    """
    processes = []
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))   # run the finally below
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP]))
            if started is not None:
                started.append(processes[-1].pid)
        time.sleep(0.5 if count else 0)          # let them take their cores
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()
        signal.signal(signal.SIGTERM, previous)


def settings_to_compare(cpus):
    return [cpus, 1, "auto"]


def run_busy_load(base, rounds, loads, epochs, max_seconds, spawn, log):
    """{condition: {setting: [worker results]}}, measured round by round, settings interleaved."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = settings_to_compare(cpus)
    results = {str(load): {str(s): [] for s in settings} for load in loads}
    pids = []
    for round_ in range(rounds):
        order = settings[round_ % len(settings):] + settings[:round_ % len(settings)]
        for load in loads:
            with busy_cores(load, pids):
                for setting in order:
                    spec = dict(base, backend="numpy", task="train", epochs=epochs, noise_seed=round_,
                                blas_threads=setting, max_seconds=max_seconds, busy_cores=load)
                    started = time.perf_counter()
                    result = spawn(spec)
                    results[str(load)][str(setting)].append(result)
                    log(f"  busy cores {load}, threads {setting}, round {round_ + 1}/{rounds}: "
                        f"{statistics.median(result['epoch_seconds']):.2f} s/epoch"
                        f"{' (extrapolated)' if result.get('extrapolated') else ''}, "
                        f"others used {result.get('others_cores', float('nan')):.2f} cores, "
                        f"{time.perf_counter() - started:.1f} s in all")
    return {"cpus": cpus, "settings": [str(s) for s in settings], "loads": [str(x) for x in loads],
            "rounds": rounds, "epochs": epochs, "max_seconds": max_seconds, "results": results, "busy_pids": pids}


def measure_bookkeeping(ticks=200_000, reads=2000):
    """What "auto" costs on a quiet machine, where it keeps every thread: microseconds per tick and per look."""
    import timeit
    from numpyvae import threads
    cpus = set(threads.usable_cpus())
    look = timeit.timeit(lambda: threads.busy_seconds(cpus), number=reads) / reads
    with threads.Threads("auto") as auto:
        started = time.perf_counter()
        for _ in range(ticks):
            auto.tick()
        tick = (time.perf_counter() - started) / ticks
    return {"tick_microseconds": tick * 1e6, "look_microseconds": look * 1e6,
            "check_seconds": threads.CHECK_SECONDS, "loadavg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


def epoch_time(runs):
    return statistics.median(s for run in runs for s in run["epoch_seconds"])


def round_ratios(report, load, setting, against_load, against_setting):
    """The ratio epoch(load, setting) / epoch(against_load, against_setting) in each round; their median."""
    ours, theirs = report["results"][load][setting], report["results"][against_load][against_setting]
    ratios = [statistics.median(a["epoch_seconds"]) / statistics.median(b["epoch_seconds"])
              for a, b in zip(ours, theirs)]
    return statistics.median(ratios), min(ratios), max(ratios)


def markdown(report, machine):
    """The busy-load table and the targets."""
    cpus, settings, loads = report["cpus"], report["settings"], report["loads"]
    loadavg = [x for by_setting in report["results"].values() for runs in by_setting.values() for run in runs
               for x in (run["loadavg_before"][0], run["loadavg_after"][0])]
    names = {str(cpus): f"fixed {cpus} (OpenBLAS's default)", "1": "fixed 1", "auto": "auto (numpyvae's default)"}
    lines = [
        f"numpyvae's epoch (784-400-20, batch 128, {report['results'][loads[0]][settings[0]][0]['num_images']:,} "
        f"images, NumPy float32) beside busy-looping processes that the benchmark starts, one per core taken. "
        f"{machine['cpu']}, {cpus} usable CPUs; NumPy {machine['numpy']} ({machine['blas']}, kernel "
        f"{machine.get('blas_kernel', '?')}; forced by the environment: {machine.get('blas_environment', '?')}). "
        f"{report['rounds']} rounds x {report['epochs']} epoch(s) per setting; in each round every load runs every "
        f"setting, interleaved. Other work shared the machine too: 1-minute load average {min(loadavg):.1f} to "
        f"{max(loadavg):.1f} (the benchmark's own threads and busy loops included).",
        "",
        "| competing busy cores | BLAS threads | s/epoch, median (min-max) | other processes used (cores, median) "
        "| threads auto chose (steps at each count) |",
        "|---|---|---|---|---|",
    ]
    for load in loads:
        for setting in settings:
            runs = report["results"][load][setting]
            epochs = [s for run in runs for s in run["epoch_seconds"]]
            extrapolated = any(run.get("extrapolated") for run in runs)
            chosen = ""
            if setting == "auto":
                steps = {}
                for run in runs:
                    for count, n in run.get("steps_at_threads", {}).items():
                        steps[count] = steps.get(count, 0) + n
                chosen = ", ".join(f"{count}: {n}" for count, n in sorted(steps.items()))
            others = statistics.median(run["others_cores"] for run in runs if run.get("others_cores") is not None)
            lines.append(f"| {load} | {names.get(setting, setting)} | {epoch_time(runs):.2f} ({min(epochs):.2f}-"
                         f"{max(epochs):.2f}){' extrapolated*' if extrapolated else ''} | {others:.2f} | {chosen} |")
    quiet_others = statistics.median(run["others_cores"] for runs in report["results"][loads[0]].values()
                                     for run in runs if run.get("others_cores") is not None)
    if loads[0] == "0" and quiet_others > 0.3:
        lines += ["", f"**The machine was not quiet**: with no busy loop of ours, other processes still used "
                      f"{quiet_others:.2f} cores (median), so the \"0\" rows are themselves a loaded machine, "
                      "and the ratios below compare loads on top of that one."]
    lines += ["", "*extrapolated: the run stopped after "
                  f"{report['max_seconds']:g} s and its epoch time is its seconds per step times the steps of an epoch.",
              "\"other processes used\" counts every process but the measured one on its CPUs (/proc/stat), "
              "the busy loops included."]
    if report.get("quick"):
        lines += ["", "**Smoke test (--quick)**: too few steps to judge the targets; run without --quick to measure."]
    elif "1" in loads and "0" in loads:
        over_quiet = round_ratios(report, "1", "auto", "0", "auto")
        over_one = round_ratios(report, "1", "auto", "1", "1")
        quiet_auto = round_ratios(report, "0", "auto", "0", str(cpus))
        lines += ["", "Targets, as ratios within each round (median, min-max over rounds):", "",
                  f"- under one competing busy core, auto's epoch / its quiet epoch <= {BUSY_TARGET_OVER_QUIET}: "
                  f"{over_quiet[0]:.2f} ({over_quiet[1]:.2f}-{over_quiet[2]:.2f}), "
                  f"{'met' if over_quiet[0] <= BUSY_TARGET_OVER_QUIET else 'NOT met'}",
                  f"- under one competing busy core, auto's epoch / one thread's <= {BUSY_TARGET_OVER_ONE_THREAD}: "
                  f"{over_one[0]:.2f} ({over_one[1]:.2f}-{over_one[2]:.2f}), "
                  f"{'met' if over_one[0] <= BUSY_TARGET_OVER_ONE_THREAD else 'NOT met'}",
                  f"- with no competing load, auto's epoch / fixed {cpus} threads' (quiet speed must not drop, "
                  f"so <= 1 within noise): {quiet_auto[0]:.2f} ({quiet_auto[1]:.2f}-{quiet_auto[2]:.2f})"]
    cost = report.get("bookkeeping")
    if cost:
        share = cost["look_microseconds"] * 1e-6 / cost["check_seconds"]
        lines += ["", f"What auto costs where it keeps every thread: a tick after each training step takes "
                      f"{cost['tick_microseconds']:.2f} µs on average, and a look at /proc/stat "
                      f"({cost['look_microseconds']:.0f} µs) every {cost['check_seconds']:g} s takes {share:.2%} of "
                      f"the time: against a step of 2 to 3 ms, {share + cost['tick_microseconds'] / 2000:.2%} at most "
                      f"(measured {cost['date']}, load average {cost['loadavg'][0]:.1f})."]
    return "\n".join(lines) + "\n"
