"""A small pool of threads that shares elementwise work on flat arrays out between CPU cores.

Why threads: a NumPy ufunc on a float array releases the GIL while its inner loop runs,
so two threads each calling `np.multiply(a[i:j], ..., out=...)` on their own slice really
do run on two cores. Python between the calls still takes turns on the GIL, so each call
should be long (tens of thousands of elements): with short calls the threads mostly wait
for each other's GIL hand-overs.

Why not multiprocessing: the arrays (parameters, Adam's moments) live in this process;
sharing them with other processes needs shared memory and a message per call, which costs
more than the ~0.5 ms of arithmetic a step gives each core.

How work is split: `run(fn, n, grain)` cuts range(n) into chunks of `grain` items (the last
one shorter), the same chunks on every call, and calls fn(worker, start, end) once per
chunk. Threads take the next untaken chunk when they are free, so a thread that the OS
has lent to another process holds nobody up: the caller then does the chunks itself.
Which thread did which chunk does not change the result of elementwise work: each
element sees the same operations in the same order, so results are bit-identical to a
serial loop over the same chunks.

The calling thread is worker 0; workers 1.. are helper threads started on first use.
They are daemons (they never keep the interpreter alive) and are started again in a
child after os.fork. With one chunk or one worker the call runs inline: no threads, no
overhead. An exception in any chunk stops the others from taking more and is re-raised
in the caller once every thread has stopped; Ctrl-C while the caller waits raises
KeyboardInterrupt at once. A call made while the pool is in use (from another thread,
or from inside fn) runs inline, so the pool can never wait on itself.

    pool = default_pool()
    pool.run(lambda worker, start, end: np.sqrt(a[start:end], out=a[start:end]), a.size, 65536)

Threads: the CPUs this process may use, or NUMPYVAE_NUM_THREADS where set (1 turns the
pool off). Measure before using it next to BLAS: OpenBLAS's idle threads keep spinning for
~0.1 s after each multithreaded matrix product, so these threads then find the other core
taken. On 2 cores Adam on this pool takes 0.71x as long alone, 1.09x in training with BLAS
on 2 threads, 0.77x with BLAS on 1 (benchmarks/results/adam.md); so Adam uses it only when
given it.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading


class ChunkPool:
    """`workers` threads (the caller plus workers - 1 helpers) sharing out the chunks of range(n)."""

    def __init__(self, workers):
        if workers < 1:
            raise ValueError(f"a pool needs at least one worker, not {workers!r}")
        self.workers = int(workers)
        self._inboxes = None                  # one queue per helper thread, made on first use
        self._pid = None                      # the process that started them (a forked child has none)
        self._busy = threading.Lock()         # held by the one run() that is using the helpers

    def __repr__(self):
        return f"ChunkPool(workers={self.workers})"

    def run(self, fn, n, grain):
        """Call fn(worker, start, end) for every chunk [start, end) of range(n) cut every `grain` items; wait for all.

        The chunks are the same on every call; which thread takes which chunk is not (a free thread
        takes the next one), so `worker` (0 = the caller, then 1, 2, ...) names the thread, for a
        scratch buffer per thread: no two chunks run at once with the same worker number.
        """
        chunks = -(-n // grain)                            # ceil(n / grain)
        if chunks == 1 or self.workers == 1 or not self._busy.acquire(blocking=False):
            for start in range(0, n, grain):               # one chunk, one core, or the helpers are in use
                fn(0, start, min(start + grain, n))
            return
        try:
            if self._pid != os.getpid():
                self._start_threads()
            helpers = min(self.workers, chunks) - 1
            task = (fn, n, grain, itertools.count(), queue.SimpleQueue())   # per call: a late reply can't
            for inbox in self._inboxes[:helpers]:                            # be mistaken for this call's
                inbox.put(task)
            error = _take_chunks(0, task)
            for _ in range(helpers):
                reply = task[-1].get()                     # interruptible: Ctrl-C raises here
                error = error or reply
            if error is not None:
                raise error
        finally:
            self._busy.release()

    def close(self):
        """Stop the helper threads (they are daemons, so this is optional); a later run() starts new ones."""
        with self._busy:
            if self._pid == os.getpid():
                for inbox in self._inboxes:
                    inbox.put(None)
            self._inboxes = self._pid = None

    def _start_threads(self):
        self._inboxes = [queue.SimpleQueue() for _ in range(self.workers - 1)]
        for i, inbox in enumerate(self._inboxes, start=1):
            threading.Thread(target=_serve, args=(i, inbox), name=f"numpyvae-pool-{i}", daemon=True).start()
        self._pid = os.getpid()


def _take_chunks(worker, task):
    """Run chunks of `task` until none are left; return None or the first exception (the rest are skipped)."""
    fn, n, grain, counter, _ = task
    try:
        while (start := next(counter) * grain) < n:       # next() on a count is atomic under the GIL
            fn(worker, start, min(start + grain, n))
    except BaseException as exc:                           # stop the other threads taking more chunks too
        for _ in range(-(-n // grain)):
            next(counter)
        return exc
    return None


def _serve(worker, inbox):
    """A helper thread's loop: take chunks of each task it is given, then reply None or the exception."""
    while (task := inbox.get()) is not None:              # None: close() asks the thread to end
        task[-1].put(_take_chunks(worker, task))
        del task                                           # keep nothing alive between calls


def usable_cpus():
    """CPUs this process may run on (its affinity mask where the OS has one), or NUMPYVAE_NUM_THREADS."""
    if os.environ.get("NUMPYVAE_NUM_THREADS"):
        return max(1, int(os.environ["NUMPYVAE_NUM_THREADS"]))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


SERIAL = ChunkPool(1)     # runs every chunk inline, in order, in the calling thread: no threads at all
_default = None


def default_pool():
    """The process's shared pool, made on first use with usable_cpus() workers."""
    global _default
    if _default is None:
        _default = ChunkPool(usable_cpus())
    return _default
