"""`python -m numpyvae ...` runs the `numpyvae` command."""
from numpyvae.cli import main

raise SystemExit(main())
