"""Adapters against slow, obviously-correct references (per-class and per-sample loops, numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import adaptkit as ak
from helpers import clip_like, family_inputs, normalize

ADAPTERS = list(ak.adapters.ADAPTERS.values())
"""The registry, so an adapter of one's own is API-checked too."""


def assert_logits_close(actual, expected, rtol=1e-4):
    """Agreement within ``rtol`` relative to the largest reference logit."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def gda_reference(X, y, T, X_test, alpha):
    """The official GDA estimator written with loops in float64."""
    X, T, X_test = X.astype(np.float64), T.astype(np.float64), X_test.astype(np.float64)
    n_classes, dim = T.shape
    means = np.stack([X[y == c].mean(axis=0) for c in range(n_classes)])
    centred = np.concatenate([X[y == c] - means[c] for c in range(n_classes)])
    cov = np.cov(centred, rowvar=False)
    precision = dim * np.linalg.pinv((centred.shape[0] - 1) * cov + np.trace(cov) * np.eye(dim))
    logits = np.zeros((len(X_test), n_classes))
    for i, x in enumerate(X_test):
        for c in range(n_classes):
            w = precision @ means[c]
            b = np.log(1.0 / n_classes) - 0.5 * means[c] @ precision @ means[c]
            logits[i, c] = 100.0 * x @ T[c] + alpha * (x @ w + b)
    return logits


def tip_reference(keys, key_labels, T, X_test, alpha, beta):
    """Tip-Adapter logits with explicit loops over test samples and cache entries."""
    n_classes = T.shape[0]
    logits = 100.0 * X_test.astype(np.float64) @ T.astype(np.float64).T
    for i, x in enumerate(X_test.astype(np.float64)):
        for key, label in zip(keys.astype(np.float64), key_labels):
            logits[i, label] += alpha * np.exp(-beta * (1.0 - x @ key))
    assert logits.shape[1] == n_classes
    return logits


@pytest.mark.parametrize("dim,n_classes", [(64, 10), (128, 16)])
@pytest.mark.parametrize("alpha", [0.1, 10.0])
def test_gda_matches_reference(dim, n_classes, alpha):
    X, y, X_test, _, T = clip_like(n_classes=n_classes, dim=dim, per_class=6, seed=dim)
    clf = ak.GDA(alpha=alpha, device="cpu").fit(X, y, text_weights=T)
    assert_logits_close(clf.decision_function(X_test), gda_reference(X, y, T, X_test, alpha))


def test_gda_with_fewer_samples_than_dimensions_matches_pinv_reference():
    X, y, X_test, _, T = clip_like(n_classes=10, dim=96, per_class=2, seed=3)
    clf = ak.GDA(alpha=1.0, device="cpu").fit(X, y, text_weights=T)
    assert_logits_close(clf.decision_function(X_test), gda_reference(X, y, T, X_test, 1.0))


def test_gda_one_shot_without_views_has_zero_covariance_and_reduces_to_prior():
    X, y, X_test, _, T = clip_like(n_classes=10, dim=64, per_class=1)
    clf = ak.GDA(alpha=1.0, device="cpu").fit(X, y, text_weights=T)
    assert torch.count_nonzero(clf.precision_) == 0
    assert_logits_close(clf.decision_function(X_test), 100.0 * X_test @ T.T + np.log(0.1))


def test_gda_uses_every_view_as_a_sample():
    X, y, X_test, _, T = clip_like(n_classes=10, dim=64, per_class=4)
    rng = np.random.default_rng(1)
    views = normalize(X[:, None, :] + 0.05 * rng.normal(size=(len(X), 3, X.shape[1]))).astype(np.float32)
    three_d = ak.GDA(device="cpu").fit(views, y, text_weights=T)
    flat = ak.GDA(device="cpu").fit(views.reshape(-1, X.shape[1]), np.repeat(y, 3), text_weights=T)
    assert_logits_close(three_d.decision_function(X_test), flat.decision_function(X_test))


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.5, 5.5)])
def test_tip_adapter_matches_reference(alpha, beta):
    X, y, X_test, _, T = clip_like(n_classes=12, dim=64, per_class=4, n_test=40)
    clf = ak.TipAdapter(alpha=alpha, beta=beta, device="cpu").fit(X, y, text_weights=T)
    assert_logits_close(clf.decision_function(X_test), tip_reference(X, y, T, X_test, alpha, beta))


def test_tip_adapter_averages_views_into_keys():
    X, y, X_test, _, T = clip_like(n_classes=10, dim=64, per_class=2, n_test=30)
    rng = np.random.default_rng(2)
    views = normalize(X[:, None, :] + 0.1 * rng.normal(size=(len(X), 4, X.shape[1]))).astype(np.float32)
    keys = normalize(views.mean(axis=1))
    clf = ak.TipAdapter(alpha=1.5, beta=3.0, device="cpu").fit(views, y, text_weights=T)
    assert_logits_close(clf.decision_function(X_test), tip_reference(keys, y, T, X_test, 1.5, 3.0))


def test_zero_shot_is_scaled_cosine():
    X, y, X_test, _, T = clip_like()
    clf = ak.ZeroShot(device="cpu").fit(X, y, text_weights=T)
    assert_logits_close(clf.decision_function(X_test), 100.0 * X_test.astype(np.float64) @ T.T)
    with pytest.raises(ValueError, match="text_weights"):
        ak.ZeroShot().fit(X, y)


def test_linear_probe_matches_sklearn_pipeline():
    X, y, X_test, _, _ = clip_like(n_classes=10, dim=64, per_class=6)
    clf = ak.LinearProbe(C=0.5, device="cpu").fit(X, y)
    scaler = StandardScaler().fit(X.astype(np.float64))
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(scaler.transform(X.astype(np.float64)), y)
    expected = reference.decision_function(scaler.transform(X_test.astype(np.float64)))
    assert_logits_close(clf.decision_function(X_test), expected, rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(X_test), reference.predict(scaler.transform(X_test)))


@pytest.mark.parametrize("work_limit,expected", [(1 << 30, 1), (1, "torch")])
def test_linear_probe_fits_on_one_blas_thread_below_its_work_limit(monkeypatch, work_limit, expected):
    """Small fits run numpy's BLAS on one thread (its threads cost more than they save there),
    larger ones on torch's thread count."""
    import threadpoolctl

    import adaptkit.adapters.linear_probe as linear_probe

    seen = []
    fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, *a, **k: (
        seen.extend(info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"),
        fit(self, *a, **k))[1])
    monkeypatch.setattr(linear_probe, "SERIAL_BLAS_WORK", work_limit)
    X, y, _, _, _ = clip_like(n_classes=10, dim=64, per_class=6)
    ak.LinearProbe(device="cpu").fit(X, y)
    limit = torch.get_num_threads() if expected == "torch" else expected
    assert seen and all(threads <= limit for threads in seen)
    assert expected == "torch" or all(threads == 1 for threads in seen)


def test_string_labels_without_text_weights():
    X, y, X_test, y_test, _ = clip_like(n_classes=10)
    names = np.array([f"class-{i}" for i in range(10)])
    clf = ak.GDA(device="cpu").fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    assert set(clf.predict(X_test)) <= set(names)
    assert clf.score(X_test, names[y_test]) > 0.5


@pytest.mark.parametrize("cls", ADAPTERS, ids=lambda cls: cls.name)
def test_sklearn_api(cls, clip_data):
    X, y, X_test, y_test, T = clip_data
    inputs = family_inputs(cls, X, X_test)
    adapter = cls(device="cpu")
    with pytest.raises(NotFittedError):
        adapter.predict(X_test)
    params = adapter.get_params()
    assert clone(adapter).get_params() == params
    fitted = adapter.fit(X, y, text_weights=T, **inputs)
    assert fitted is adapter
    proba = adapter.predict_proba(X_test)
    assert proba.shape == (len(X_test), T.shape[0]) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    logits = adapter.logits(torch.from_numpy(X_test))
    assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32
    np.testing.assert_array_equal(adapter.predict(X_test), logits.argmax(dim=1).numpy())
    assert adapter.score(X_test, y_test) == pytest.approx((adapter.predict(X_test) == y_test).mean())
    assert not hasattr(clone(adapter), "classes_")


@pytest.mark.parametrize("cls", ADAPTERS, ids=lambda cls: cls.name)
def test_bad_input_names_the_argument(cls, clip_data):
    X, y, X_test, _, T = clip_data
    inputs = family_inputs(cls, X, X_test)
    adapter = cls(device="cpu")
    with pytest.raises(ValueError, match="text_weights has dimension 32 but the image features have 64"):
        adapter.fit(X, y, text_weights=T[:, :32], **inputs)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 12\)"):
        adapter.fit(X, np.where(y == 0, 12, y), text_weights=T, **inputs)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 12\)"):
        adapter.fit(X, y - 1, text_weights=T, **inputs)
    bad = X.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinite"):
        adapter.fit(bad, y, text_weights=T, **inputs)
    with pytest.raises(ValueError, match="X must be a 2/3-D array"):
        adapter.fit(X[:, 0], y, text_weights=T, **inputs)
    with pytest.raises(ValueError, match=r"y must have shape \(96,\)"):
        adapter.fit(X, y[:-1], text_weights=T, **inputs)
    with pytest.raises(TypeError, match="X must be a numpy array or torch tensor"):
        adapter.fit("features", y, text_weights=T, **inputs)
    adapter.fit(X, y, text_weights=T, **inputs)
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        adapter.predict(X_test[0])
    with pytest.raises(ValueError, match=r"X has 32 features, but \w+ is expecting 64 features as input"):
        adapter.predict(X_test[:, :32])
    inf = X_test.copy()
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        adapter.decision_function(inf)


def test_gda_needs_every_class_with_text_weights(clip_data):
    X, y, _, _, T = clip_data
    keep = y != 4
    with pytest.raises(ValueError, match=r"classes \[4\] have none"):
        ak.GDA().fit(X[keep], y[keep], text_weights=T)
