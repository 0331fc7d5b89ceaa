"""ak.load reads every kind of file adaptkit saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adaptkit as ak
from helpers import clip_like, fit_member


def fitted(cls, labels=None):
    X, y, X_test, y_test, T = clip_like(n_classes=10, dim=64, per_class=4, n_test=30)
    if labels is not None:
        return cls(device="cpu").fit(X, labels[y]), X_test
    return fit_member(cls, X, y, T, X_test), X_test


def test_ak_load_round_trips_every_kind_of_saved_file(tiny, tmp_path):
    from adaptkit.support import SupportIndex
    from adaptkit.tta import TCA, TDA

    adapter, X_test = fitted(ak.TipAdapter)
    adapter.save(tmp_path / "adapter.safetensors")
    assert np.array_equal(ak.load(tmp_path / "adapter.safetensors").predict(X_test), adapter.predict(X_test))
    digits = ak.datasets.load("digits")
    features = ak.extract(tiny, digits.few_shot(2, 1), cache_dir=False, progress=False)
    features.save(tmp_path / "features.safetensors")
    assert torch.equal(ak.load(tmp_path / "features.safetensors").features, features.features)
    index = SupportIndex(features.features.shape[1], device="cpu").add(features.features, features.labels)
    index.save(tmp_path / "index.safetensors")
    loaded_index = ak.load(tmp_path / "index.safetensors", device="cpu")
    assert torch.equal(loaded_index.search(features.features, 3)[1], index.search(features.features, 3)[1])
    text = tiny.text_classifier(digits.classnames, digits.templates)
    tda = TDA(text, device="cpu")
    tda.update_predict(features.features)
    tda.save(tmp_path / "tda.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(ak.load(tmp_path / "tda.safetensors").state_dict().values(),
                                                  tda.state_dict().values()))
    tca = TCA(tiny, text)
    tca.update_predict(torch.randn(4, 3, 32, 32))
    tca.save(tmp_path / "tca.safetensors")
    assert torch.equal(ak.load(tmp_path / "tca.safetensors", device="cpu").state_dict()["cls"], tca.state_dict()["cls"])
    (tmp_path / "other.bin").write_bytes(b"hello")
    with pytest.raises(ValueError, match="other.bin is not a file adaptkit saved"):
        ak.load(tmp_path / "other.bin")
    with pytest.raises(FileNotFoundError):
        ak.load(tmp_path / "nothing.safetensors")

