"""ak.tune: the batched grid search equals a brute-force refit-and-score loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.base import clone

import adaptkit as ak
import adaptkit.adapters.base
import adaptkit.adapters.cache
from adaptkit.adapters import ADAPTERS, APE, ProKeR, TipX
from helpers import clip_like, family_inputs


def brute_force(adapter, X, y, T, X_val, y_val, grid):
    """Refit a clone at each grid point and score it on validation; the first best wins."""
    names = list(grid)
    best, best_score, scores = None, -1.0, []
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values))
        score = clone(adapter).set_params(**params).fit(X, y, text_weights=T).score(X_val, y_val)
        scores.append(score)
        if score > best_score:
            best, best_score = params, score
    return best, np.array(scores)


@pytest.mark.parametrize("adapter,grid", [
    (ak.GDA(device="cpu"), None),
    (ak.TipAdapter(device="cpu"), {"beta": [0.5, 1.0, 3.0, 5.0, 8.0], "alpha": [0.1, 1.0, 2.0, 4.0]}),
    (ak.LinearProbe(device="cpu"), {"C": [0.01, 0.1, 1.0]}),
])
def test_tune_equals_brute_force(adapter, grid):
    X, y, X_val, y_val, T = clip_like(n_classes=10, dim=64, per_class=4, n_test=80, spread=1.2, text_noise=1.5)
    fitted = adapter.fit(X, y, text_weights=T)
    grid_used = grid or type(adapter).param_grid
    tuned = ak.tune(fitted, X_val, y_val, grid=grid)
    best, scores = brute_force(adapter, X, y, T, X_val, y_val, grid_used)
    np.testing.assert_allclose(tuned.tuning_results_["val_accuracy"], scores, atol=1e-6)
    assert tuned.tuning_results_["best_params"] == best
    assert tuned.get_params()[next(iter(best))] == best[next(iter(best))]
    assert tuned.score(X_val, y_val) == pytest.approx(scores.max())


@pytest.mark.parametrize("adapter", [ak.TipAdapter(device="cpu"), ak.GDA(device="cpu"), ProKeR(device="cpu")])
def test_tune_chunks_the_grid_without_changing_the_result(adapter, monkeypatch):
    X, y, X_val, y_val, T = clip_like(n_classes=10, dim=64, per_class=4, n_test=60, spread=1.2, text_noise=1.5)
    fitted = adapter.fit(X, y, text_weights=T)
    grid = {name: values[:3] for name, values in type(adapter).param_grid.items()}
    whole = ak.tune(fitted, X_val, y_val, grid)
    monkeypatch.setattr(adaptkit.adapters.base, "MAX_LOGIT_ELEMENTS", 2 * 60 * 10)
    monkeypatch.setattr(adaptkit.adapters.cache, "BATCH_ELEMENTS", 2 * 60 * 10)
    monkeypatch.setattr(adaptkit.adapters.cache, "AFFINITY_ELEMENTS", {"cpu": 7 * 40, "cuda": 7 * 40})
    chunked = ak.tune(fitted, X_val, y_val, grid)
    np.testing.assert_array_equal(whole.tuning_results_["val_accuracy"], chunked.tuning_results_["val_accuracy"])
    assert chunked.score(X_val, y_val) == pytest.approx(chunked.tuning_results_["best_score"], abs=1e-9)


def test_tune_leaves_the_input_adapter_unchanged(clip_data):
    X, y, X_val, y_val, T = clip_data
    gda = ak.GDA(alpha=1.0, device="cpu").fit(X, y, text_weights=T)
    tuned = ak.tune(gda, X_val, y_val, {"alpha": [1e-4, 100.0]})
    assert gda.alpha == 1.0 and not hasattr(gda, "tuning_results_")
    assert tuned is not gda and tuned.alpha in (1e-4, 100.0)


def test_tune_rejects_bad_grids_and_labels(clip_data):
    X, y, X_val, y_val, T = clip_data
    gda = ak.GDA(device="cpu")
    with pytest.raises(Exception, match="not fitted"):
        ak.tune(gda, X_val, y_val)
    gda.fit(X, y, text_weights=T)
    with pytest.raises(ValueError, match="'gamma', which is not a parameter of GDA"):
        ak.tune(gda, X_val, y_val, {"gamma": [1.0]})
    with pytest.raises(ValueError, match=r"grid\['alpha'\] must be a non-empty list"):
        ak.tune(gda, X_val, y_val, {"alpha": []})
    with pytest.raises(ValueError, match=r"grid\['alpha'\]\[1\]: The 'alpha' parameter of GDA must be a float"):
        ak.tune(gda, X_val, y_val, {"alpha": [1.0, float("nan")]})
    with pytest.raises(ValueError, match="'device', which is where GDA computes"):
        ak.tune(gda, X_val, y_val, {"device": ["cpu"]})
    with pytest.raises(ValueError, match=r"y_val must hold class indices in \[0, 12\)"):
        ak.tune(gda, X_val, y_val + 12)
    with pytest.raises(TypeError, match="adapter must be an adaptkit adapter"):
        ak.tune(object(), X_val, y_val)


def test_tune_with_string_labels(clip_data):
    X, y, X_val, y_val, _ = clip_data
    names = np.array([f"c{i:02d}" for i in range(12)])
    tuned = ak.tune(ak.GDA(device="cpu").fit(X, names[y]), X_val, names[y_val])
    assert 0.0 <= tuned.tuning_results_["best_score"] <= 1.0
    with pytest.raises(ValueError, match="labels the adapter was not fitted on"):
        ak.tune(tuned, X_val, np.where(y_val == 0, "unknown", names[y_val]))


def test_zero_shot_has_nothing_to_tune(clip_data):
    X, y, X_val, y_val, T = clip_data
    tuned = ak.tune(ak.ZeroShot(device="cpu").fit(X, y, text_weights=T), X_val, y_val)
    assert tuned.tuning_results_["params"] == [{}]
    assert tuned.tuning_results_["best_score"] == pytest.approx(tuned.score(X_val, y_val))


FAMILY = list(ADAPTERS.values())
"""The registry, so an adapter of one's own is held to the tuning contract too."""

CUSTOM_AXES = {
    "alpha": [0.0, 0.7, 3.0], "beta": [0.5, 2.0, 9.0], "top_k": [None, 3, 30], "gamma": [0.0, 0.3, 1.5],
    "tau": [0.05, 0.5, 2.0], "n_channels": [8, 20, 64], "w_similarity": [0.0, 0.7, 2.0],
    "w_variance": [0.0, 0.3, 1.0], "lam": [0.003, 0.1, 5.0], "C": [0.01, 1.0, 50.0], "max_iter": [3, 50, 400],
    "delta": [0.0, 0.5, 1.0], "n_iter": [1, 3, 10], "tol": [0.0, 1e-4, 0.5],
}


def axis(cls, name):
    """Custom values of parameter ``name``: the table above, else the class's own grid."""
    return CUSTOM_AXES.get(name) or list(cls.param_grid[name])


def tunable(cls):
    return [n for n in cls._parameter_constraints if n != "device" and (n in CUSTOM_AXES or n in cls.param_grid)]


def family_problem(cls, seed=3):
    X, y, X_val, y_val, T = clip_like(n_classes=8, dim=64, per_class=5, n_test=90, spread=1.1, text_noise=1.2,
                                      seed=seed)
    inputs = family_inputs(cls, X, X_val)
    return (lambda adapter: adapter.fit(X, y, text_weights=T, **inputs)), X_val, y_val


def assert_tuned_is_the_chosen_point(cls, grid):
    fit, X_val, y_val = family_problem(cls)
    tuned = ak.tune(fit(cls(device="cpu")), X_val, y_val, grid)
    results = tuned.tuning_results_
    best = results["best_params"]
    assert results["best_score"] == results["val_accuracy"].max()
    assert results["params"].index(best) == int(np.argmax(results["val_accuracy"]))
    assert abs(tuned.score(X_val, y_val) - results["best_score"]) <= 1e-6
    fresh = fit(cls(device="cpu", **best))
    assert tuned.get_params() == fresh.get_params()
    np.testing.assert_allclose(tuned.logits(X_val).numpy(), fresh.logits(X_val).numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("cls", FAMILY, ids=lambda cls: cls.name)
def test_tuned_adapter_is_a_fresh_fit_at_its_chosen_point_default_grid(cls):
    assert_tuned_is_the_chosen_point(cls, None)


@pytest.mark.parametrize("cls,name", [(cls, name) for cls in FAMILY for name in tunable(cls)],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_tuned_adapter_is_a_fresh_fit_at_its_chosen_point_custom_grid(cls, name):
    assert_tuned_is_the_chosen_point(cls, {name: axis(cls, name)})


@pytest.mark.parametrize("cls", [cls for cls in FAMILY if tunable(cls)], ids=lambda cls: cls.name)
def test_tuned_adapter_over_every_parameter_at_once(cls):
    assert_tuned_is_the_chosen_point(cls, {n: axis(cls, n)[1:] for n in tunable(cls)})


def test_state_parameters_are_refitted_not_just_set():
    """ProKeR's coefficients, APE's channels and TIP-X's signatures follow the chosen point."""
    fit, X_val, y_val = family_problem(ProKeR)
    proker = fit(ProKeR(beta=1.0, lam=0.1, device="cpu"))
    tuned = ak.tune(proker, X_val, y_val, {"lam": [5.0]})
    assert not torch.equal(tuned.coef_, proker.coef_)
    fit, X_val, y_val = family_problem(APE)
    ape = ak.tune(fit(APE(n_channels=4, device="cpu")), X_val, y_val, {"n_channels": [32]})
    assert ape.channels_.numel() == 32
    fit, X_val, y_val = family_problem(TipX)
    tipx = fit(TipX(tau=0.5, device="cpu"))
    tuned = ak.tune(tipx, X_val, y_val, {"tau": [0.05]})
    assert not torch.allclose(tuned.key_log_signatures_, tipx.key_log_signatures_)


def test_grid_axes_accept_numpy_arrays_and_an_empty_grid_scores_as_is(clip_data):
    X, y, X_val, y_val, T = clip_data
    gda = ak.GDA(alpha=2.0, device="cpu").fit(X, y, text_weights=T)
    from_array = ak.tune(gda, X_val, y_val, {"alpha": np.array([0.1, 1.0, 10.0])})
    from_list = ak.tune(gda, X_val, y_val, {"alpha": [0.1, 1.0, 10.0]})
    assert from_array.tuning_results_["params"] == from_list.tuning_results_["params"]
    assert all(type(p["alpha"]) is float for p in from_array.tuning_results_["params"])
    as_is = ak.tune(gda, X_val, y_val, {})
    assert as_is.tuning_results_["params"] == [{}] and as_is.alpha == 2.0
    assert as_is.tuning_results_["best_score"] == pytest.approx(gda.score(X_val, y_val))
    with pytest.raises(ValueError, match="1-D list"):
        ak.tune(gda, X_val, y_val, {"alpha": np.ones((2, 2))})
