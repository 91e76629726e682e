"""`import numpyvae` stays light: the heavy or optional libraries load only when used."""
from __future__ import annotations

import subprocess
import sys

import numpyvae


# Records every top-level module an import statement asks for, found or not, so that a guarded
# `try: import cupy` counts on a machine without CuPy too.
RECORD_IMPORTS = """
import sys
asked = set()
class Recorder:
    def find_spec(self, name, path=None, target=None):
        asked.add(name.split(".")[0])
        return None
sys.meta_path.insert(0, Recorder())
"""


def test_import_numpyvae_loads_no_requests_matplotlib_or_cupy():
    heavy = ("requests", "matplotlib", "cupy", "tqdm")
    program = RECORD_IMPORTS + f"import numpyvae; print(sorted(m for m in {heavy!r} if m in asked))"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_data_functions_are_exported():
    assert {"read_idx", "write_idx", "load_fashion_mnist"} <= set(numpyvae.__all__)
    assert callable(numpyvae.read_idx) and callable(numpyvae.write_idx) and callable(numpyvae.load_fashion_mnist)


def test_the_cli_imports_only_what_its_command_needs():
    """`numpyvae gradcheck` needs no training loop, progress bar, plotting or HTTP client."""
    program = (RECORD_IMPORTS + "from numpyvae.cli import main; status = main(['gradcheck', '--quick']); "
               "print(status, sorted(m for m in ('tqdm', 'matplotlib', 'requests', 'cupy') if m in asked) "
               "+ (['numpyvae.train'] if 'numpyvae.train' in sys.modules else []))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "0 []"


def test_imports_flow_one_way_with_no_import_hidden_in_a_function():
    """datasets.py uses download.py, never the other way round, and neither hides an import of the
    other inside a function (where a circle would go unnoticed until that function ran)."""
    import ast
    from pathlib import Path

    def imported(module, top_level_only):
        """The numpyvae modules `module` imports, in any spelling: import a.b, from a import b, from . import b."""
        tree = ast.parse((Path(numpyvae.__file__).parent / f"{module}.py").read_text())
        names = set()
        for node in tree.body if top_level_only else ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = "numpyvae" if node.level else node.module or ""
                if node.level and node.module:
                    base = f"numpyvae.{node.module}"
                names.add(base)
                names |= {f"{base}.{alias.name}" for alias in node.names}
        return names
    assert "numpyvae.download" in imported("datasets", top_level_only=True)
    assert "numpyvae.datasets" not in imported("download", top_level_only=False)
    numpyvae_imports = {name for name in imported("datasets", top_level_only=False) if name.startswith("numpyvae")}
    assert numpyvae_imports <= imported("datasets", top_level_only=True)


def test_the_layer_modules_import_one_way():
    """conv.py uses layers.py (the workspace) and im2col.py (the layout copies); neither uses conv.py back, and
    im2col.py, plain copies and sums, uses no other numpyvae module: the split of layers.py stays acyclic."""
    import ast
    from pathlib import Path

    def numpyvae_imports(module):
        tree = ast.parse((Path(numpyvae.__file__).parent / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names if alias.name.startswith("numpyvae")}
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("numpyvae")):
                names.add(node.module if not node.level else f"numpyvae.{node.module or ''}".rstrip("."))
        return names
    assert numpyvae_imports("conv") == {"numpyvae.layers", "numpyvae.im2col"}
    assert numpyvae_imports("im2col") == set()
    assert not numpyvae_imports("layers") & {"numpyvae.conv", "numpyvae.im2col"}
