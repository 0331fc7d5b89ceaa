"""Predictor: images to classes with a fitted adapter, checked against the backbone it was fitted on."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import adaptkit as ak
from adaptkit.cli import app


def _images(folder, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return sorted(str(p) for p in folder.glob("*.png"))


def test_predictor_matches_adapter_on_encoded_images(tiny, tmp_path):
    digits = ak.datasets.load("digits")
    support = ak.extract(tiny, digits.few_shot(3, 1), cache_dir=False, progress=False)
    text = tiny.text_classifier(digits.classnames, digits.templates)
    adapter = ak.GDA(device="cpu").fit(support.features, support.labels, text_weights=text)
    files = _images(tmp_path / "imgs")
    predictor = ak.Predictor(tiny, adapter, classnames=digits.classnames)
    expected = adapter.predict_proba(tiny.encode_images(files))
    np.testing.assert_allclose(predictor.predict_proba(str(tmp_path / "imgs")), expected, rtol=1e-5)
    assert predictor.predict(files) == [digits.classnames[i] for i in expected.argmax(axis=1)]
    top = predictor.top_k(files, k=3)
    assert len(top[0]) == 3 and top[0][0][1] >= top[0][1][1] >= top[0][2][1]

    path = tmp_path / "digits-gda.safetensors"
    adapter.save(path, classnames=digits.classnames, backbone=tiny)
    other = ak.Backbone(ak.TINY, device="cpu", init_seed=5)
    with pytest.raises(ValueError, match="predictions would be meaningless"):
        ak.Predictor(other, ak.load_adapter(path))

    result = CliRunner().invoke(app, ["predict", "--adapter", str(path), "--device", "cpu", "--top-k", "2",
                                      str(tmp_path / "imgs")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 4
    first = lines[0].split("\t")
    assert first[0] == files[0] and first[1] == predictor.predict(files[:1])[0]
    assert float(first[2]) == pytest.approx(expected[0].max(), abs=1e-4)


def test_predictor_warns_without_a_backbone_checks_k_and_classifies_each_file(tiny, tmp_path):
    digits = ak.datasets.load("digits")
    support = ak.extract(tiny, digits.few_shot(3, 1), cache_dir=False, progress=False)
    adapter = ak.GDA(device="cpu").fit(support.features, support.labels)
    with pytest.warns(UserWarning, match="records no backbone"):
        predictor = ak.Predictor(tiny, adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ak.Predictor(tiny, adapter, allow_unchecked_backbone=True)
    files = _images(tmp_path / "imgs", n=3)
    for k in (0, 11, True, 2.0):
        with pytest.raises(ValueError, match=r"The 'k' parameter of Predictor must be an int in the range \[1, 10\]"):
            predictor.top_k(files, k=k)
    Path(files[1]).write_bytes(b"broken")
    results = predictor.classify(files + [str(tmp_path / "missing.png")], k=2)
    assert [r.error is None for r in results] == [True, False, True, False]
    assert "cannot read image" in results[1].error and "not found" in results[3].error
    good = predictor.top_k([files[0], files[2]], k=2)
    assert [r.top for r in results if r.top] == good

