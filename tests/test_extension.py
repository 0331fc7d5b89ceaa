"""An adapter of one's own (tests/user_adapter.py, registered by its import) is a full member of
the family with no edit to adaptkit: registry, leaderboard, compare recipes, files, CLI."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import adaptkit as ak
from adaptkit.adapters import ADAPTERS, Adapter, registry
from adaptkit.cli import app
from adaptkit.protocol import compare
from adaptkit.recipes import parse_recipe
from helpers import clip_like
from user_adapter import SoftCentroids

README = Path(__file__).parent.parent / "README.md"


def test_a_user_module_adapter_is_registered_by_its_definition():
    assert ADAPTERS["soft_centroids"] is SoftCentroids
    assert registry.by_class_name()["SoftCentroids"] is SoftCentroids
    assert ak.adapters.make_adapter("soft_centroids", alpha=2.0).alpha == 2.0


def test_registry_parametrised_tests_cover_it():
    import test_adapter_file
    import test_bad_inputs
    import test_tuning

    assert SoftCentroids in test_adapter_file.ALL and SoftCentroids in test_tuning.FAMILY
    assert any(cls is SoftCentroids for cls, _, _ in test_bad_inputs.REGISTRY_CASES)


def test_it_ranks_in_the_leaderboard_like_tuning_it_alone():
    X, y, X_val, y_val, T = clip_like(n_classes=6, dim=32, per_class=5, n_test=60, seed=2)
    board = ak.leaderboard(X, y, X_val, y_val, text_weights=T, adapters=["gda", "soft_centroids"],
                           unlabeled=X_val, device="cpu", progress=False)
    row = next(r for r in board.rows if r["adapter"] == "soft_centroids")
    alone = ak.tune(SoftCentroids(device="cpu").fit(X, y, text_weights=T, unlabeled=X_val), X_val, y_val)
    assert row["params"] == alone.tuning_results_["best_params"]
    torch.testing.assert_close(board.adapters["soft_centroids"].logits(X_val), alone.logits(X_val))
    skipped = ak.leaderboard(X, y, X_val, y_val, text_weights=T, adapters=["gda", "soft_centroids"], device="cpu",
                             progress=False)
    assert skipped.skipped == {"soft_centroids": "needs unlabeled: unlabeled features (M, D), e.g. the test set's"}
    with pytest.raises(TypeError, match=r"inputs \['unlabelled'\] that no adapter declares"):
        ak.leaderboard(X, y, X_val, y_val, text_weights=T, unlabelled=X_val, progress=False)


def test_it_round_trips_bit_identically_through_save_and_ak_load(tmp_path):
    X, y, X_val, _, T = clip_like(n_classes=6, dim=32, per_class=5, n_test=60, seed=2)
    fitted = SoftCentroids(alpha=0.7, device="cpu").fit(X, y, text_weights=T, unlabeled=X_val)
    fitted.save(tmp_path / "mine.safetensors")
    loaded = ak.load(tmp_path / "mine.safetensors", device="cpu")
    assert type(loaded) is SoftCentroids and loaded.class_counts_ == fitted.class_counts_ == [5] * 6
    assert torch.equal(loaded.logits(X_val), fitted.logits(X_val))


@pytest.mark.slow
def test_it_runs_in_a_compare_recipe_and_from_the_cli(tmp_path):
    data = {"output": str(tmp_path / "out"), "shots": [2], "seeds": [1], "views": 1,
            "adapters": ["zero_shot", "soft_centroids"], "datasets": [{"name": "digits"}],
            "backbones": [{"name": "adaptkit-tiny"}], "cache_dir": str(tmp_path / "cache"),
            "grids": {"soft_centroids": {"alpha": [0.5, 1.0]}}}
    result = compare(parse_recipe(data, "mine.toml", base=tmp_path), progress=False)
    rows = {row["adapter"]: row for row in result.rows}
    assert set(rows) == {"zero_shot", "soft_centroids"} and rows["soft_centroids"]["params"]["alpha"] in (0.5, 1.0)
    assert "| soft_centroids |" in (tmp_path / "out" / "table.md").read_text()
    out = CliRunner().invoke(app, ["demo", "--adapters", "soft_centroids,gda", "--shots", "1", "--seeds", "1",
                                   "--views", "1", "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert out.exit_code == 0, out.output
    assert re.search(r"\| soft_centroids \| \d+\.\d\d ± 0\.00 \|", out.output)
    bad = CliRunner().invoke(app, ["demo", "--adapters", "nope"])
    assert bad.exit_code == 2 and "unknown adapter nope" in bad.output


def test_a_recipe_imports_the_module_that_defines_its_adapter(tmp_path):
    (tmp_path / "recipe_side_adapters.py").write_text(
        "from adaptkit.adapters import ZeroShot\n\nclass RecipeSideZeroShot(ZeroShot):\n"
        "    name = 'recipe_side_zero_shot'\n")
    data = {"imports": ["recipe_side_adapters"], "adapters": ["recipe_side_zero_shot"],
            "datasets": [{"name": "digits"}], "backbones": [{"name": "adaptkit-tiny"}]}
    try:
        assert parse_recipe(data, "r.toml", base=tmp_path).imports == ["recipe_side_adapters"]
        assert "recipe_side_zero_shot" in ADAPTERS
    finally:
        ADAPTERS.pop("recipe_side_zero_shot", None)
        sys.modules.pop("recipe_side_adapters", None)
    with pytest.raises(ValueError, match=r"r.toml: imports\[0\]: cannot import 'no_such_module_here'"):
        parse_recipe({**data, "imports": ["no_such_module_here"]}, "r.toml", base=tmp_path)


def test_registration_refuses_taken_and_malformed_names():
    with pytest.raises(ValueError, match="adapter name 'gda' .* is taken by adaptkit.adapters.gda.GDA"):
        type("OtherGDA", (Adapter,), {"name": "gda", "__module__": "elsewhere"})
    with pytest.raises(ValueError, match="must be a lower-case identifier"):
        type("Bad", (Adapter,), {"name": "Not valid", "__module__": "elsewhere"})
    unnamed = type("Unnamed", (ak.GDA,), {"__module__": "elsewhere"})
    assert unnamed.name is None and "Unnamed" not in registry.by_class_name()
    X, y, _, _, T = clip_like(n_classes=3, dim=8, per_class=3)
    with pytest.raises(ValueError, match="Unnamed is not registered"):
        unnamed(device="cpu").fit(X, y, text_weights=T).save("never-written.safetensors")


def test_a_fitted_attribute_the_class_does_not_declare_is_refused_at_save(tmp_path):
    X, y, X_val, _, T = clip_like(n_classes=3, dim=8, per_class=3)
    fitted = SoftCentroids(device="cpu").fit(X, y, text_weights=T, unlabeled=X_val)
    fitted.notes_ = {"free": "form"}
    with pytest.raises(ValueError, match=r"SoftCentroids.notes_ \(dict\) is not declared in its fitted_attributes"):
        fitted.save(tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def readme_block(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```\n<!-- /{marker} -->", README.read_text(), re.S)
    assert match, f"README has no <!-- {marker} --> python block"
    return match.group(1)


def test_readme_own_adapter_snippet_runs_as_written():
    """README's "Add your own adapter" block, executed in a module namespace of its own, with
    the tiny random-init backbone's features of the digits set standing in for real ones."""
    namespace = {"__name__": "readme_own_adapter"}
    try:
        exec(compile(readme_block("own-adapter"), "README own-adapter", "exec"), namespace)
        cls = ADAPTERS[namespace["EXAMPLE_NAME"]]
        X, y, X_val, y_val, T = clip_like(n_classes=5, dim=16, per_class=4, n_test=40)
        board = ak.leaderboard(X, y, X_val, y_val, text_weights=T, adapters=["zero_shot", cls.name], device="cpu",
                               progress=False)
        assert cls.name in board.adapters
        assert np.isfinite(board.adapters[cls.name].decision_function(X_val)).all()
    finally:
        for name in [n for n, c in ADAPTERS.items() if c.__module__ == "readme_own_adapter"]:
            del ADAPTERS[name]
