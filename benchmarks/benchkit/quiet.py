"""How much CPU the rest of the machine used while we timed something, to keep only the quiet rounds.

On a shared machine a round of timings means something only if nothing else ran meanwhile.
/proc/stat counts every process's CPU time (and steal: time the hypervisor gave to other guests),
in clock ticks of 10 ms; getrusage counts ours, to the microsecond. Their difference over a round
of a few hundred milliseconds says how many cores others used. Linux only; elsewhere None.
"""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path


def machine_busy_seconds():
    """CPU seconds all processes have used since boot, steal included, or None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds():
    """CPU seconds this process (all its threads) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OthersMeter:
    """`with OthersMeter() as m: ...` then m.cores: the cores the rest of the machine used meanwhile (None: unknown)."""

    def __enter__(self):
        self.cores = None
        self._busy, self._own, self._wall = machine_busy_seconds(), own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = machine_busy_seconds()
        if busy is not None and self._busy is not None:
            others = (busy - self._busy) - (own_seconds() - self._own)
            self.cores = max(0.0, others / (time.perf_counter() - self._wall))
        return False
