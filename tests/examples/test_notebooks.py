"""Every notebook in examples/notebooks runs top to bottom, as a reader runs it: from its own
folder (a copy), with the examples beside it."""

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted((EXAMPLES / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="pip install 'ember[docs]' to run the notebooks")
    from nbclient import NotebookClient

    shutil.copytree(EXAMPLES / "notebooks", tmp_path / "notebooks")
    shutil.copytree(EXAMPLES / "bias_correction", tmp_path / "bias_correction")
    book = nbformat.read(path, as_version=4)
    NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path / "notebooks")}}
    ).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # A result renders as ember's metrics table, not as the dataclass's repr.
    html = [
        o["data"]["text/html"]
        for o in outputs
        if o.output_type == "execute_result" and "text/html" in o.get("data", {})
    ]
    if path.stem != "03_tuning":
        assert any("<table>" in h and "metric" in h for h in html), path.stem
