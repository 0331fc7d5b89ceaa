"""The command line: ``adaptkit demo`` and ``adaptkit extract``."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from adaptkit.cli import app
from adaptkit.evaluate import summary_table

runner = CliRunner()


def test_demo_prints_a_table_and_the_random_init_warning(tmp_path):
    result = runner.invoke(app, ["demo", "--shots", "1,2", "--seeds", "1,2", "--views", "2",
                                 "--cache-dir", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "| adapter | 1 shot | 2 shots |" in result.output
    from adaptkit.cli import DEMO_ADAPTERS
    from adaptkit.adapters import ADAPTERS

    assert set(DEMO_ADAPTERS) == set(ADAPTERS)
    for name in DEMO_ADAPTERS:
        assert re.search(rf"\| {name} \| \d+\.\d\d ± \d+\.\d\d \| \d+\.\d\d ± \d+\.\d\d \|", result.output)
    assert "RANDOMLY INITIALISED" in result.output
    assert "adaptkit demo --backbone ViT-B-32 --pretrained openai" in result.output
    assert "adaptkit tta --method tda" in result.output


def test_demo_rejects_malformed_shots():
    result = runner.invoke(app, ["demo", "--shots", "1,four"])
    assert result.exit_code != 0
    assert "--shots must be comma-separated integers" in result.output


def test_extract_reports_shape_and_cache_key(tmp_path):
    args = ["extract", "digits", "--split", "train", "--shots", "2", "--views", "3", "--cache-dir", str(tmp_path),
            "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "digits/train/2shot-seed1: features (20, 3, 64), cache key" in result.output
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1


def test_summary_table_is_mean_and_sample_std_over_seeds():
    rows = [{"adapter": "gda", "shots": 1, "accuracy": a} for a in (50.0, 60.0, 70.0)]
    rows += [{"adapter": "gda", "shots": 4, "accuracy": 80.0}]
    table = summary_table(rows)
    assert "| gda | 60.00 ± 10.00 | 80.00 ± 0.00 |" in table
