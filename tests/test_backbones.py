"""Backbone: shapes, normalisation, zero-shot weights, weights identity and loading errors."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import adaptkit as ak
from adaptkit.backbones import WeightsUnavailableError


def test_encoders_return_normalised_float32(tiny):
    images = [Image.fromarray(np.full((20, 24, 3), v, dtype=np.uint8)) for v in (0, 90, 200)]
    features = tiny.encode_images(images, batch_size=2)
    assert features.shape == (3, tiny.embed_dim) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=1), torch.ones(3))
    pixels = torch.stack([tiny.preprocess(im) for im in images])
    torch.testing.assert_close(tiny.encode_images(pixels), features)
    texts = tiny.encode_texts(["a photo of a cat.", "a dog"])
    assert texts.shape == (2, 64) and texts.dtype == torch.float32
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(2))


def test_encode_images_reads_paths(tiny, tmp_path):
    path = tmp_path / "im.png"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    image.save(path)
    torch.testing.assert_close(tiny.encode_images([str(path)]), tiny.encode_images([image]))
    with pytest.raises(FileNotFoundError, match="image file not found"):
        tiny.encode_images([str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match=r"images as a tensor must be preprocessed pixels of shape \(N, 3, 32, 32\)"):
        tiny.encode_images(torch.zeros(2, 32, 32))


def test_text_classifier_is_mean_of_normalised_template_embeddings(tiny):
    classnames, templates = ["cat", "dog", "ship"], ["a photo of a {}.", "art of the {}.", "itap of a {}."]
    weights = tiny.text_classifier(classnames, templates)
    expected = []
    for name in classnames:
        embeddings = [F.normalize(tiny.encode_texts([t.format(name)]), dim=-1)[0] for t in templates]
        mean = torch.stack(embeddings).mean(dim=0)
        expected.append(mean / mean.norm())
    torch.testing.assert_close(weights, torch.stack(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        tiny.text_classifier(classnames, ["no slot"])


def test_random_init_is_seeded_and_identified():
    a, b = ak.Backbone(ak.TINY, device="cpu"), ak.Backbone(ak.TINY, device="cpu")
    c = ak.Backbone(ak.TINY, device="cpu", init_seed=1)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a.encode_images(x), b.encode_images(x))
    assert a.identity == b.identity != c.identity
    assert not torch.allclose(a.encode_images(x), c.encode_images(x))


def test_local_weights_file_is_loaded_and_hashed(tiny, tmp_path):
    other = ak.Backbone(ak.TINY, device="cpu", init_seed=7)
    path = tmp_path / "tiny.pt"
    torch.save(other.model.state_dict(), path)
    loaded = ak.Backbone(ak.TINY, pretrained=str(path), device="cpu")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_images(x), other.encode_images(x))
    assert loaded.identity["weights"] == "sha256:" + ak.storage.file_sha256(path)


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match=r"name='ViT-B-61' is not an open_clip architecture.*Did you mean"):
        ak.Backbone("ViT-B-61")
    with pytest.raises(TypeError, match="name must be a string"):
        ak.Backbone(16)


def test_missing_weights_file_and_unknown_tag():
    with pytest.raises(ValueError, match="pretrained='/no/such/weights.bin': no such weights file"):
        ak.Backbone(ak.TINY, pretrained="/no/such/weights.bin")
    with pytest.raises(ValueError, match="pretrained='openai' is not a known open_clip tag for adaptkit-tiny"):
        ak.Backbone(ak.TINY, pretrained="openai")
    with pytest.raises(ValueError, match="The 'precision' parameter of Backbone must be a str among"):
        ak.Backbone(ak.TINY, precision="fp8")
    with pytest.raises(ValueError, match="The 'device' parameter of Backbone"):
        ak.Backbone(ak.TINY, device="gpu")


@pytest.mark.parametrize("name,pretrained", [("ViT-B-32", "openai"),
                                             ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)])
def test_offline_weights_fail_in_seconds_and_say_how_to_pass_a_file(name, pretrained, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match=r"cannot be reached") as info:
        ak.Backbone(name, pretrained=pretrained, cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 20
    if name.startswith("hf-hub:"):
        assert "the download from the Hugging Face Hub failed" in str(info.value)
        assert "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K --local-dir" in str(info.value)
        assert "name='local-dir:<folder>'" in str(info.value) and "--pretrained" not in str(info.value)
    else:
        assert "pass the weights file as pretrained (CLI: --pretrained FILE)" in str(info.value)


def tiny_checkpoint_folder(folder, **model_options):
    """A local-dir: folder (open_clip_config.json + safetensors weights) holding the tiny model."""
    from safetensors.torch import save_file

    config = json.loads((Path(ak.backbones.__file__).parent / "model_configs" / "adaptkit-tiny.json").read_text())
    config.update(model_options)
    source = ak.Backbone(ak.TINY, device="cpu", init_seed=11)
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {
        "mean": list(source.mean), "std": list(source.std)}}))
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    if "init_logit_scale" in model_options:
        state["logit_scale"] = torch.tensor(float(model_options["init_logit_scale"]))
    if "init_logit_bias" in model_options:
        state["logit_bias"] = torch.tensor(float(model_options["init_logit_bias"]))
    save_file(state, folder / "open_clip_model.safetensors")
    return source


def test_local_dir_checkpoint_loads_and_encodes_exactly_as_the_model(tmp_path):
    source = tiny_checkpoint_folder(tmp_path / "ckpt")
    loaded = ak.Backbone(f"local-dir:{tmp_path / 'ckpt'}", device="cpu")
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(loaded.encode_images(x), source.encode_images(x))
    assert torch.equal(loaded.encode_texts(["a cat"]), source.encode_texts(["a cat"]))
    weights = tmp_path / "ckpt" / "open_clip_model.safetensors"
    assert loaded.identity["weights"] == "sha256:" + ak.storage.file_sha256(weights)
    config = tmp_path / "ckpt" / "open_clip_config.json"
    assert loaded.identity["model"] == "local-dir:config-sha256:" + ak.storage.file_sha256(config)[:16]
    with pytest.raises(ValueError, match=r"recorded by content, not by place: pass its folder as the backbone"):
        ak.Backbone.from_identity(loaded.identity, device="cpu")
    with pytest.raises(ValueError, match="has no open_clip_config.json"):
        ak.Backbone(f"local-dir:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="the folder .*nonexistent does not exist"):
        ak.Backbone(f"local-dir:{tmp_path / 'nonexistent'}")
    with pytest.raises(ValueError, match="names carry their own weights"):
        ak.Backbone(f"local-dir:{tmp_path / 'ckpt'}", pretrained="openai")


def test_siglip_style_scale_and_bias_are_the_models_own_and_adapters_keep_clip_scale(tmp_path):
    tiny_checkpoint_folder(tmp_path / "siglip", init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
    bb = ak.Backbone(f"local-dir:{tmp_path / 'siglip'}", device="cpu")
    assert bb.logit_scale == pytest.approx(10.0) and bb.logit_bias == pytest.approx(-10.0)
    pixels, texts = torch.randn(4, 3, 32, 32), ["a", "b", "c"]
    with torch.no_grad():
        image, text, scale, bias = bb.model(pixels, bb.tokenizer(texts))
    expected = scale * image @ text.T + bias
    torch.testing.assert_close(bb.model_logits(bb.encode_images(pixels), bb.encode_texts(texts)), expected)
    weights = bb.encode_texts(texts)
    features = bb.encode_images(pixels)
    zero_shot = ak.ZeroShot(device="cpu").fit(features, [0, 1, 2, 0], text_weights=weights)
    torch.testing.assert_close(zero_shot.logits(features), 100.0 * features @ weights.T)
    assert torch.equal(zero_shot.logits(features).argmax(1), expected.argmax(1))


def test_pretrained_tags_are_listed_and_open_clip_logs_stay_off_the_root_logger(caplog):
    tags = ak.list_backbones(pretrained=True)
    assert "openai" in tags["ViT-B-32"] and tags[ak.TINY] == []
    assert ak.TINY in ak.list_backbones()
    root = logging.getLogger()
    handlers = list(root.handlers)
    with caplog.at_level("DEBUG"):
        ak.Backbone(ak.TINY, device="cpu")
    assert root.handlers == handlers
    assert "initialized randomly" not in caplog.text


def test_support_augmentation_matches_resolution(tiny):
    image = Image.fromarray(np.zeros((50, 70, 3), dtype=np.uint8))
    assert tiny.support_augmentation()(image).shape == (3, 32, 32)


def test_from_identity_rebuilds_or_asks_for_the_file(tiny, tmp_path):
    rebuilt = ak.Backbone.from_identity(tiny.identity, device="cpu")
    assert rebuilt.identity == tiny.identity
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(rebuilt.encode_images(x), tiny.encode_images(x))
    path = tmp_path / "w.pt"
    torch.save(tiny.model.state_dict(), path)
    from_file = ak.Backbone(ak.TINY, pretrained=str(path), device="cpu")
    with pytest.raises(ValueError, match=r"pass that file as pretrained \(CLI: --pretrained FILE\)"):
        ak.Backbone.from_identity(from_file.identity)
    assert ak.Backbone.from_identity(from_file.identity, pretrained=str(path), device="cpu").identity == \
        from_file.identity


def test_a_local_dir_identity_is_the_file_open_clip_loads_not_the_folders_place(tmp_path):
    """Replacing the loaded weights changes the identity (and re-encodes); a copied folder keeps it,
    and an adapter fitted on it predicts the same from the copy."""
    import shutil

    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from adaptkit.cli import app
    from helpers import write_jpegs

    tiny_checkpoint_folder(tmp_path / "ckpt")
    folder = tmp_path / "ckpt"
    shutil.copy(folder / "open_clip_model.safetensors", tmp_path / "first.safetensors")
    other = ak.Backbone(ak.TINY, device="cpu", init_seed=12)
    torch.save(other.model.state_dict(), folder / "open_clip_pytorch_model.bin")  # open_clip prefers .safetensors
    original = ak.Backbone(f"local-dir:{folder}", device="cpu")
    digits = ak.datasets.load("digits")
    images = digits.few_shot(2, seed=1)
    before = ak.extract(original, images, cache_dir=tmp_path / "cache", progress=False)
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, folder / "open_clip_model.safetensors")
    replaced = ak.Backbone(f"local-dir:{folder}", device="cpu")
    assert replaced.identity["weights"] != original.identity["weights"]
    after = ak.extract(replaced, images, cache_dir=tmp_path / "cache", progress=False)
    assert not torch.equal(after.features, before.features)
    assert torch.equal(after.features, ak.extract(other, images, cache_dir=False, progress=False).features)

    shutil.copy(tmp_path / "first.safetensors", folder / "open_clip_model.safetensors")
    text = original.text_classifier(digits.classnames, digits.templates)
    adapter = ak.GDA(device="cpu").fit(before.features, before.labels, text_weights=text)
    adapter.save(tmp_path / "gda.safetensors", classnames=digits.classnames, backbone=original)
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(folder, copy)
    shutil.rmtree(folder)
    moved = ak.Backbone(f"local-dir:{copy}", device="cpu")
    assert moved.identity == original.identity
    pictures = write_jpegs(tmp_path / "pictures", n_classes=2, per_class=2, size=(20, 20))
    predictor = ak.Predictor(moved, ak.load(tmp_path / "gda.safetensors"))
    expected = adapter.predict_proba(original.encode_images(pictures))
    np.testing.assert_allclose(predictor.predict_proba(pictures), expected, atol=1e-6)
    result = CliRunner().invoke(app, ["predict", "--adapter", str(tmp_path / "gda.safetensors"), "--backbone",
                                      f"local-dir:{copy}", "--device", "cpu", *pictures])
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[1] for line in result.output.strip().splitlines()] == \
        [digits.classnames[i] for i in expected.argmax(1)]
    refused = CliRunner().invoke(app, ["predict", "--adapter", str(tmp_path / "gda.safetensors"), "--device", "cpu",
                                       *pictures])
    assert refused.exit_code == 1 and "--backbone local-dir:/path/to/folder" in refused.output, refused.output
