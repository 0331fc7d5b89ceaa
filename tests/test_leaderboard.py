"""ak.leaderboard: fit + tune the family on validation only, best first, skipped adapters explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adaptkit as ak
from adaptkit.adapters import ADAPTERS
from helpers import clip_like, family_inputs


@pytest.fixture
def problem():
    return clip_like(n_classes=8, dim=48, per_class=6, n_test=80, spread=1.0, text_noise=1.0, seed=4)


@pytest.mark.slow
def test_ranks_the_family_on_validation_and_best_equals_tuning_it_alone(problem, tune_calls):
    X, y, X_val, y_val, T = problem
    grids = {"tip_adapter": {"beta": [1.0, 4.0], "alpha": [0.5, 2.0]}, "ape": {"beta": [1.0, 3.0]}}
    inputs = {name: value for cls in ADAPTERS.values() for name, value in family_inputs(cls, X, X_val).items()}
    board = ak.leaderboard(X, y, X_val, y_val, text_weights=T, grids=grids, device="cpu", progress=False, **inputs)
    assert [r["adapter"] for r in board.rows] and not board.skipped
    assert sorted(r["adapter"] for r in board.rows) == sorted(ADAPTERS)
    scores = [r["val_accuracy"] for r in board.rows]
    assert scores == sorted(scores, reverse=True)
    assert len(tune_calls) == len(ADAPTERS)
    assert all(np.array_equal(Xs.numpy(), X_val) and np.array_equal(ys.numpy(), y_val) for Xs, ys in tune_calls)
    for row in board.rows:
        assert board.adapters[row["adapter"]].score(X_val, y_val) == pytest.approx(row["val_accuracy"], abs=1e-9)
        assert row["fit_seconds"] >= 0 and row["tune_seconds"] >= 0
    name = board.rows[0]["adapter"]
    assert board.best is board.adapters[name]
    for row in board.rows:
        cls = ADAPTERS[row["adapter"]]
        own = {k: v for k, v in inputs.items() if k in cls.fit_inputs}
        alone = ak.tune(cls(device="cpu").fit(X, y, text_weights=T, **own), X_val, y_val, grids.get(row["adapter"]))
        assert alone.tuning_results_["best_params"] == row["params"]
        torch.testing.assert_close(alone.logits(X_val), board.adapters[row["adapter"]].logits(X_val))
    table = board.to_markdown()
    assert table.splitlines()[2].startswith(f"| 1 | {name} | {100 * board.rows[0]['val_accuracy']:.2f} |")
    assert "<table>" in board._repr_html_() and name in board._repr_html_()


def test_adapters_needing_text_or_captions_are_skipped_with_a_note(problem):
    X, y, X_val, y_val, _ = problem
    board = ak.leaderboard(X, y, X_val, y_val, device="cpu", progress=False)
    for name, cls in ADAPTERS.items():
        runs = not cls.needs_text and not any(spec.required for spec in cls.fit_inputs.values())
        assert (name in board.adapters) == runs
        if cls.needs_text:
            assert "needs text_weights" in board.skipped[name]
        elif not runs:
            assert board.skipped[name].startswith(f"needs {next(iter(cls.fit_inputs))}")
    assert "Skipped: zero_shot (needs text_weights)" in board.to_markdown()


def test_subset_by_name_or_instance_and_bad_arguments(problem):
    X, y, X_val, y_val, T = problem
    board = ak.leaderboard(X, y, X_val, y_val, text_weights=T, adapters=["gda", ak.TipAdapter(top_k=5, device="cpu")],
                           progress=False)
    assert sorted(board.adapters) == ["gda", "tip_adapter"] and board.adapters["tip_adapter"].top_k == 5
    with pytest.raises(ValueError, match="adapters names 'gdaa'"):
        ak.leaderboard(X, y, X_val, y_val, adapters=["gdaa"])
    with pytest.raises(ValueError, match="grids names 'ape', which is not among the adapters"):
        ak.leaderboard(X, y, X_val, y_val, adapters=["gda"], grids={"ape": {"beta": [1.0]}})
    with pytest.raises(ValueError, match=r"grid\['alpha'\]\[0\]: The 'alpha' parameter of GDA"):
        ak.leaderboard(X, y, X_val, y_val, adapters=["gda"], grids={"gda": {"alpha": [-1.0]}})
    with pytest.raises(ValueError, match="none of the adapters could run"):
        ak.leaderboard(X, y, X_val, y_val, adapters=["zero_shot"])
    with pytest.raises(TypeError, match="list of names"):
        ak.leaderboard(X, y, X_val, y_val, adapters="gda")


def test_exact_proker_above_its_row_limit_is_skipped_and_the_nystrom_row_says_so(problem, monkeypatch):
    """Above EXACT_ROWS support rows (views flattened) the board skips the exact ProKeR with the
    reason; a ProKeR(rank=...) given explicitly runs, its row marked approximate, and equals tuning
    that configuration alone."""
    import adaptkit.adapters.proker as proker

    X, y, X_val, y_val, T = problem
    views = np.stack([X, X[::-1]], axis=1)
    monkeypatch.setattr(proker, "EXACT_ROWS", len(X) * 2 - 1)
    board = ak.leaderboard(views, y, X_val, y_val, text_weights=T, adapters=["gda", "proker"], progress=False)
    assert sorted(board.adapters) == ["gda"] and board.rows[0]["approximation"] is None
    assert board.skipped["proker"].startswith(f"the exact search over {2 * len(X)} support rows")
    assert "pass ProKeR(rank=...)" in board.skipped["proker"]
    approximate = ak.ProKeR(rank=20, device="cpu")
    grid = {"beta": [1.0, 3.0], "lam": [0.1, 1.0]}
    board = ak.leaderboard(views, y, X_val, y_val, text_weights=T, adapters=[approximate], grids={"proker": grid},
                           progress=False)
    (row,) = board.rows
    assert row["approximation"] == "Nyström, rank 20" and not board.skipped
    assert "proker (approximate: Nyström, rank 20)" in board.to_markdown()
    assert "proker (approximate: Nyström, rank 20)" in board._repr_html_()
    alone = ak.tune(ak.ProKeR(rank=20, device="cpu").fit(views, y, text_weights=T), X_val, y_val, grid)
    assert alone.tuning_results_["best_params"] == row["params"]
    fresh = ak.ProKeR(rank=20, device="cpu", **row["params"]).fit(views, y, text_weights=T)
    np.testing.assert_array_equal(board.best.decision_function(X_val), fresh.decision_function(X_val))
