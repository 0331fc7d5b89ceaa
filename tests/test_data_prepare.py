"""adaptkit data prepare / check: CoOp layouts, what is missing, offline downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptkit.cli import app
from adaptkit.data import prepare as prepare_module


def test_data_check_reports_missing_images(tmp_path):
    base = tmp_path / "dtd"
    (base / "images" / "banded").mkdir(parents=True)
    (base / "images" / "banded" / "a.jpg").write_bytes(b"x")
    split = {"train": [["banded/a.jpg", 0, "banded"]], "val": [["banded/b.jpg", 0, "banded"]], "test": []}
    (base / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    report = prepare_module.check("dtd", tmp_path)
    assert not report["ok"]
    assert report["splits"]["train"]["missing"] == 0 and report["splits"]["val"]["missing"] == 1
    result = CliRunner().invoke(app, ["data", "check", "dtd", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "dtd/val: 1 images listed, 1 missing" in result.output
    missing = CliRunner().invoke(app, ["data", "check", "eurosat", "--root", str(tmp_path)])
    assert missing.exit_code == 1 and "Expected layout: root/eurosat/{2750/..., split_zhou_EuroSAT.json}" in missing.output


def test_data_prepare_by_hand_and_offline(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["data", "prepare", "imagenet", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "image-net.org" in result.output

    import torchvision.datasets as tv

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(tv, "OxfordIIITPet", offline)
    with pytest.raises(ValueError, match=r"downloading with torchvision.datasets.OxfordIIITPet failed.*by hand"):
        prepare_module.prepare("oxford_pets", tmp_path)

    def fake_download(root, download, **options):
        (Path(root) / "oxford-iiit-pet" / "images").mkdir(parents=True)

    monkeypatch.setattr(tv, "OxfordIIITPet", fake_download)
    todo = prepare_module.prepare("oxford_pets", tmp_path)
    assert (tmp_path / "oxford_pets" / "images").is_dir()
    assert len(todo) == 1 and "split_zhou_OxfordPets.json" in todo[0]

