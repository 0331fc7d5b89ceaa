"""Recipes: every key and value checked before any work, files resolved against the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

import adaptkit as ak
from adaptkit.protocol import compare
from adaptkit.recipes import RecipeError, load_recipe
from helpers import small_recipe

RECIPES = Path(__file__).parent.parent / "recipes"


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
    ({"params": {"ape": {"beta": 1.0}}}, r"params.ape: 'ape' is not among the recipe's adapters"),
    ({"params": {"gda": {"rank": 4}}}, r"params.gda.rank: unknown key"),
    ({"params": {"gda": {"alpha": -1.0}}}, r"params.gda.alpha: The 'alpha' parameter of GDA must be"),
    ({"params": {"tip_adapter": {"beta": 2.0}}}, r"params.tip_adapter.beta: also searched by grids.tip_adapter.beta"),
    ({"params": {"gda": 3}}, r"params.gda: expected a table"),
    ({"views": 0}, r"views: The 'views' parameter of recipe must be an int in the range \[1, inf\)\. Got 0"),
    ({"batch_size": "abc"}, r"batch_size: The 'batch_size' parameter of recipe must be an int .* Got 'abc'"),
    ({"cache_dir": 5}, r"cache_dir: The 'cache_dir' parameter of recipe must be a non-empty string or None\. Got 5"),
    ({"output": " "}, r"output: The 'output' parameter of recipe must be a non-empty string"),
    ({"device": "gpu"}, r"device: The 'device' parameter of recipe must be"),
    ({"workers": -1}, r"workers: The 'workers' parameter of recipe must be an int in the range \[0, inf\) or a str"),
    ({"datasets": [{"name": "imagefolder", "root": "x", "val_fraction": 1.5}]},
     r"datasets\[0\].val_fraction: The 'val_fraction' parameter of datasets\[0\] must be a float in the range \(0\.0, 1\.0\)"),
    ({"backbones": [{"name": "RN50", "pretrained": 3}]}, r"backbones\[0\].pretrained: The 'pretrained' parameter"),
    ({"backbones": [{"pretrained": "openai"}]}, r"backbones\[0\].name: missing"),
    ({"backbones": [{"name": "RN50", "weights": "openai"}]}, r"backbones\[0\].weights: unknown key"),
    ({"datasets": [{"name": "digits"}, {"name": "digits"}]}, r"datasets\[1\]: repeats datasets\[0\]"),
    ({"datasets": [{"name": "digits", "templates": "missing.json"}]}, r"datasets\[0\].templates: no such file"),
    ({"datasets": [{"name": "digits", "templates": ["a {x}"]}]}, r"datasets\[0\].templates: each template"),
])
def test_recipe_errors_name_the_key(tmp_path, change, message):
    with pytest.raises(RecipeError, match=message):
        small_recipe(tmp_path, **change)


def test_fixed_params_enter_the_config_hash_only_where_set(tmp_path):
    plain = small_recipe(tmp_path)
    fixed = small_recipe(tmp_path, params={"tip_adapter": {"top_k": 8}})
    assert fixed.params == {"tip_adapter": {"top_k": 8}} and plain.params == {}
    assert fixed.config_hash("tip_adapter") != plain.config_hash("tip_adapter")
    assert fixed.config_hash("gda") == plain.config_hash("gda")


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



def test_rows_follow_the_data_behind_a_label_and_tables_show_one_configuration(tmp_path):
    from helpers import write_jpegs

    folder = tmp_path / "images"
    write_jpegs(folder, n_classes=2, per_class=12, seed=5)
    spec = {"name": "imagefolder", "root": str(folder), "label": "pets"}
    options = {"shots": [1], "seeds": [1], "views": 1, "adapters": ["zero_shot", "gda"], "grids": {}}
    first = compare(small_recipe(tmp_path, datasets=[spec], **options), progress=False)
    assert first.new_rows == 2 and first.stale_rows == 0
    assert compare(small_recipe(tmp_path, datasets=[spec], **options), progress=False).new_rows == 0

    write_jpegs(tmp_path / "more", n_classes=2, per_class=2, seed=9)  # more images behind the same label
    for path in (tmp_path / "more").rglob("*.jpg"):
        path.rename(folder / path.parent.name / f"extra-{path.name}")
    edited = compare(small_recipe(tmp_path, datasets=[spec], **options), progress=False)
    assert edited.new_rows == 2 and edited.rows_in_file == 4 and edited.stale_rows == 2
    assert len(edited.rows) == 2 and {r["data_sha256"] for r in edited.rows} != {r["data_sha256"] for r in first.rows}
    table = (tmp_path / "out" / "table.md").read_text()
    assert "2 row(s) of results.jsonl from another configuration of this recipe" in table
    assert table.count("| gda |") == 1

    reseeded = compare(small_recipe(tmp_path, datasets=[{**spec, "split_seed": 7}], **options), progress=False)
    assert reseeded.new_rows == 2 and reseeded.stale_rows == 4
    regridded = compare(small_recipe(tmp_path, datasets=[{**spec, "split_seed": 7}],
                                     **{**options, "views": 2}), progress=False)
    assert regridded.new_rows == 2 and len(regridded.rows) == 2 and all(r["views"] == 2 for r in regridded.rows)


def test_only_dataset_loads_only_what_it_selects(tmp_path):
    recipe = small_recipe(tmp_path, shots=[1], seeds=[1], views=1, adapters=["zero_shot"], grids={},
                          datasets=[{"name": "digits"}, {"name": "dtd", "root": str(tmp_path / "not-downloaded")}])
    with pytest.raises(ValueError, match="dtd"):
        compare(recipe, progress=False)
    result = compare(recipe, only={"dataset": {"digits"}}, progress=False)
    assert [r["dataset"] for r in result.rows] == ["digits"]


def test_small_splits_and_a_prompts_file_missing_a_class_are_refused_before_any_encoding(tmp_path, monkeypatch):
    import json

    from adaptkit import protocol
    from helpers import write_jpegs

    monkeypatch.setattr(protocol, "extract", lambda *a, **k: pytest.fail("nothing may be encoded"))
    write_jpegs(tmp_path / "small", n_classes=2, per_class=6)
    spec = {"name": "imagefolder", "root": str(tmp_path / "small"), "label": "small"}
    recipe = small_recipe(tmp_path, shots=[1, 4], seeds=[1], views=1, adapters=["zero_shot"], grids={},
                          datasets=[spec])
    with pytest.raises(ValueError, match=r"test.toml cannot be loaded:\n  small: its (train|val) split has fewer than "
                                         r"4 images in 2 class\(es\): 'class 0' \(\d\), 'class 1' \(\d\); shots up "
                                         r"to 4"):
        compare(recipe, progress=False)
    prompts = tmp_path / "cupl.json"
    digits_names = ak.datasets.load("digits").classnames
    prompts.write_text(json.dumps({name: [f"a photo of the number {name}."] for name in digits_names[:-1]}))
    recipe = small_recipe(tmp_path, shots=[1], seeds=[1], views=1, adapters=["zero_shot"], grids={},
                          datasets=[{"name": "digits", "templates": str(prompts)}])
    with pytest.raises(ValueError, match=rf"test.toml cannot be loaded:\n  digits: {prompts}: templates as a dict "
                                         rf"must give prompts for exactly the classes: missing \['{digits_names[-1]}'\]"):
        compare(recipe, progress=False)


def test_a_bom_deep_nesting_and_a_bad_template_file_get_clear_messages(tmp_path):
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + b'adapters = ["gda"]\n[[datasets]]\nname = "digits"\n'
                    b'[[backbones]]\nname = "adaptkit-tiny"\n')
    assert load_recipe(bom).adapters == ["gda"]
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(RecipeError, match="deep.toml: arrays or tables nested too deeply"):
        load_recipe(deep)
    templates = tmp_path / "prompts.txt"
    templates.write_text("a photo of a {}.\na {name} in the wild\n")
    recipe = tmp_path / "t.toml"
    recipe.write_text(f'adapters = ["gda"]\n[[datasets]]\nname = "digits"\ntemplates = "{templates}"\n'
                      '[[backbones]]\nname = "adaptkit-tiny"\n')
    with pytest.raises(RecipeError, match=r"prompts.txt: each template must contain exactly one .*'a \{name\} in the wild'"):
        load_recipe(recipe)
    templates.write_text("a photo of a {.\n")
    with pytest.raises(RecipeError, match=r"prompts.txt: template 'a photo of a \{.' is not a format string"):
        load_recipe(recipe)
