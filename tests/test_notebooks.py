"""The notebooks: committed without outputs (default suite), and the first three executed headless
(``pytest -m notebooks -n 0``, excluded by default) at their tiny size (MMCIT_NOTEBOOK_TINY=1) on the
session's cached tiny base; any cell error fails the test."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXECUTED = ["01_quickstart", "02_explore_a_run", "03_your_own_model"]  # 04 needs CoIN, LLaVA and a GPU


def test_notebooks_are_committed_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == [*EXECUTED, "04_coin_llava"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code, path.name
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name} has outputs"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cache_dir):
    """One folder for the three notebooks (02 explores the run 01 made), this checkout's mmcit
    first on the kernels' path, the tiny size, one thread, progress as plain lines."""
    folder = tmp_path_factory.mktemp("notebooks")
    saved = dict(os.environ)
    os.environ.update(MMCIT_NOTEBOOK_TINY="1", OMP_NUM_THREADS="1", MMCIT_PROGRESS="lines",
                      PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    yield folder
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.notebooks
@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_executes(name, workdir):
    from nbclient import NotebookClient

    book = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert any(o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
               for c in book.cells if c.cell_type == "code" for o in c.outputs)  # the figures were drawn
