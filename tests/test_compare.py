"""Recipes, ``compare`` (resume, tables, figures, validation-only tuning), diagnostics, data tools."""

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
from adaptkit.data import prepare as prepare_module
from adaptkit.diagnostics import diagnose
from adaptkit.protocol import compare
from adaptkit.recipes import RecipeError, load_recipe, parse_recipe
from adaptkit.results import (
    classification_metrics,
    csv_table,
    markdown_tables,
    read_results,
    reference_table,
    summarize,
)

RECIPES = Path(__file__).parent.parent / "recipes"


def small_recipe(tmp_path, **overrides):
    data = {"output": str(tmp_path / "out"), "shots": [1, 2], "seeds": [1, 2], "views": 2,
            "adapters": ["zero_shot", "gda", "tip_adapter"], "datasets": [{"name": "digits"}],
            "backbones": [{"name": "adaptkit-tiny"}], "cache_dir": str(tmp_path / "cache"),
            "grids": {"tip_adapter": {"beta": [1.0, 5.0], "alpha": [0.5, 2.0]}}}
    data.update(overrides)
    return parse_recipe(data, "test.toml", base=tmp_path)


def test_shipped_recipes_load():
    for name in ("demo", "coop11-rn50", "coop11-vitb16", "imagenet"):
        recipe = load_recipe(RECIPES / f"{name}.toml")
        assert recipe.adapters and recipe.backbones
    assert len(load_recipe(RECIPES / "coop11-rn50.toml").datasets) == 11


@pytest.mark.parametrize("change,message", [
    ({"shotz": [1]}, r"test.toml: shotz: unknown key"),
    ({"datasets": [{"name": "digits", "rot": "x"}]}, r"datasets\[0\].rot: unknown key"),
    ({"datasets": [{"name": "pets"}]}, r"datasets\[0\].name: unknown dataset 'pets'"),
    ({"datasets": [{"name": "dtd"}]}, r"datasets\[0\].root: required for 'dtd'"),
    ({"shots": [1, 0]}, r"shots: expected a non-empty list of integers ≥ 1"),
    ({"adapters": ["gda", "tipp"]}, r"adapters\[1\]: unknown adapter 'tipp'"),
    ({"grids": {"gda": {"beta": [1.0]}}}, r"grids.gda.beta: unknown key"),
    ({"grids": {"gda": {"alpha": 1.0}}}, r"grids.gda.alpha: expected a non-empty list"),
    ({"grids": {"gda": {"alpha": ["a", "b"]}}}, r"grids.gda: grid\['alpha'\]\[0\]: The 'alpha' parameter of GDA"),
    ({"grids": {"gda": {"device": ["cpu"]}}}, r"grids.gda.device: unknown key"),
    ({"grids": {"ape": {"beta": [1.0]}}}, r"grids.ape: 'ape' is not among the recipe's adapters"),
    ({"views": 0}, r"views: expected a positive integer"),
    ({"batch_size": "abc"}, r"batch_size: expected a positive integer, got 'abc'"),
    ({"cache_dir": 5}, r"cache_dir: expected a folder path, got 5"),
    ({"device": "gpu"}, r"device: The 'device' parameter of recipe must be"),
    ({"workers": -1}, r"workers: expected \"auto\" or an integer ≥ 0"),
    ({"backbones": [{"name": "RN50", "weights": "openai"}]}, r"backbones\[0\].weights: unknown key"),
    ({"datasets": [{"name": "digits"}, {"name": "digits"}]}, r"datasets\[1\]: repeats datasets\[0\]"),
    ({"datasets": [{"name": "digits", "templates": "missing.json"}]}, r"datasets\[0\].templates: no such file"),
    ({"datasets": [{"name": "digits", "templates": ["a {x}"]}]}, r"datasets\[0\].templates: each template"),
])
def test_recipe_errors_name_the_key(tmp_path, change, message):
    with pytest.raises(RecipeError, match=message):
        small_recipe(tmp_path, **change)


def test_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("shots = [1,")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(tmp_path / "bad.toml")
    (tmp_path / "latin.toml").write_bytes("output = 'caf\xe9'".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin.toml: recipe file is not UTF-8 text"):
        load_recipe(tmp_path / "latin.toml")


def test_two_image_folders_are_two_datasets(tmp_path):
    from helpers import write_jpegs

    for name in ("a", "b"):
        write_jpegs(tmp_path / name / "images", n_classes=2, per_class=12, seed=ord(name))
    recipe = small_recipe(tmp_path, shots=[1], seeds=[1], views=1, adapters=["zero_shot"], grids={},
                          datasets=[{"name": "imagefolder", "root": str(tmp_path / "a" / "images")},
                                    {"name": "imagefolder", "root": str(tmp_path / "b" / "images"), "label": "bee"}])
    assert [d.label for d in recipe.datasets] == ["imagefolder:images", "bee"]
    clashing = small_recipe(tmp_path, datasets=[{"name": "imagefolder", "root": str(tmp_path / "a" / "images")},
                                                {"name": "imagefolder", "root": str(tmp_path / "b" / "images")}])
    assert [d.label for d in clashing.datasets] == ["imagefolder:a/images", "imagefolder:b/images"]
    result = compare(recipe, progress=False)
    assert sorted(r["dataset"] for r in result.rows) == ["bee", "imagefolder:images"]


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
    assert (out / "results.jsonl").read_text().startswith(torn + "\n")
    rows, _ = read_results(out / "results.jsonl")
    keys = [adaptkit.results.row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 12


def test_compare_rows_equal_a_hand_run_fit_tune_score(tmp_path):
    recipe = small_recipe(tmp_path, shots=[2], seeds=[1], adapters=["gda", "tip_adapter", "proker"],
                          grids={"proker": {"beta": [1.0, 5.0], "lam": [0.01, 1.0]}})
    rows = {r["adapter"]: r for r in compare(recipe, progress=False).rows}
    digits = ak.datasets.load("digits")
    tiny = ak.Backbone(ak.TINY, device="cpu")
    options = {"cache_dir": recipe.cache_dir, "progress": False}
    support = ak.extract(tiny, digits.few_shot(2, 1), views=2, seed=1, **options)
    val = ak.extract(tiny, digits.few_shot(2, 1, split="val"), **options)
    test = ak.extract(tiny, digits.split("test"), **options)
    text = tiny.text_classifier(digits.classnames, digits.templates)
    for name, cls in (("gda", ak.GDA), ("tip_adapter", ak.TipAdapter), ("proker", ak.ProKeR)):
        tuned = ak.tune(cls(device="cpu").fit(support.features, support.labels, text_weights=text), val.features,
                        val.labels, recipe.grids.get(name))
        assert rows[name]["params"] == tuned.tuning_results_["best_params"]
        assert rows[name]["val_accuracy"] == pytest.approx(tuned.tuning_results_["best_score"], abs=1e-12)
        assert rows[name]["acc1"] == pytest.approx(tuned.score(test.features, test.labels), abs=1e-12)


@pytest.mark.slow
def test_only_filters_are_checked_and_never_overwrite_the_full_tables(tmp_path):
    recipe = small_recipe(tmp_path)
    full = compare(recipe, progress=False)
    out = Path(recipe.output)
    table = (out / "table.md").read_text()
    with pytest.raises(ValueError, match="only adapter=gdaa matches nothing in test.toml; its adapter values are "
                                         "zero_shot, gda, tip_adapter"):
        compare(recipe, only={"adapter": {"gdaa"}}, progress=False)
    subset = compare(recipe, only={"adapter": {"gda"}, "shots": {"2"}}, progress=False)
    assert {(r["adapter"], r["shots"]) for r in subset.rows} == {("gda", 2)} and subset.filtered
    assert subset.rows_in_file == full.rows_in_file == 12 and subset.written == []
    assert (out / "table.md").read_text() == table


@pytest.mark.parametrize("line,problem", [
    ("42", "not a JSON object"), ("{}", "results format 1"), ('{"format_version": 2, "acc1": "n/a"}', "is missing"),
    (b"\xff\xfe not utf-8", "not UTF-8 text"), ('{"accuracy": 93.0, "adaptkit": "0.1.0"}', "results format 1"),
])
def test_bad_result_lines_are_reported_by_number_and_kept(tmp_path, line, problem):
    recipe = small_recipe(tmp_path, shots=[1], seeds=[1], adapters=["zero_shot"], grids={})
    compare(recipe, progress=False)
    path = Path(recipe.output) / "results.jsonl"
    raw = line if isinstance(line, bytes) else line.encode()
    path.write_bytes(path.read_bytes() + raw + b"\n")
    result = compare(recipe, progress=False)
    assert result.problems and result.problems[0][0] == 2 and problem in result.problems[0][1]
    assert raw in path.read_bytes() and len(result.rows) == 1


def test_average_column_is_the_seedwise_mean_over_datasets():
    rows = []
    for dataset, base in (("a", 0.50), ("b", 0.70)):
        for seed, delta in ((1, 0.0), (2, 0.04), (3, 0.08)):
            rows.append({"dataset": dataset, "backbone": {"model": "m", "weights": "w"}, "adapter": "gda",
                         "shots": 4, "seed": seed, "acc1": base + delta * (1 if dataset == "a" else -1),
                         "acc5": 1.0, "mean_per_class_recall": 0.5})
    cells = summarize(rows)["m (w)", 4, "gda"]
    seedwise = [np.mean([0.50 + d, 0.70 - d]) for d in (0.0, 0.04, 0.08)]
    assert cells["Average"] == pytest.approx((np.mean(seedwise), np.std(seedwise, ddof=1), 3))
    assert cells["a"] == pytest.approx((0.54, 0.04, 3))
    assert "| gda | 54.00 ± 4.00 | 66.00 ± 4.00 | 60.00 ± 0.00 |" in markdown_tables(rows)
    assert "m (w),4,gda,Average,0.600000,0.000000,1.000000,0.000000,0.500000,0.000000,3" in csv_table(rows)
    reference = reference_table(rows).splitlines()
    assert "| gda | published | 62.19 | 66.19 | 69.77 | 73.31 | 76.05 |" in reference
    assert "| gda | m (w) | – | – | 60.00 | – | – |" in reference


def test_metrics_are_scikit_learns():
    from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 8)), rng.integers(0, 8, 50)
    metrics = classification_metrics(logits, labels)
    assert metrics["acc1"] == pytest.approx((logits.argmax(1) == labels).mean())
    assert metrics["acc5"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=np.arange(8)))
    assert metrics["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)))
    assert classification_metrics(logits[:, :4], labels % 4)["acc5"] == 1.0


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


def test_diagnostics_match_slow_definitions():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(5, 16))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    labels = rng.integers(0, 5, size=60)
    features = text[labels] + 0.7 * rng.normal(size=(60, 16))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    report = diagnose(features.astype(np.float32), labels, text.astype(np.float32), list("abcde"))
    assert report["modality_gap"] == pytest.approx(np.linalg.norm(features.mean(0) - text.mean(0)), abs=1e-5)
    margins = [1 - max(text[c] @ text[o] for o in range(5) if o != c) for c in range(5)]
    assert report["text_margin"] == pytest.approx(np.mean(margins), abs=1e-5)
    alignment = []
    for c in range(5):
        mean = features[labels == c].mean(0)
        alignment.append(mean @ text[c] / np.linalg.norm(mean))
    assert report["class_text_alignment"] == pytest.approx(np.mean(alignment), abs=1e-5)
    predicted = (features @ text.T).argmax(1)
    for c, name in enumerate("abcde"):
        assert report["per_class_zero_shot_accuracy"][name] == pytest.approx((predicted[labels == c] == c).mean())
    pairs = {}
    for t, p in zip(labels, predicted):
        if t != p:
            pairs[(t, p)] = pairs.get((t, p), 0) + 1
    top = report["confusions"][0]
    assert top["count"] == max(pairs.values())
    assert pairs[("abcde".index(top["true"]), "abcde".index(top["predicted"]))] == top["count"]


def test_data_check_reports_missing_images(tmp_path):
    base = tmp_path / "dtd"
    (base / "images" / "banded").mkdir(parents=True)
    (base / "images" / "banded" / "a.jpg").write_bytes(b"x")
    split = {"train": [["banded/a.jpg", 0, "banded"]], "val": [["banded/b.jpg", 0, "banded"]], "test": []}
    (base / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    report = prepare_module.check("dtd", tmp_path)
    assert not report["ok"]
    assert report["splits"]["train"]["missing"] == 0 and report["splits"]["val"]["missing"] == 1
    result = CliRunner().invoke(app, ["data", "check", "dtd", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "dtd/val: 1 images listed, 1 missing" in result.output
    missing = CliRunner().invoke(app, ["data", "check", "eurosat", "--root", str(tmp_path)])
    assert missing.exit_code == 1 and "Expected layout: root/eurosat/{2750/..., split_zhou_EuroSAT.json}" in missing.output


def test_data_prepare_by_hand_and_offline(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["data", "prepare", "imagenet", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "image-net.org" in result.output

    import torchvision.datasets as tv

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(tv, "OxfordIIITPet", offline)
    with pytest.raises(ValueError, match=r"downloading with torchvision.datasets.OxfordIIITPet failed.*by hand"):
        prepare_module.prepare("oxford_pets", tmp_path)

    def fake_download(root, download, **options):
        (Path(root) / "oxford-iiit-pet" / "images").mkdir(parents=True)

    monkeypatch.setattr(tv, "OxfordIIITPet", fake_download)
    todo = prepare_module.prepare("oxford_pets", tmp_path)
    assert (tmp_path / "oxford_pets" / "images").is_dir()
    assert len(todo) == 1 and "split_zhou_OxfordPets.json" in todo[0]
