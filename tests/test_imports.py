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


def test_the_cli_imports_only_what_its_command_needs():
    """`numpyvae gradcheck` needs no training loop, progress bar, plotting or HTTP client."""
    program = ("import sys; from numpyvae.cli import main; status = main(['gradcheck', '--quick']); "
               "print(status, sorted(m for m in ('numpyvae.train', 'tqdm', 'matplotlib', 'requests') "
               "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "0 []"


def test_imports_flow_one_way_with_no_import_hidden_in_a_function():
    """datasets.py uses download.py, never the other way round, and neither hides an import of the
    other inside a function (where a circle would go unnoticed until that function ran)."""
    import ast
    from pathlib import Path

    def imported(module, top_level_only):
        tree = ast.parse((Path(numpyvae.__file__).parent / f"{module}.py").read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        return {node.module for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
    assert "numpyvae.download" in imported("datasets", top_level_only=True)
    assert "numpyvae.datasets" not in imported("download", top_level_only=False)
    assert imported("datasets", top_level_only=False) == imported("datasets", top_level_only=True)
