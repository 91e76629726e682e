"""`import numpyvae` stays light: the heavy or optional libraries load only when used."""
from __future__ import annotations

import subprocess
import sys

import numpyvae


def test_import_numpyvae_loads_no_requests_matplotlib_or_cupy():
    heavy = ("requests", "matplotlib", "cupy")
    program = f"import sys, numpyvae; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_data_functions_are_exported():
    assert {"read_idx", "write_idx", "load_fashion_mnist"} <= set(numpyvae.__all__)
    assert callable(numpyvae.read_idx) and callable(numpyvae.write_idx) and callable(numpyvae.load_fashion_mnist)
