"""docs/tutorial.ipynb: it runs top to bottom in a fresh kernel, and the committed copy shows its outputs."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the test extra: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "docs" / "tutorial.ipynb"
CELL_TIMEOUT = 600            # seconds for one cell; docs/index.md says how long the whole notebook took
MAX_BYTES = 1_500_000         # outputs included: the notebook must stay readable on a repository page


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_committed_notebook_shows_every_output_and_no_error():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    cells = code_cells(notebook)
    assert cells
    for number, cell in enumerate(cells, 1):
        assert cell.outputs, f"code cell {number} has no output: execute the notebook before committing it"
        assert cell.execution_count == number, \
            f"code cell {number} ran as [{cell.execution_count}]: run it top to bottom in a fresh kernel"
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert not errors, f"code cell {number} raised {errors[0].ename}: {errors[0].evalue}"
    assert NOTEBOOK.stat().st_size < MAX_BYTES


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(real_fashion_mnist_dir, tmp_path, monkeypatch):
    """Every cell runs without raising (each gradient check asserts), with the numpyvae under test."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the test extra: pip install -e '.[test]'")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # one more cell, run last in the same kernel: which numpyvae did the notebook import?
    notebook.cells.append(nbformat.v4.new_code_cell("import numpyvae; print(numpyvae.__file__)"))
    # the kernel starts in the repository root, with the repository first on its path, so it imports
    # this numpyvae even where another one is installed; it inherits this process's environment
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("NUMPYVAE_DATA_DIR", str(tmp_path / "no-data-here"))   # the loader must find the real files
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()              # raises CellExecutionError, naming the cell, if any cell raises
    nbformat.write(notebook, tmp_path / "tutorial.ipynb")     # a copy to look at; the committed file is untouched
    imported = Path(code_cells(notebook)[-1].outputs[0].text.strip())
    assert imported.resolve().parent == (REPO / "numpyvae").resolve()


def test_the_lesson_shows_the_loop_the_heads_and_readable_pictures():
    """The explicit training loop comes before train(); the heads' gradient sums are checked; pictures at 100 dpi."""
    import re
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = code_cells(notebook)
    loop = next(i for i, cell in enumerate(cells) if re.search(r"for .+:\n(.*\n)*.*loss_and_grads\(.*\n.*\.step\(\)",
                                                                   cell.source))
    hand_over = next(i for i, cell in enumerate(cells) if "train(config" in cell.source)
    assert loop < hand_over
    heads = next(cell for cell in cells if "W_mu.T" in cell.source and "W_lv.T" in cell.source)
    assert "dL/dh, both heads" in heads.outputs[0].text
    dpi = re.search(r'rcParams\["figure.dpi"\] = (\d+)', cells[0].source)
    assert dpi and int(dpi.group(1)) >= 100
    text = " ".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "Both lines" not in text          # the variance plot has three
