"""report.html: one self-contained page per compare folder, rebuilt by `adaptkit report`."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from adaptkit.cli import app
from adaptkit.protocol import compare
from adaptkit.recipes import parse_recipe
from adaptkit.report import build_report


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    data = {"output": str(tmp / "out"), "shots": [1, 2], "seeds": [1, 2], "views": 1,
            "adapters": ["zero_shot", "gda"], "datasets": [{"name": "digits"}],
            "backbones": [{"name": "adaptkit-tiny"}], "cache_dir": str(tmp / "cache")}
    compare(parse_recipe(data, "report.toml", base=tmp), progress=False)
    return tmp / "out"


def test_compare_writes_a_self_contained_report(folder):
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") >= 1 and "<img" not in page
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page), "no external assets"
    assert "<script" not in page
    for section in ("Accuracy versus shots", "Tables", "Best adapter per class", "Feature diagnostics",
                    "Provenance", "modality_gap", "text_margin"):
        assert section in page
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert f"{len(rows)} result rows" in page and rows[0]["backbone"]["weights"] in page
    assert all(len(r["per_class_accuracy"]) == 10 for r in rows)
    best = max((r for r in rows if r["shots"] == 2), key=lambda r: r["acc1"])["adapter"]
    assert re.search(r"digits / adaptkit-tiny \(random-init.*?\): \w+ at 2 shots", page)
    assert "zero" in page and "nine" in page
    assert best in ("gda", "zero_shot")


def test_adaptkit_report_rebuilds_the_same_page(folder):
    before = (folder / "report.html").read_text(encoding="utf-8")
    (folder / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0 and "report.html" in result.output
    assert (folder / "report.html").read_text(encoding="utf-8") == before


def test_report_of_a_folder_without_results_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no results.jsonl: run adaptkit compare"):
        build_report(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "adaptkit: error:" in result.output
