"""The cache engine's closed-form α sweep counts exactly what scoring each point does, ties included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import adaptkit as ak
import adaptkit.adapters.cache as cache
import adaptkit.adapters.sweep as sweep
from adaptkit.adapters import APE, CaptionCache, TipAdapter, TipX
from helpers import clip_like, family_inputs

ALPHAS = np.linspace(0.0, 4.0, 12).tolist()
GRIDS = {TipAdapter: {"beta": [1.0, 5.0]}, TipX: {"beta": [1.0, 5.0], "gamma": [0.0, 1.0]},
         APE: {"beta": [1.0, 5.0], "gamma": [0.0, 0.3]},
         CaptionCache: {"beta": [2.0], "delta": [0.0, 0.5], "gamma": [0.25]}}


def tie_problem(cls, **params):
    """Classes 0 and 1 share their text weight and their support images, so their logits tie
    exactly at every point (class 0 wins the tie, as argmax's first index does)."""
    X, y, X_val, y_val, T = clip_like(n_classes=8, dim=64, per_class=4, n_test=120, spread=1.1, text_noise=1.2,
                                      seed=11)
    T, X = T.copy(), X.copy()
    T[1], X[y == 1] = T[0], X[y == 0]
    return cls(device="cpu", **params).fit(X, y, text_weights=T, **family_inputs(cls, X, X_val)), X_val, y_val


def point_by_point(adapter, X_val, y_val, grid):
    """Correct counts from each point's own logits (the prediction path)."""
    names = list(grid)
    counts = []
    for values in itertools.product(*(grid[n] for n in names)):
        logits = adapter._with_params(dict(zip(names, values))).logits(X_val)
        counts.append(int((logits.argmax(dim=1) == torch.as_tensor(y_val)).sum()))
    return np.array(counts)


@pytest.fixture
def sweeps(monkeypatch):
    """The doubt masks of every sweep the engine scores in closed form."""
    seen = []

    def spy(*args):
        counts, doubt = sweep.sweep_counts(*args)
        seen.append(doubt)
        return counts, doubt

    monkeypatch.setattr(cache, "sweep_counts", spy)
    return seen


@pytest.mark.parametrize("cls", list(GRIDS), ids=lambda cls: cls.name)
@pytest.mark.parametrize("slack", [sweep.SLACK, 1.0])
def test_sweep_counts_equal_scoring_every_point(cls, slack, sweeps, monkeypatch):
    """At the shipped slack most queries are settled by their intervals and the tied ones are
    scored by the combine; with a slack of 1 every query is left in doubt and scored that way."""
    monkeypatch.setattr(sweep, "SLACK", slack)
    adapter, X_val, y_val = tie_problem(cls)
    grid = {**GRIDS[cls], "alpha": ALPHAS}
    tuned = ak.tune(adapter, X_val, y_val, grid)
    counts = np.rint(tuned.tuning_results_["val_accuracy"] * len(y_val)).astype(int)
    np.testing.assert_array_equal(counts, point_by_point(adapter, X_val, y_val, grid))
    assert sweeps, "the grid was not scored as sweeps"
    doubtful = sum(int(d.sum()) for d in sweeps)
    total = sum(d.numel() for d in sweeps)
    if slack == 1.0:
        assert doubtful > total // 2
    else:
        assert 0 < doubtful < total // 10


@pytest.mark.parametrize("cls", [TipAdapter, TipX], ids=lambda cls: cls.name)
def test_sparse_caches_sweep_exactly_too(cls, sweeps):
    adapter, X_val, y_val = tie_problem(cls, top_k=3)
    grid = {**GRIDS[cls], "alpha": ALPHAS}
    counts = np.rint(ak.tune(adapter, X_val, y_val, grid).tuning_results_["val_accuracy"] * len(y_val)).astype(int)
    np.testing.assert_array_equal(counts, point_by_point(adapter, X_val, y_val, grid))
    assert sweeps


def test_short_sweeps_and_redefined_combinations_are_scored_point_by_point(sweeps):
    adapter, X_val, y_val = tie_problem(TipAdapter)
    short = {"beta": [1.0], "alpha": ALPHAS[:cache.MIN_SWEEP - 1]}
    np.testing.assert_array_equal(np.rint(ak.tune(adapter, X_val, y_val, short).tuning_results_["val_accuracy"]
                                          * len(y_val)).astype(int), point_by_point(adapter, X_val, y_val, short))
    assert not sweeps

    class SquaredWeight(TipAdapter):
        """α enters squared: not the base + α · cache that a sweep assumes."""

        def _combine(self, shared, cache_term, params):
            return super()._combine(shared, cache_term, [{**p, "alpha": p["alpha"] ** 2} for p in params])

    adapter, X_val, y_val = tie_problem(SquaredWeight)
    grid = {"beta": [1.0], "alpha": ALPHAS}
    np.testing.assert_array_equal(np.rint(ak.tune(adapter, X_val, y_val, grid).tuning_results_["val_accuracy"]
                                          * len(y_val)).astype(int), point_by_point(adapter, X_val, y_val, grid))
    assert not sweeps
