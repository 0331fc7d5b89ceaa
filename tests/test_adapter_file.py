"""The adapter file (adaptkit.adapters.file): round trips over the registry, checksums, schema, umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import adaptkit as ak
from adaptkit.adapters import ADAPTERS
from helpers import clip_like, fit_member

ALL = list(ADAPTERS.values())


def fitted(cls, labels=None):
    X, y, X_test, y_test, T = clip_like(n_classes=10, dim=64, per_class=4, n_test=30)
    if labels is not None:
        return cls(device="cpu").fit(X, labels[y]), X_test
    return fit_member(cls, X, y, T, X_test), X_test


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.name)
def test_round_trip_gives_identical_outputs(cls, tmp_path):
    adapter, X_test = fitted(cls)
    adapter = ak.tune(adapter, X_test, adapter.predict(X_test), grid={}) if cls is ak.ZeroShot else adapter
    path = tmp_path / "adapter.safetensors"
    adapter.save(path, classnames=[f"c{i}" for i in range(10)])
    loaded = ak.load_adapter(path, device="cpu")
    assert type(loaded) is cls and loaded.get_params() == adapter.get_params()
    np.testing.assert_array_equal(loaded.decision_function(X_test), adapter.decision_function(X_test))
    np.testing.assert_array_equal(loaded.predict(X_test), adapter.predict(X_test))
    assert loaded.classnames_ == [f"c{i}" for i in range(10)] and loaded.backbone_identity_ is None


def test_round_trip_keeps_string_classes_and_tuning_results(tmp_path):
    names = np.array([f"class {i}" for i in range(10)])
    adapter, X_test = fitted(ak.GDA, labels=names)
    tuned = ak.tune(adapter, X_test, adapter.predict(X_test))
    tuned.save(tmp_path / "gda.safetensors")
    loaded = ak.load_adapter(tmp_path / "gda.safetensors")
    np.testing.assert_array_equal(loaded.predict(X_test), tuned.predict(X_test))
    assert loaded.classes_.dtype.kind == "U"
    np.testing.assert_array_equal(loaded.tuning_results_["val_accuracy"], tuned.tuning_results_["val_accuracy"])


def test_truncated_or_edited_files_are_refused(tmp_path):
    adapter, _ = fitted(ak.GDA)
    path = tmp_path / "gda.safetensors"
    adapter.save(path)
    blob = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="unreadable or truncated"):
        ak.load_adapter(tmp_path / "cut.safetensors")
    flipped = bytearray(blob)
    flipped[-5] ^= 0x40
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        ak.load_adapter(tmp_path / "flip.safetensors")
    header_length = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + header_length].decode()
    edited = header.replace('\\"alpha\\": 1.0', '\\"alpha\\": 9.0')
    assert edited != header and len(edited) == len(header)
    (tmp_path / "edit.safetensors").write_bytes(blob[:8] + edited.encode() + blob[8 + header_length:])
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        ak.load_adapter(tmp_path / "edit.safetensors")
    newer = header.replace(f'\\"adaptkit\\": \\"{ak.__version__}\\"', '\\"adaptkit\\": \\"9.0.0\\"')
    payload = newer.encode()
    (tmp_path / "new.safetensors").write_bytes(len(payload).to_bytes(8, "little") + payload
                                               + blob[8 + header_length:])
    with pytest.raises(ValueError, match="written by adaptkit 9.0.0"):
        ak.load_adapter(tmp_path / "new.safetensors")
    (tmp_path / "plain.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not an adapter file adaptkit can trust"):
        ak.load_adapter(tmp_path / "plain.safetensors")


def test_unknown_class_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors",
              metadata={"adaptkit": json.dumps({"format": "something-else", "sha256": ""})})
    with pytest.raises(ValueError, match="format 'something-else'"):
        ak.load_adapter(tmp_path / "other.safetensors")


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_saved_files_follow_the_umask(tiny, tmp_path, umask, mode):
    from adaptkit.tta import TDA

    previous = os.umask(umask)
    try:
        adapter, _ = fitted(ak.GDA)
        adapter.save(tmp_path / "a.safetensors")
        digits = ak.datasets.load("digits")
        fs = ak.extract(tiny, digits.few_shot(1, 1), cache_dir=tmp_path / "cache", progress=False)
        ak.save_features(fs, tmp_path / "f.safetensors")
        TDA(np.eye(4, dtype=np.float32), device="cpu").save(tmp_path / "t.safetensors")
    finally:
        os.umask(previous)
    files = [tmp_path / "a.safetensors", tmp_path / "f.safetensors", tmp_path / "t.safetensors",
             *(tmp_path / "cache").rglob("*.safetensors"), *(tmp_path / "cache" / "entries").rglob("*.json")]
    assert len(files) >= 5
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_save_expands_home_names_the_target_and_refuses_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    adapter, _ = fitted(ak.GDA)
    adapter.save("~/gda.safetensors")
    assert (tmp_path / "gda.safetensors").is_file()
    assert isinstance(ak.load_adapter("~/gda.safetensors"), ak.GDA)
    with pytest.raises(ValueError, match=f"{tmp_path} is a directory"):
        adapter.save(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'file' / 'gda.safetensors'}"):
        adapter.save(tmp_path / "file" / "gda.safetensors")
    with pytest.raises(TypeError, match="backbone must be an adaptkit.Backbone"):
        adapter.save(tmp_path / "x.safetensors", backbone="ViT-B-32")
    with pytest.raises(TypeError, match="path must be a file path"):
        adapter.save(42)


@pytest.mark.parametrize("edit,match", [
    (lambda h, t: h.update(extra=1), r"unknown header keys \['extra'\]"),
    (lambda h, t: h["params"].update(alpha=-1.0), "The 'alpha' parameter of GDA must be"),
    (lambda h, t: t.update(bias_=t["bias_"].double()), "tensor 'bias_' is torch.float64, expected torch.float32"),
    (lambda h, t: t["weight_"].__setitem__((0, 0), float("nan")), "tensor 'weight_' holds NaN"),
    (lambda h, t: t.update(secret_=torch.zeros(2)), "GDA has no fitted tensor 'secret_'"),
    (lambda h, t: h.update(format_version=1), "adapter format 1"),
    (lambda h, t: h["params"].update(gamma=1.0), r"GDA parameters \['alpha', 'gamma'\], expected \['alpha'\]"),
])
def test_loaded_adapter_headers_and_tensors_are_checked(tmp_path, edit, match):
    from adaptkit.storage import read_checked, write_checked

    adapter, _ = fitted(ak.GDA)
    path = tmp_path / "gda.safetensors"
    adapter.save(path)
    header, tensors = read_checked(path, "adaptkit-adapter", 2, "an adapter file")
    header.pop("tensors")
    header.pop("adaptkit")
    edit(header, tensors)
    write_checked(path, tensors, header)
    with pytest.raises(ValueError, match=match):
        ak.load_adapter(path)



LEGACY = Path(__file__).parent / "data" / "legacy"


@pytest.mark.parametrize("name", sorted(p.stem for p in LEGACY.glob("*.safetensors")))
def test_files_written_before_the_registry_still_load_and_predict_the_same(name):
    """tests/data/legacy holds one file per adapter saved by adaptkit 0.2.0 before the family
    registered itself (commit 45a68b0), with the logits it gave on ``queries``."""
    expected = np.load(LEGACY / "expected.npz")
    adapter = ak.load_adapter(LEGACY / f"{name}.safetensors", device="cpu")
    assert type(adapter).name == name and adapter.classnames_ == ["c0", "c1", "c2", "c3"]
    np.testing.assert_allclose(adapter.decision_function(expected["queries"]), expected[name], rtol=1e-5, atol=1e-4)


def test_nystrom_proker_files_keep_their_landmarks(tmp_path):
    X, y, X_test, _, T = clip_like(n_classes=10, dim=64, per_class=4, n_test=30)
    adapter = ak.ProKeR(rank=9, random_state=2, device="cpu").fit(X, y, text_weights=T)
    adapter.save(tmp_path / "nystrom.safetensors")
    loaded = ak.load_adapter(tmp_path / "nystrom.safetensors", device="cpu")
    np.testing.assert_array_equal(loaded.landmarks_.numpy(), adapter.landmarks_.numpy())
    np.testing.assert_array_equal(loaded.decision_function(X_test), adapter.decision_function(X_test))
    exact = ak.ProKeR(device="cpu").fit(X, y, text_weights=T)
    exact.save(tmp_path / "exact.safetensors")
    assert "landmarks_" not in vars(ak.load_adapter(tmp_path / "exact.safetensors", device="cpu"))
