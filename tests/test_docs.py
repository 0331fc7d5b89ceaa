"""README's demo table and the notebook's stored outputs are what the code produces now."""

from __future__ import annotations

import re

import nbformat
import pytest

from tools import docs

ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:tmp|home|work|root|Users|var|private)/")


@pytest.mark.slow
def test_readme_demo_table_equals_a_fresh_run():
    """Regenerate with `python -m tools.docs` when this fails after a deliberate change.
    Cells may differ by what another CPU's float32 kernels flip (see docs.table_differences)."""
    assert docs.demo_differences(docs.demo_rows()) == []


TABLE = """| adapter | 1 shot | 16 shots |
|---|---|---|
| gda | 20.80 ± 1.30 | 37.53 ± 1.12 |
| ape | 11.11 ± 1.82 | – |"""


def test_table_tolerance_is_what_three_flipped_images_per_seed_explain():
    # 540 test images, 3 seeds: a mean may move by 3/540 = 0.556 pp (+0.01 rounding), a std by 0.690 pp.
    assert docs.table_differences(TABLE, TABLE, 540, 3) == []
    near = TABLE.replace("37.53 ± 1.12", "37.00 ± 1.80")
    assert docs.table_differences(TABLE, near, 540, 3) == []
    moved = TABLE.replace("37.53 ± 1.12", "36.90 ± 1.12")
    assert docs.table_differences(TABLE, moved, 540, 3) == [
        "('gda', '16 shots'): README 37.53 ± 1.12, fresh 36.90 ± 1.12 (tolerance 0.57 ± 0.69)"]
    spread = TABLE.replace("1.30", "2.10")
    assert len(docs.table_differences(TABLE, spread, 540, 3)) == 1
    assert docs.table_differences(TABLE, TABLE.replace("| – |", "| 9.00 ± 0.00 |"), 540, 3) == [
        "('ape', '16 shots'): only in the fresh run"]
    assert len(docs.table_differences(TABLE, TABLE, 5400, 3)) == 0
    assert len(docs.table_differences(TABLE, near, 5400, 3)) == 1


def test_readme_table_block_is_required(tmp_path):
    with pytest.raises(ValueError, match="demo-table"):
        docs.readme_table("# no table here\n")


def test_stored_notebook_outputs_hold_no_local_paths_warnings_or_errors():
    notebook = nbformat.read(docs.NOTEBOOK, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs, "the notebook is stored with its outputs (python -m tools.docs)"
    texts = [o.get("text", "") for o in outputs if o.get("output_type") == "stream"]
    assert all(o.get("name") != "stderr" for o in outputs if o.get("output_type") == "stream")
    assert not any(o.get("output_type") == "error" for o in outputs)
    for text in texts:
        assert not ABSOLUTE_PATH.search(text), text
        assert not any(word in text for word in docs.NOTEBOOK_OUTPUT_FORBIDDEN), text
