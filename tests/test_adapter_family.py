"""TIP-X, APE, ProKeR, the caption cache and the GDA variants against slow loop references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from test_adapters import assert_logits_close

import adaptkit as ak
from adaptkit.adapters import APE, CaptionCache, ProKeR, TipX, TransductiveGDA, synthesize_new_classes
from helpers import clip_like, normalize


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def data(seed=0, n_classes=10, dim=64, per_class=3, n_test=25):
    X, y, X_test, _, T = clip_like(n_classes=n_classes, dim=dim, per_class=per_class, n_test=n_test,
                                   spread=0.5, text_noise=0.6, seed=seed)
    return X.astype(np.float64), y, X_test.astype(np.float64), T.astype(np.float64)


def cache_reference(keys, key_labels, T, X_test, alpha, beta, gamma, tau, caption_keys=None, delta=0.0):
    """Zero-shot + cache + KL-signature logits with explicit loops (TIP-X / caption cache)."""
    n_classes = T.shape[0]
    logits = np.zeros((len(X_test), n_classes))
    key_sigs = [softmax(k @ T.T / tau) for k in keys]
    for i, x in enumerate(X_test):
        q = softmax(x @ T.T / tau)
        kl = np.array([np.sum(q * np.log(q / s)) for s in key_sigs])
        scaled = 1.0 - (kl - kl.min()) / (kl.max() - kl.min())
        for c in range(n_classes):
            logits[i, c] = 100.0 * x @ T[c]
        for j, label in enumerate(key_labels):
            affinity = x @ keys[j]
            if caption_keys is not None:
                affinity = (1 - delta) * affinity + delta * x @ caption_keys[j]
            logits[i, label] += alpha * np.exp(-beta * (1.0 - affinity)) + gamma * scaled[j]
    return logits


@pytest.mark.parametrize("alpha,beta,gamma", [(1.0, 2.0, 0.5), (2.5, 5.0, 1.5)])
def test_tip_x_matches_reference(alpha, beta, gamma):
    X, y, X_test, T = data(seed=1)
    clf = TipX(alpha=alpha, beta=beta, gamma=gamma, device="cpu").fit(X, y, text_weights=T)
    assert_logits_close(clf.decision_function(X_test), cache_reference(X, y, T, X_test, alpha, beta, gamma, 0.5))


def test_tip_x_prediction_does_not_depend_on_the_batch():
    X, y, X_test, T = data(seed=2)
    clf = TipX(gamma=1.0, device="cpu").fit(X, y, text_weights=T)
    whole = clf.decision_function(X_test)
    one_by_one = np.concatenate([clf.decision_function(X_test[i:i + 1]) for i in range(len(X_test))])
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-5, atol=1e-4)


def test_caption_cache_matches_reference_and_encodes_strings(tiny):
    X, y, X_test, T = data(seed=3)
    captions = normalize(X + 0.3 * np.random.default_rng(0).normal(size=X.shape))
    clf = CaptionCache(alpha=1.5, beta=3.0, gamma=0.5, delta=0.4, device="cpu")
    clf.fit(X, y, text_weights=T, captions=captions)
    expected = cache_reference(X, y, T, X_test, 1.5, 3.0, 0.5, 0.5, caption_keys=captions, delta=0.4)
    assert_logits_close(clf.decision_function(X_test), expected)
    strings = [f"a photo of a thing number {i}" for i in range(8)]
    Xt, yt = tiny.encode_texts(strings), np.arange(8) % 2
    Tt = tiny.encode_texts(["zero", "one"])
    from_strings = CaptionCache(device="cpu").fit(Xt, yt, text_weights=Tt, captions=strings, backbone=tiny)
    key_order = np.argsort(yt, kind="stable")
    torch.testing.assert_close(from_strings.caption_keys_, tiny.encode_texts(strings)[key_order])
    with pytest.raises(ValueError, match="needs captions"):
        CaptionCache().fit(X, y, text_weights=T)
    with pytest.raises(ValueError, match="one caption per support image"):
        CaptionCache(device="cpu").fit(X, y, text_weights=T, captions=captions[:-1])
    with pytest.raises(ValueError, match="need backbone="):
        CaptionCache().fit(X, y, text_weights=T, captions=["a"] * len(X))


def ape_reference(keys, key_labels, T, X_test, alpha, beta, gamma, n_channels, w_s=0.7, w_v=0.3):
    """APE with the paper's criterion written channel by channel and class pair by class pair."""
    n_classes, dim = T.shape
    class_means = []
    for c in range(n_classes):
        members = np.vstack([T[c][None], keys[key_labels == c]])
        class_means.append(members.mean(axis=0))
    criterion = np.zeros(dim)
    for k in range(dim):
        pairs = [class_means[i][k] * class_means[j][k] for i in range(n_classes) for j in range(n_classes) if i != j]
        criterion[k] = -w_s * np.mean(pairs) + w_v * np.var(T[:, k], ddof=1)
    channels = np.sort(np.argsort(-criterion, kind="stable")[:n_channels])
    refined_keys = normalize(keys[:, channels])
    refined_text = normalize(T[:, channels])
    weights = []
    for j, label in enumerate(key_labels):
        p = softmax(refined_keys[j] @ refined_text.T)
        onehot = np.eye(n_classes)[label]
        divergence = np.sum(onehot * np.log2((onehot + 1e-6) / (p + 1e-6)))
        weights.append(np.exp(gamma * divergence))
    logits = 100.0 * X_test @ T.T
    for i, x in enumerate(X_test):
        xr = normalize(x[channels])
        for j, label in enumerate(key_labels):
            logits[i, label] += alpha * np.exp(-beta * (1.0 - xr @ refined_keys[j])) * weights[j]
    return logits, channels


@pytest.mark.parametrize("n_channels", [20, 48])
def test_ape_matches_reference(n_channels):
    X, y, X_test, T = data(seed=4)
    clf = APE(alpha=2.0, beta=4.0, gamma=0.3, n_channels=n_channels, device="cpu").fit(X, y, text_weights=T)
    expected, channels = ape_reference(X, y, T, X_test, 2.0, 4.0, 0.3, n_channels)
    np.testing.assert_array_equal(clf.channels_.numpy(), channels)
    assert_logits_close(clf.decision_function(X_test), expected)
    with pytest.raises(ValueError, match=r"n_channels must lie in \[1, 64\]"):
        APE(n_channels=100, device="cpu").fit(X, y, text_weights=T)


@pytest.mark.parametrize("beta,lam", [(1.0, 0.1), (5.0, 2.0)])
def test_proker_matches_kernel_ridge_reference(beta, lam):
    X, y, X_test, T = data(seed=5, per_class=4)
    clf = ProKeR(beta=beta, lam=lam, device="cpu").fit(X, y, text_weights=T)
    kernel = np.exp(-beta * (1.0 - X @ X.T))
    targets = np.eye(T.shape[0])[y] - X @ T.T
    coef = np.linalg.solve(kernel / lam + np.eye(len(X)), targets)
    expected = X_test @ T.T + np.exp(-beta * (1.0 - X_test @ X.T)) @ coef
    assert_logits_close(clf.decision_function(X_test), expected)


def test_proker_without_text_is_plain_kernel_ridge():
    X, y, X_test, _ = data(seed=6)
    clf = ProKeR(beta=2.0, lam=0.5, device="cpu").fit(X, y)
    kernel = np.exp(-2.0 * (1.0 - X @ X.T))
    coef = np.linalg.solve(kernel / 0.5 + np.eye(len(X)), np.eye(10)[y])
    assert_logits_close(clf.decision_function(X_test), np.exp(-2.0 * (1.0 - X_test @ X.T)) @ coef)


def nystrom_reference(X, y, T, X_test, beta, lam, landmarks):
    """ProKeR's Nyström logits in float64 from the formula: Φ = K_SL R⁻ᵀ with R Rᵀ = K_LL + εI,
    coefficients R⁻ᵀ (ΦᵀΦ / λ + I)⁻¹ Φᵀ (Y − f₀(S)) over the landmarks."""
    def kernel(A, B):
        return np.exp(-beta * (1.0 - A @ B.T))

    centres = X[landmarks]
    factor = np.linalg.cholesky(kernel(centres, centres) + 1e-5 * np.eye(len(landmarks)))
    features = kernel(X, centres) @ np.linalg.inv(factor).T
    targets = np.eye(T.shape[0])[y] - X @ T.T
    inner = np.linalg.solve(features.T @ features / lam + np.eye(len(landmarks)), features.T @ targets)
    return X_test @ T.T + kernel(X_test, centres) @ np.linalg.inv(factor).T @ inner


@pytest.mark.parametrize("beta,lam", [(1.0, 0.1), (5.0, 2.0)])
def test_proker_nystrom_matches_its_formula(beta, lam):
    X, y, X_test, T = data(seed=5, per_class=4)
    clf = ProKeR(beta=beta, lam=lam, rank=15, random_state=3, device="cpu").fit(X, y, text_weights=T)
    landmarks = clf.landmarks_.numpy()
    assert len(landmarks) == 15 and len(set(landmarks)) == 15 and (np.diff(landmarks) > 0).all()
    assert clf.coef_.shape == (15, 10) and clf._approximation() == "Nyström, rank 15"
    assert_logits_close(clf.decision_function(X_test), nystrom_reference(X, y, T, X_test, beta, lam, landmarks))
    again = ProKeR(beta=beta, lam=lam, rank=15, random_state=3, device="cpu").fit(X, y, text_weights=T)
    other = ProKeR(beta=beta, lam=lam, rank=15, random_state=4, device="cpu").fit(X, y, text_weights=T)
    assert np.array_equal(again.landmarks_.numpy(), landmarks)
    assert not np.array_equal(other.landmarks_.numpy(), landmarks)


def test_proker_nystrom_over_every_row_is_the_exact_solution():
    X, y, X_test, T = data(seed=5, per_class=4)
    exact = ProKeR(beta=2.0, lam=0.5, device="cpu").fit(X, y, text_weights=T)
    full = ProKeR(beta=2.0, lam=0.5, rank=10_000, device="cpu").fit(X, y, text_weights=T)
    assert full.landmarks_.tolist() == list(range(len(X))) and "landmarks_" not in vars(exact)
    assert_logits_close(full.decision_function(X_test), exact.decision_function(X_test), rtol=1e-3)
    assert "landmarks_" not in vars(clone(full).set_params(rank=None).fit(X, y, text_weights=T))


@pytest.mark.parametrize("adapter,grid", [
    (TipX(device="cpu"), {"beta": [1.0, 3.0], "alpha": [0.5, 2.0], "gamma": [0.0, 1.0]}),
    (APE(device="cpu"), {"beta": [1.0, 3.0], "gamma": [0.0, 0.3], "alpha": [0.5, 2.0]}),
    (ProKeR(device="cpu"), {"beta": [1.0, 3.0], "lam": [0.01, 0.3, 2.0]}),
    (ProKeR(rank=12, device="cpu"), {"beta": [1.0, 3.0], "lam": [0.01, 0.3, 2.0]}),
    (CaptionCache(device="cpu"), {"beta": [1.0, 3.0], "delta": [0.0, 0.5], "alpha": [1.0], "gamma": [0.5]}),
])
def test_batched_grid_equals_one_refit_per_point(adapter, grid):
    X, y, X_test, T = data(seed=7)
    extra = {"captions": normalize(X[::-1].copy())} if adapter.fit_inputs else {}
    adapter.fit(X, y, text_weights=T, **extra)
    candidates = [dict(zip(grid, values)) for values in np.array(np.meshgrid(*grid.values(), indexing="ij"))
                  .reshape(len(grid), -1).T]
    batched = adapter._grid_logits(torch.as_tensor(X_test, dtype=torch.float32), candidates)
    for logits, params in zip(batched, candidates):
        refit = clone(adapter).set_params(**params).fit(X, y, text_weights=T, **extra)
        assert_logits_close(logits.numpy(), refit.decision_function(X_test))


def test_synthesized_new_classes_match_reference():
    X, y, _, T = data(seed=8, n_classes=10, per_class=8)
    X_test, T_new = data(seed=9, n_classes=4)[2:]
    base = ak.GDA(alpha=0.5, device="cpu").fit(X, y, text_weights=T)
    new = synthesize_new_classes(base, X, T_new, k=12, text_repeat=4)
    dim = X.shape[1]
    means, precisions = [], []
    for w in T_new:
        top = X[np.argsort(-(X @ w), kind="stable")[:12]]
        means.append((top.sum(axis=0) + 4 * w) / 16)
        cov = (top - w).T @ (top - w) / 11
        precisions.append(dim * np.linalg.pinv(11 * cov + np.trace(cov) * np.eye(dim)))
    precision = np.mean(precisions, axis=0)
    means = np.array(means)
    expected = 100 * X_test @ T_new.T + 0.5 * (X_test @ precision @ means.T + np.log(1 / 4)
                                                - 0.5 * np.einsum("cd,de,ce->c", means, precision, means))
    assert_logits_close(new.decision_function(X_test), expected)
    assert list(new.classes_) == [0, 1, 2, 3] and new.alpha == 0.5


def test_transductive_gda_reference_em():
    X, y, X_test, T = data(seed=10, per_class=12)
    clf = TransductiveGDA(alpha=1.0, n_iter=3, tol=0.0, device="cpu").fit(X, y, text_weights=T, unlabeled=X_test)
    n, dim = X_test.shape
    R = softmax(100 * X_test @ T.T)
    for _ in range(3):
        w = R.sum(axis=0)
        means = (R.T @ X_test) / w[:, None]
        scatter = sum(R[i, c] * np.outer(X_test[i] - means[c], X_test[i] - means[c])
                      for i in range(n) for c in range(T.shape[0]))
        inverse = np.linalg.inv(scatter + np.trace(scatter) / (n - 1) * np.eye(dim))
        P = n * inverse
        posterior = X_test @ P @ means.T - 0.5 * np.einsum("cd,de,ce->c", means, P, means) + np.log(w / n)
        R = softmax(posterior)
    np.testing.assert_allclose(clf.responsibilities_.numpy(), R, atol=1e-4)
    P = dim * inverse
    expected = 100 * X_test @ T.T + X_test @ P @ means.T - 0.5 * np.einsum("cd,de,ce->c", means, P, means) \
        + np.log(w / n)
    assert_logits_close(clf.decision_function(X_test), expected)
    assert clf.n_iter_ == 3


def test_gda_approaches_bayes_on_shared_covariance_gaussians():
    from gaussian import SharedCovarianceGaussians

    world = SharedCovarianceGaussians(seed=3)
    X, y = world.sample(per_class=16)
    X_val, y_val = world.sample(per_class=4)
    X_test, y_test = world.sample(n=4000)
    T = world.text_weights(noise=0.5)
    bayes = (world.bayes_predict(X_test) == y_test).mean()
    zero_shot = ak.ZeroShot(device="cpu").fit(X, y, text_weights=T).score(X_test, y_test)
    gda = ak.tune(ak.GDA(device="cpu").fit(X, y, text_weights=T), X_val, y_val).score(X_test, y_test)
    assert gda >= bayes - 0.04, (gda, bayes)
    assert gda >= zero_shot + 0.3, (gda, zero_shot)


@pytest.mark.parametrize("rank,shown", [(None, True), (6, False)])
def test_proker_grids_over_large_systems_show_their_solves(monkeypatch, rank, shown):
    """A bar over the solves (tqdm gives the rate and the time left) where the system has more
    than PROGRESS_ROWS rows: the support set when exact, the landmarks with rank."""
    import io

    from tqdm import tqdm

    import adaptkit.adapters.proker as proker

    bars = []

    def spy(iterable=None, *, progress, **options):
        bar = tqdm(iterable, file=io.StringIO(), **options)
        bars.append(({**options, "progress": progress}, bar))
        return bar

    monkeypatch.setattr(proker, "progress_bar", spy)
    monkeypatch.setattr(proker, "PROGRESS_ROWS", 20)
    X, y, X_test, T = data(seed=5, per_class=4)
    clf = ProKeR(rank=rank, device="cpu").fit(X, y, text_weights=T)
    clf._grid_logits(torch.as_tensor(X_test, dtype=torch.float32), [{"lam": 1.0}, {"lam": 0.1}, {"beta": 3.0}])
    ((options, bar),) = bars
    assert options["total"] == 3 and options["progress"] is shown and options["unit"] == "solve"
    assert bar.n == 3, "every point counts, the fitted one (reused, not solved) too"
