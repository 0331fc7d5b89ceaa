"""Feature diagnostics against slow reference definitions."""

from __future__ import annotations

import numpy as np
import pytest

from adaptkit.diagnostics import diagnose


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

