"""compare and run_protocol: resume, tables, figures, validation-only tuning, --only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import adaptkit as ak
import adaptkit.results
from adaptkit.cli import app
from adaptkit.protocol import compare
from adaptkit.results import (
    read_results,
)
from helpers import small_recipe


def hand_summary(rows):
    out = {}
    for row in rows:
        out.setdefault((row["adapter"], row["shots"]), {}).setdefault(row["dataset"], {})[row["seed"]] = row["acc1"]
    return out


@pytest.mark.slow
def test_compare_writes_results_tables_and_figures_and_resumes(tmp_path, tune_calls):
    recipe = small_recipe(tmp_path)
    tune_inputs = tune_calls
    result = compare(recipe, progress=False)
    out = Path(recipe.output)
    assert len(result.rows) == 3 * 2 * 2 == result.new_rows == result.rows_in_file and len(tune_inputs) == 12
    for name in ("results.jsonl", "table.md", "table.csv", "diagnostics.json", "recipe.json",
                 "accuracy_vs_shots.png", "accuracy_vs_shots.svg", "datasets_2shot.png", "datasets_2shot.svg"):
        assert (out / name).is_file(), name
    row = result.rows[0]
    for key in ("acc1", "acc5", "mean_per_class_recall", "params", "fit_seconds", "predict_seconds", "config_hash",
                "adaptkit", "backbone", "prompts_sha256", "format_version"):
        assert key in row
    assert all(0.0 <= r[m] <= 1.0 for r in result.rows for m in ("acc1", "acc5", "mean_per_class_recall"))
    assert row["backbone"]["weights"].startswith("random-init")

    digits = ak.datasets.load("digits")
    tiny = ak.Backbone(ak.TINY, device="cpu")
    test = ak.extract(tiny, digits.split("test"), cache_dir=recipe.cache_dir, progress=False)
    val_sets = {(k, s): ak.extract(tiny, digits.few_shot(min(k, 4), s, split="val"), cache_dir=recipe.cache_dir,
                                   progress=False) for k in (1, 2) for s in (1, 2)}
    for X_val, y_val in tune_inputs:
        assert X_val.shape[0] < len(test) // 10
        assert any(torch.equal(X_val, v.features) and torch.equal(y_val, v.labels) for v in val_sets.values())

    table, csv_text = (out / "table.md").read_text(), (out / "table.csv").read_text()
    assert "Top-1 test accuracy (%)" in table
    for (adapter, shots), datasets in hand_summary(read_results(out / "results.jsonl")[0]).items():
        values = np.array(list(datasets["digits"].values()))
        mean, std = values.mean(), values.std(ddof=1)
        assert f"| {adapter} | {100 * mean:.2f} ± {100 * std:.2f} |" in table
        assert f",{shots},{adapter},digits,{mean:.6f},{std:.6f}," in csv_text
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert 0.0 <= diagnostics["digits / adaptkit-tiny"]["zero_shot_accuracy"] <= 1.0

    tune_inputs.clear()
    again = compare(recipe, progress=False)
    assert tune_inputs == [] and len(again.rows) == 12 and again.new_rows == 0
    assert (out / "table.md").read_text() == table and (out / "table.csv").read_text() == csv_text

    lines = (out / "results.jsonl").read_text().splitlines()
    torn = "\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2]
    (out / "results.jsonl").write_text(torn)
    resumed = compare(recipe, progress=False)
    assert len(tune_inputs) == 7 and resumed.new_rows == 7
    assert resumed.problems == [(6, "not valid JSON (a torn or edited line)")]
    assert (out / "results.jsonl").read_text().startswith("\n".join(lines[:5]) + "\n{")  # the torn line moved aside
    (moved,) = [json.loads(text) for text in (out / "results.rejected.jsonl").read_text().splitlines()]
    assert moved["line"] == 6 and moved["text"] == lines[5][: len(lines[5]) // 2]
    rows, _ = read_results(out / "results.jsonl")
    keys = [adaptkit.results.row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 12


def test_compare_rows_equal_a_hand_run_fit_tune_score(tmp_path):
    """Including an adapter whose constructor values the recipe fixes ([params.proker]: the
    Nyström ProKeR), recorded in its rows with the chosen grid point."""
    recipe = small_recipe(tmp_path, shots=[2], seeds=[1], adapters=["gda", "tip_adapter", "proker"],
                          grids={"proker": {"beta": [1.0, 5.0], "lam": [0.01, 1.0]}}, params={"proker": {"rank": 6}})
    rows = {r["adapter"]: r for r in compare(recipe, progress=False).rows}
    digits = ak.datasets.load("digits")
    tiny = ak.Backbone(ak.TINY, device="cpu")
    options = {"cache_dir": recipe.cache_dir, "progress": False}
    support = ak.extract(tiny, digits.few_shot(2, 1), views=2, seed=1, **options)
    val = ak.extract(tiny, digits.few_shot(2, 1, split="val"), **options)
    test = ak.extract(tiny, digits.split("test"), **options)
    text = tiny.text_classifier(digits.classnames, digits.templates)
    for name, cls in (("gda", ak.GDA), ("tip_adapter", ak.TipAdapter), ("proker", ak.ProKeR)):
        fixed = recipe.params.get(name, {})
        tuned = ak.tune(cls(device="cpu", **fixed).fit(support.features, support.labels, text_weights=text),
                        val.features, val.labels, recipe.grids.get(name))
        assert rows[name]["params"] == {**fixed, **tuned.tuning_results_["best_params"]}
        assert rows[name]["val_accuracy"] == pytest.approx(tuned.tuning_results_["best_score"], abs=1e-12)
        assert rows[name]["acc1"] == pytest.approx(tuned.score(test.features, test.labels), abs=1e-12)


@pytest.mark.slow
def test_only_filters_are_checked_and_never_overwrite_the_full_tables(tmp_path):
    recipe = small_recipe(tmp_path)
    full = compare(recipe, progress=False)
    out = Path(recipe.output)
    table = (out / "table.md").read_text()
    with pytest.raises(ValueError, match="only: adapter gdaa matches nothing in test.toml; its adapter values are "
                                         "zero_shot, gda, tip_adapter"):
        compare(recipe, only={"adapter": {"gdaa"}}, progress=False)
    subset = compare(recipe, only={"adapter": {"gda"}, "shots": {"2"}}, progress=False)
    assert {(r["adapter"], r["shots"]) for r in subset.rows} == {("gda", 2)} and subset.filtered
    assert subset.rows_in_file == full.rows_in_file == 12 and subset.written == []
    assert (out / "table.md").read_text() == table


def test_cli_compare_with_only_output_and_reference(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
output = "{tmp_path / 'unused'}"
cache_dir = "{tmp_path / 'cache'}"
shots = [1]
seeds = [1]
views = 1
adapters = ["zero_shot", "gda"]
[[datasets]]
name = "digits"
[[backbones]]
name = "adaptkit-tiny"
""")
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(recipe), "--only", "adapter=gda", "--reference", "--output", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert "| gda |" in result.output and "published" in result.output
    assert "1 rows in" in result.output and "filtered run" in result.output
    assert [r["adapter"] for r in read_results(out / "results.jsonl")[0]] == ["gda"]
    assert not (tmp_path / "unused").exists() and not (out / "table.md").exists()
    bad = runner.invoke(app, ["compare", str(recipe), "--only", "colour=red"])
    assert bad.exit_code != 0 and "FIELD=v1,v2" in bad.output
    typo = runner.invoke(app, ["compare", str(recipe), "--only", "adapter=gdaa", "--output", str(out)])
    assert typo.exit_code == 1 and "matches nothing" in typo.output
    shots = runner.invoke(app, ["compare", str(recipe), "--only", "shots=32", "--output", str(out)])
    assert "only: shots 32 matches nothing" in shots.output and "--shots" not in shots.output
    assert "tables and figures not written (an unfiltered run writes them)" in result.output
    assert "ImageNet" not in result.output


def test_every_missing_dataset_is_named_once_with_its_next_step(tmp_path):
    recipe = tmp_path / "two.toml"
    recipe.write_text('adapters = ["gda"]\n[[datasets]]\nname = "dtd"\nroot = "{0}"\n[[datasets]]\nname = "eurosat"\n'
                      'root = "{0}"\n[[backbones]]\nname = "adaptkit-tiny"\n'.format(tmp_path / "data"))
    result = CliRunner().invoke(app, ["compare", str(recipe)])
    assert result.exit_code == 1
    assert "dtd: dtd:" not in result.output and "eurosat: eurosat:" not in result.output
    assert "2 dataset(s)" in result.output
    for name in ("dtd", "eurosat"):
        assert f"next: adaptkit data prepare {name} --root {tmp_path / 'data'}" in result.output



def test_demo_and_compare_compute_the_same_rows(tmp_path, tiny, digits):
    """`adaptkit demo` (evaluate_few_shot) and `adaptkit compare` of the same recipe: row for row the
    same accuracies and chosen parameters."""
    from adaptkit.protocol import evaluate_few_shot

    adapters = ["zero_shot", "gda", "tip_adapter", "proker"]
    recipe = small_recipe(tmp_path, shots=[1, 2], seeds=[1, 2], views=2, adapters=adapters, grids={})
    compared = compare(recipe, progress=False).rows
    demo = evaluate_few_shot(tiny, digits, adapters, [1, 2], [1, 2], views=2, cache_dir=recipe.cache_dir,
                             progress=False)

    def key(row):
        return row["adapter"], row["shots"], row["seed"]

    assert sorted(map(key, compared)) == sorted(map(key, demo)) and len(demo) == 16
    by_key = {key(row): row for row in demo}
    for row in compared:
        other = by_key[key(row)]
        assert (row["acc1"], row["acc5"], row["params"]) == (other["acc1"], other["acc5"], other["params"]), key(row)
