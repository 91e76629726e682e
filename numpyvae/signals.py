"""SIGTERM handled as Ctrl-C is: an exception that runs every clean-up on its way out, then exit 143.

Python turns Ctrl-C (SIGINT) into KeyboardInterrupt, so `finally` blocks and atomic writes clean
up after it; SIGTERM (`kill`, a batch system's preemption) would end the process on the spot,
leaving half-made run folders, locks and temporary files. Inside `signals_raise()`, SIGTERM
raises Terminated instead, a KeyboardInterrupt that remembers its signal, so one clean-up path
serves both and the command exits with 128 + the signal's number, as shells report it.

Only the standard library here: `numpyvae` installs this before its heavy imports.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


RESEND_SECONDS = 0.01    # a signal swallowed where exceptions cannot propagate is sent again this much later


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised where Ctrl-C's KeyboardInterrupt would be, so the same clean-up runs."""
    signum = signal.SIGTERM


def signal_of(interrupt):
    """The signal behind a KeyboardInterrupt: SIGTERM for Terminated, else SIGINT (Ctrl-C)."""
    return getattr(interrupt, "signum", signal.SIGINT)


def stopped_by(signum):
    """How a message names the signal that stopped a command."""
    return "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"


@contextlib.contextmanager
def signals_raise():
    """Within the block, SIGTERM raises Terminated and Ctrl-C KeyboardInterrupt; yields the list of
    signals received, so that an error they caused elsewhere can be told apart (NumPy interrupted
    while it imports raises ImportError, not KeyboardInterrupt). The previous handlers come back after.

    Nothing changes outside the main thread (only it can handle signals), nor for a signal that
    is ignored (a parent that ignores it means it) or handled by someone else.
    """
    received = []

    def raise_for(signum, frame):
        received.append(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def unraisable(hook):
        # raised where no exception can propagate (a weakref callback inside an import, say), Python
        # would print it and go on as if no signal had come: send the signal again, a moment later, so
        # that it lands after this hook, in ordinary code (should it land in such a place again, so does this)
        if isinstance(hook.exc_value, KeyboardInterrupt) and received:
            resend = threading.Timer(RESEND_SECONDS, os.kill, (os.getpid(), received.pop()))
            resend.daemon = True
            resend.start()
        else:
            previous_hook(hook)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) == default:
                previous[signum] = signal.signal(signum, raise_for)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield received
    finally:
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)
