"""BLAS threads that hold up on a busy machine: a fixed number, or one that follows the load.

OpenBLAS splits each matrix product over its threads, and the threads wait for each other
by spinning. On a quiet machine that is fastest. When another process takes a core, the
thread that lost it holds up the rest: measured on 2 cores beside one busy-looping process,
an epoch took 150 s with 2 threads and 10 s with 1 (benchmarks/results/busy_load.md).

    Threads(2)        always 2 threads (at most the CPUs this process may use)
    Threads("auto")   as many as the cores the rest of the machine leaves free (the command's default)
    Threads(None)     leave the BLAS library as it is

"auto" looks, every CHECK_SECONDS, at how much CPU the other processes used on this process's
CPUs (/proc/stat, minus our own CPU time), and keeps one thread per core that
others left at least FREE_SHARE free, never fewer than one. Until its first look it goes by
the load average (first_guess). It costs one read of /proc/stat
per check. Without /proc/stat (not Linux) it keeps every usable CPU's thread.

A matrix product split over 2 threads can round differently from one on 1 thread (the last
bits of float32), so runs with different thread counts differ in their last digits. Under
"auto" the count follows the load, so a run is bit-for-bit repeatable only with a fixed count.

The threads are set through threadpoolctl (a runtime dependency: a small pure-Python package
of scikit-learn's), which finds the BLAS library NumPy loaded (OpenBLAS, MKL, BLIS...) whatever
its file is called, and calls that library's own set-threads function.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from time import perf_counter, process_time

CHECK_SECONDS = 0.25      # how often "auto" looks at the load; /proc/stat counts in 10 ms ticks
FREE_SHARE = 0.7          # a core counts as free when others used less than 30% of it
AUTO = "auto"


def usable_cpus():
    """The CPUs this process may run on (taskset, cgroups' cpusets), as a sorted list."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return list(range(os.cpu_count() or 1))


def parse_threads(text):
    """"auto" or a positive integer, as --threads takes it; ValueError otherwise."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected 'auto' or a number of threads, got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {text}")
    return value


def busy_seconds(cpus):
    """CPU seconds every process has used on `cpus` since boot (steal included), or None without /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in rest.split()[:8])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def own_seconds():
    """CPU seconds this process (all its threads, user and system) has used."""
    return process_time()


def threads_for(cpus, others):
    """Threads to run when others used `others` cores of `cpus` usable ones: one per free core, at least 1."""
    return max(1, min(cpus, int(cpus - others + (1 - FREE_SHARE))))


def first_guess(most):
    """Threads until "auto"'s first look: from the load average, the processes that wanted a CPU lately.

    A step at two threads beside a busy core can take a second, so a crowded machine starts at one
    thread; if the guess is wrong (the load average also counts this process's own recent work),
    the first look, CHECK_SECONDS later, corrects it.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):        # not on this system
        return most
    return threads_for(most, load)


class Threads:
    """`with Threads(setting) as threads:` sets BLAS threads; call threads.tick() once per step.

    setting: an int (fixed), "auto" (follow the load) or None (leave them). On exit the
    BLAS library gets back the threads it had. `count` is the number in use (None: untouched),
    `steps` the ticks so far, `history` the (step, count) pairs from the first count on.
    """

    def __init__(self, setting):
        if setting not in (None, AUTO) and not (isinstance(setting, int) and setting >= 1):
            raise ValueError(f"threads must be 'auto', a positive integer or None, not {setting!r}")
        self.setting = setting
        self.count = None
        self.history = []
        self._original = None
        self.steps = 0

    def __enter__(self):
        if self.setting is None:
            return self
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:              # an install made before numpyvae needed it: run, but say so
            warnings.warn("threadpoolctl is not installed, so BLAS threads are left as they are "
                          "(pip install threadpoolctl, or reinstall numpyvae)")
            return self
        self._controller = ThreadpoolController().select(user_api="blas")
        if not self._controller.lib_controllers:       # no BLAS found: nothing to set
            return self
        self.cpus = usable_cpus()
        most = min(len(self.cpus), max(lib.num_threads for lib in self._controller.lib_controllers))
        self.most = most if self.setting == AUTO else min(self.setting, len(self.cpus))
        self.count = self.most
        if self.setting == AUTO:
            self.count = first_guess(self.most)
            self._mark()
        self._original = self._controller.limit(limits=self.count)      # remembers the old limits
        self.history.append((0, self.count))
        return self

    def __exit__(self, *exc_info):
        if self._original is not None:
            self._original.restore_original_limits()
        return False

    def _mark(self):
        self._since = (perf_counter(), busy_seconds(self.cpus), own_seconds())

    def tick(self):
        """After each step: under "auto", every CHECK_SECONDS, set the count the load leaves room for."""
        self.steps += 1
        if self.setting != AUTO or self.count is None:
            return
        wall, busy, own = self._since
        elapsed = perf_counter() - wall
        if elapsed < CHECK_SECONDS or busy is None:
            return
        others = max(0.0, (busy_seconds(self.cpus) - busy) - (own_seconds() - own)) / elapsed
        self._mark()
        wanted = threads_for(self.most, others)
        if wanted != self.count:
            self._controller.limit(limits=wanted)
            self.count = wanted
            self.history.append((self.steps, wanted))
