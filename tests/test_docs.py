"""README's demo table and the notebook's stored outputs are what the code produces now."""

from __future__ import annotations

import re

import nbformat
import pytest

from adaptkit import docs

ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:tmp|home|work|root|Users|var|private)/")


def test_readme_demo_table_equals_a_fresh_run():
    """Regenerate with `python -m adaptkit.docs` when this fails after a deliberate change."""
    fresh = docs.demo_table(docs.demo_rows())
    assert docs.readme_table(docs.README.read_text(encoding="utf-8")) == fresh


def test_readme_table_block_is_required(tmp_path):
    with pytest.raises(ValueError, match="demo-table"):
        docs.readme_table("# no table here\n")


def test_stored_notebook_outputs_hold_no_local_paths_warnings_or_errors():
    notebook = nbformat.read(docs.NOTEBOOK, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs, "the notebook is stored with its outputs (python -m adaptkit.docs)"
    texts = [o.get("text", "") for o in outputs if o.get("output_type") == "stream"]
    assert all(o.get("name") != "stderr" for o in outputs if o.get("output_type") == "stream")
    assert not any(o.get("output_type") == "error" for o in outputs)
    for text in texts:
        assert not ABSOLUTE_PATH.search(text), text
        assert not any(word in text for word in docs.NOTEBOOK_OUTPUT_FORBIDDEN), text
