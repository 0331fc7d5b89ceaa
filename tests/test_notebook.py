"""The quick-start notebook executes end to end."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTKIT_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "test accuracy" in outputs and "| gda |" in outputs and "predicted:" in outputs
    assert "TDA accuracy on the test stream" in outputs and "of the dense ViT's FLOPs" in outputs
    assert not any(o.get("output_type") == "error" for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.outputs)
