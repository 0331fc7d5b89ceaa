"""scikit-learn compatibility: the estimator checks, cross-validation and grid search."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import adaptkit as ak
from adaptkit.adapters import APE, CaptionCache, ProKeR, TipX
from helpers import clip_like

# ZeroShot, TipX, APE, CaptionCache and TransductiveGDA need text weights (and CaptionCache
# captions) that scikit-learn's generic checks cannot pass, so only the adapters that work
# from (X, y) alone run the full suite.
TEXT_FREE = [ak.GDA(device="cpu"), ak.LinearProbe(device="cpu"), ak.TipAdapter(device="cpu"), ProKeR(device="cpu")]


@parametrize_with_checks(TEXT_FREE)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("adapter", [ak.ZeroShot(device="cpu"), ak.GDA(device="cpu"), ak.TipAdapter(device="cpu"),
                                     TipX(device="cpu"), APE(device="cpu"), ProKeR(device="cpu")])
def test_cross_val_score_passes_text_weights_through(adapter):
    X, y, _, _, T = clip_like(n_classes=10, dim=64, per_class=6, spread=0.5, text_noise=0.6)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    scores = cross_val_score(adapter, X, y, cv=folds, params={"text_weights": T})
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))
    manual = []
    for train, test in folds.split(X, y):
        manual.append(adapter.fit(X[train], y[train], text_weights=T).score(X[test], y[test]))
    np.testing.assert_allclose(scores, manual)


def test_grid_search_with_text_weights_and_sample_aligned_captions():
    X, y, _, _, T = clip_like(n_classes=10, dim=64, per_class=6, spread=0.5, text_noise=0.6)
    search = GridSearchCV(ak.GDA(device="cpu"), {"alpha": [1e-3, 1.0, 100.0]}, cv=3)
    search.fit(X, y, text_weights=T)
    assert search.best_params_["alpha"] in (1e-3, 1.0, 100.0)
    assert search.best_estimator_.text_weights_.shape == (10, 64)
    captions = X[::-1].copy()
    search = GridSearchCV(CaptionCache(device="cpu"), {"delta": [0.0, 0.5]}, cv=3)
    search.fit(X, y, text_weights=T, captions=captions)
    assert search.best_estimator_.caption_keys_.shape[0] == len(X)
