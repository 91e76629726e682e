"""`python -m numpyvae ...` runs the `numpyvae` command."""
import sys

try:
    from numpyvae.entry import run
except KeyboardInterrupt:          # Ctrl-C before the command's own handler is in place
    print("numpyvae: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(run())
