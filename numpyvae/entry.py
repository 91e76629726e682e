"""The `numpyvae` command's entry point: a Ctrl-C from its first moment to its last is a message, not a traceback.

The console script (and `python -m numpyvae`) imports this module, which loads nothing (sys is
loaded before any script runs), and calls run(). cli.py, which main() needs and which takes tens of
milliseconds to import on a busy machine, is imported under run()'s watch: a Ctrl-C then is
"numpyvae: interrupted" and exit 130, as it is once the command runs (cli.main handles those).
Once the command has finished, a signal that lands while Python shuts down (atexit handlers,
threads joining) ends the process at once with a line that says the work was done, not with
exit status -2 and nothing said.
"""
import os      # os and sys are loaded before any script runs: importing them here costs nothing
import sys

SIGINT = 2      # signal.SIGINT, without importing signal (a few milliseconds of enum set-up) before run()
NAMES = {2: "SIGINT", 15: "SIGTERM"}


def run():
    """Run the `numpyvae` command on sys.argv[1:]; return its exit status."""
    try:
        import functools
        import signal
        from numpyvae.cli import main
        status = main()
    except KeyboardInterrupt as stop:      # before cli.main's own handlers were in place, or after they left
        signum = int(getattr(stop, "signum", SIGINT))
        print(f"numpyvae: {'interrupted' if signum == SIGINT else 'terminated'}", file=sys.stderr)
        return 128 + signum
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(signum, functools.partial(_after_the_command, status))
    return status


def _after_the_command(status, signum, frame):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.write(2, f"numpyvae: {NAMES.get(signum, signum)} arrived after the command had finished "
                f"(with exit status {status}); nothing was left undone\n".encode())
    os._exit(128 + signum)
