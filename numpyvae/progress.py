"""Progress of a long command (evaluate, gradcheck): a bar on a terminal, plain lines otherwise.

Training has its own bar (train.py); this is the same idea for the commands that otherwise sat
silent for a minute or more. On a terminal, a tqdm bar per stage redraws itself on stderr;
without one (a log file, a batch job), as training does, a plain line every PLAIN_SECONDS, and
one when a stage that printed lines ends (a short evaluation prints nothing).
"""
from __future__ import annotations

import sys
import time

PLAIN_SECONDS = 30


class Progress:
    """progress(stage, done, total) after each piece of work; close() at the end.

    stage: what is being done (a new stage ends the previous one); done, total: in any unit.
    on_tick: called with no arguments at every report (the command's Threads.tick, so "auto"
    BLAS threads follow the load during evaluation too).
    """

    def __init__(self, file=None, terminal=None, every=None, on_tick=None):
        self.file = sys.stderr if file is None else file
        self.terminal = self.file.isatty() if terminal is None else terminal
        self.every = PLAIN_SECONDS if every is None else every
        self.on_tick = on_tick
        self.stage, self.bar, self.lines = None, None, 0
        self.started = self.last_line = time.perf_counter()

    def __call__(self, stage, done, total):
        if self.on_tick is not None:
            self.on_tick()
        if stage != self.stage:
            self._end_stage()
            self.stage, self.lines = stage, 0
            if self.terminal:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=stage, leave=False, file=self.file, dynamic_ncols=True)
        self.done, self.total = done, total
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif time.perf_counter() - self.last_line >= self.every:
            self._line(f"{done}/{total}")

    def _line(self, what):
        self.last_line = time.perf_counter()
        self.lines += 1
        print(f"{self.stage}: {what}, {self.last_line - self.started:.0f} s", file=self.file, flush=True)

    def _end_stage(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.stage is not None and not self.terminal and self.lines:
            self._line(f"done ({self.total} of {self.total})")

    def close(self):
        self._end_stage()
        self.stage = None
