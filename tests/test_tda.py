"""TDA against a slow reference that follows the official code's dict-of-lists caches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptkit.tta import TDA
from helpers import normalize


class ReferenceTDA:
    """The official algorithm, sample by sample, with Python lists sorted by entropy."""

    def __init__(self, T, cap_p=3, a_p=2.0, b_p=5.0, cap_n=2, a_n=0.117, b_n=1.0, band=(0.2, 0.5), mask=(0.03, 1.0)):
        self.T, self.C = T.astype(np.float64), T.shape[0]
        self.cap_p, self.a_p, self.b_p, self.cap_n, self.a_n, self.b_n = cap_p, a_p, b_p, cap_n, a_n, b_n
        self.band, self.mask = band, mask
        self.pos, self.neg = {}, {}

    @staticmethod
    def update(cache, pred, item, capacity):
        if pred in cache:
            if len(cache[pred]) < capacity:
                cache[pred].append(item)
            elif item[1] < cache[pred][-1][1]:
                cache[pred][-1] = item
            cache[pred] = sorted(cache[pred], key=lambda it: it[1])
        else:
            cache[pred] = [item]

    def step(self, x):
        x = x.astype(np.float64)
        logits = 100 * self.T @ x
        p = np.exp(logits - logits.max())
        p /= p.sum()
        h = -(p * np.log(p + 1e-10)).sum()
        pred = int(np.argmax(logits))
        self.update(self.pos, pred, [x, h], self.cap_p)
        if self.band[0] < h / math.log2(self.C) < self.band[1]:
            self.update(self.neg, pred, [x, h, ((p > self.mask[0]) & (p < self.mask[1])).astype(float)], self.cap_n)
        out = logits.copy()
        for c, items in self.pos.items():
            for key, _ in items:
                out[c] += self.a_p * np.exp(-self.b_p * (1 - x @ key))
        for items in self.neg.values():
            for key, _, m in items:
                out -= self.a_n * np.exp(-self.b_n * (1 - x @ key)) * m
        return out


def stream(n=120, n_classes=6, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(n_classes, dim)))
    labels = rng.integers(0, n_classes, n)
    X = normalize(centres[labels] + 0.25 * rng.normal(size=(n, dim)))
    T = normalize(centres + 0.2 * rng.normal(size=centres.shape))
    return X.astype(np.float32), labels, T.astype(np.float32)


def test_tda_matches_reference_stream_and_caches():
    X, _, T = stream()
    tda, reference = TDA(T, device="cpu", neg_entropy=(0.01, 0.6)), ReferenceTDA(T, band=(0.01, 0.6))
    one_by_one = [tda.update_predict(x) for x in X[:60]]
    batched = tda.update_predict(X[60:])
    logits = torch.cat(one_by_one + [batched]).numpy()
    expected = np.stack([reference.step(x) for x in X])
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3)
    for c in range(T.shape[0]):
        ours = sorted(float(v) for v in tda.pos_entropy[c].numpy() if np.isfinite(v))
        theirs = sorted(h for _, h in reference.pos.get(c, []))
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
        assert len(ours) <= 3
        ours_neg = sorted(float(v) for v in tda.neg_entropy_values[c].numpy() if np.isfinite(v))
        np.testing.assert_allclose(ours_neg, sorted(h for _, h, _ in reference.neg.get(c, [])), rtol=1e-4, atol=1e-6)
    assert any(len(items) == 3 for items in reference.pos.values())


def test_eviction_replaces_the_highest_entropy_entry_only_when_lower():
    T = np.eye(4, dtype=np.float32)
    tda = TDA(T, pos_capacity=2, device="cpu", neg_entropy=(2.0, 3.0))
    base = np.array([1.0, 0.0, 0.0, 0.0])

    def sample(lean):
        return (normalize(base + lean * np.array([0.0, 1.0, 0.0, 0.0]))).astype(np.float32)

    for lean in (0.3, 0.1, 0.5, 0.2):
        tda.update_predict(sample(lean))
    kept = sorted(float(np.arctan2(k[1], k[0])) for k in tda.pos_keys[0].numpy())
    expected = sorted(float(np.arctan2(lean, 1.0)) for lean in (0.1, 0.2))
    np.testing.assert_allclose(kept, expected, atol=1e-6)


def test_tda_improves_over_zero_shot_on_a_shifted_stream():
    rng = np.random.default_rng(3)
    n_classes, dim = 10, 64
    centres = normalize(rng.normal(size=(n_classes, dim)))
    T = normalize(centres + 1.0 * rng.normal(size=centres.shape) / np.sqrt(dim) * 3).astype(np.float32)
    shift = normalize(rng.normal(size=dim)) * 1.0
    labels = rng.integers(0, n_classes, 1500)
    X = normalize(centres[labels] + shift + 0.2 * rng.normal(size=(1500, dim)) / np.sqrt(dim) * 3).astype(np.float32)
    zero_shot = ((X @ T.T).argmax(1) == labels).mean()
    tda = (TDA(T, device="cpu").update_predict(X).argmax(1).numpy() == labels).mean()
    print(f"zero-shot {zero_shot:.3f}, TDA {tda:.3f}")
    assert tda > zero_shot + 0.05


def test_state_round_trip_and_reset(tmp_path):
    X, _, T = stream()
    tda = TDA(T, device="cpu")
    tda.update_predict(X[:50])
    tda.save(tmp_path / "tda.safetensors")
    other = TDA.from_file(tmp_path / "tda.safetensors", device="cpu")
    torch.testing.assert_close(other.update_predict(X[50:]), tda.update_predict(X[50:]))
    tda.reset()
    assert torch.isinf(tda.pos_entropy).all()
    with pytest.raises(ValueError, match=r"state\['pos_keys'\] must have shape"):
        TDA(T[:3], device="cpu").load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="X has 5 features, but TDA is expecting 32"):
        tda.update_predict(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="The 'entropy_normalization' parameter of TDA must be a str among"):
        TDA(T, entropy_normalization="bits")


def test_a_state_is_a_value_forked_streams_stay_independent():
    X, _, T = stream()
    a = TDA(T, device="cpu")
    a.update_predict(X[:40])
    snapshot = a.state_dict()
    b = TDA(T, device="cpu")
    b.load_state_dict(a.state_dict())
    b.update_predict(X[40:])
    after = a.state_dict()
    assert all(torch.equal(snapshot[k], after[k]) for k in snapshot)
    assert not torch.equal(b.state_dict()["pos_keys"], after["pos_keys"])
    state = a.state_dict()
    state["pos_keys"].fill_(7.0)
    assert not torch.equal(a.state_dict()["pos_keys"], state["pos_keys"])


@pytest.mark.parametrize("damage,match", [
    (lambda s: s["pos_keys"].__setitem__((0, 0, 0), float("nan")), r"state\['pos_keys'\] holds NaN or infinite"),
    (lambda s: s["pos_keys"].__setitem__((0, 0), 3.0), r"state\['pos_keys'\] holds keys that are not L2-normalised"),
    (lambda s: s["pos_entropy"].__setitem__((1, 0), float("nan")), r"state\['pos_entropy'\] holds NaN"),
    (lambda s: s["neg_masks"].__setitem__((0, 0, 0), 0.5), r"state\['neg_masks'\] holds values other than 0"),
    (lambda s: s.__setitem__("neg_keys", s["neg_keys"].double()), r"state\['neg_keys'\] must be float32"),
    (lambda s: s.pop("neg_masks"), "state must hold exactly"),
])
def test_loaded_states_are_validated(damage, match):
    X, _, T = stream()
    tda = TDA(T, device="cpu")
    tda.update_predict(X[:30])
    state = tda.state_dict()
    damage(state)
    with pytest.raises(ValueError, match=match):
        TDA(T, device="cpu").load_state_dict(state)


def test_state_files_are_checksummed_and_rebuild_the_tda(tmp_path):
    X, _, T = stream()
    tda = TDA(T, pos_alpha=1.5, device="cpu")
    tda.update_predict(X[:50])
    path = tmp_path / "tda.safetensors"
    tda.save(path)
    rebuilt = TDA.from_file(path, device="cpu")
    assert rebuilt.pos_alpha == 1.5
    torch.testing.assert_close(rebuilt.update_predict(X[50:]), tda.update_predict(X[50:]))
    blob = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cut.safetensors is not a TDA state file adaptkit can trust"):
        TDA.from_file(tmp_path / "cut.safetensors")
    flipped = bytearray(blob)
    flipped[-3] ^= 0x01
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flip.safetensors .*SHA-256"):
        TDA.from_file(tmp_path / "flip.safetensors")
    assert not hasattr(TDA, "load"), "one way to read a state file: TDA.from_file (or ak.load)"


def test_tda_needs_two_classes_and_valid_parameters():
    with pytest.raises(ValueError, match="at least two classes"):
        TDA(np.ones((1, 4), np.float32))
    T = np.eye(3, dtype=np.float32)
    for kwargs, match in [({"pos_capacity": 0}, "'pos_capacity' parameter"), ({"pos_beta": -1.0}, "'pos_beta'"),
                          ({"neg_alpha": float("nan")}, "'neg_alpha'"), ({"neg_entropy": (0.5, 0.2)}, "'neg_entropy'"),
                          ({"neg_mask": (0.0, 2.0)}, "'neg_mask'"), ({"device": "gpu"}, "'device' parameter")]:
        with pytest.raises(ValueError, match=match):
            TDA(T, **kwargs)
