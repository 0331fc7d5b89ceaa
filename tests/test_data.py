"""Datasets: few-shot sampling, digits, the CoOp layouts and image folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import adaptkit as ak
from adaptkit.data import ImageSet


def test_few_shot_draws_exactly_k_per_class_deterministically(digits):
    train = digits.split("train")
    a, b, c = digits.few_shot(5, seed=1), digits.few_shot(5, seed=1), digits.few_shot(5, seed=2)
    assert np.array_equal(np.bincount(a.labels), np.full(10, 5))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    rows = {train.images[i].tobytes() for i in range(len(train))}
    assert all(a.images[i].tobytes() in rows for i in range(len(a)))
    assert len({a.images[i].tobytes() + bytes([a.labels[i]]) for i in range(len(a))}) == len(a)
    assert a.name == "digits/train/5shot-seed1"


def test_few_shot_with_too_few_images_names_the_classes():
    images = ImageSet(np.zeros((5, 4, 4, 3), dtype=np.uint8), [0, 0, 0, 1, 2], ["cat", "dog", "eel"], "toy")
    with pytest.raises(ValueError, match=r"shots=2 but 2 class\(es\) of toy have fewer images: 'dog' \(1\), 'eel'"):
        images.few_shot(2, seed=0)
    with pytest.raises(ValueError, match="The 'shots' parameter of few_shot must be an int in the range \\[1, inf\\)"):
        images.few_shot(0, seed=0)


def test_digits_splits_partition_the_bundled_images(digits):
    from sklearn.datasets import load_digits

    bundled = np.round(load_digits().images * (255 / 16)).astype(np.uint8).reshape(1797, -1)
    splits = [digits.split(s) for s in ("train", "val", "test")]
    assert [len(s) for s in splits] == [898, 359, 540]
    ours = np.concatenate([s.images[..., 0].reshape(len(s), -1) for s in splits])
    assert sorted(map(bytes, ours)) == sorted(map(bytes, bundled))
    assert all(np.array_equal(np.bincount(s.labels), np.bincount(s.labels).clip(min=1)) for s in splits)
    assert digits.classnames[3] == "three" and len(digits.templates) == 3
    assert digits.split("test").load(0).size == (8, 8)
    with pytest.raises(ValueError, match="split must be one of"):
        digits.split("validation")


def test_image_set_validates_its_inputs():
    with pytest.raises(ValueError, match="same length"):
        ImageSet(["a.jpg"], [0, 1], ["x", "y"], "bad")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        ImageSet(["a.jpg", "b.jpg"], [0, 2], ["x", "y"], "bad")
    with pytest.raises(ValueError, match=r"uint8 of shape \(N, H, W, 3\)"):
        ImageSet(np.zeros((2, 4, 4)), [0, 1], ["x", "y"], "bad")


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, dtype=np.uint8)).save(path)


def test_coop_split_json_layout(tmp_path):
    base = tmp_path / "oxford_pets"
    rows = {"train": [["abyssinian_1.jpg", 0, "abyssinian"], ["boxer_1.jpg", 1, "boxer"]],
            "val": [["abyssinian_2.jpg", 0, "abyssinian"]],
            "test": [["boxer_2.jpg", 1, "boxer"], ["abyssinian_3.jpg", 0, "abyssinian"]]}
    for split in rows.values():
        for rel, label, _ in split:
            _png(base / "images" / rel, 10 * label)
    (base / "split_zhou_OxfordPets.json").write_text(json.dumps(rows))
    ds = ak.datasets.load("oxford_pets", root=tmp_path)
    assert ds.classnames == ["abyssinian", "boxer"]
    assert ds.templates == ("a photo of a {}, a type of pet.",)
    test = ds.split("test")
    assert test.images == [str(base / "images" / "boxer_2.jpg"), str(base / "images" / "abyssinian_3.jpg")]
    assert list(test.labels) == [1, 0] and test.load(0).size == (6, 6)


def test_coop_missing_files_say_what_to_prepare(tmp_path):
    with pytest.raises(ValueError, match="dataset folder not found.*CoOp's layout"):
        ak.datasets.load("dtd", root=tmp_path)
    (tmp_path / "dtd").mkdir()
    with pytest.raises(ValueError, match="split file not found at .*split_zhou_DescribableTextures.json"):
        ak.datasets.load("dtd", root=tmp_path)
    with pytest.raises(ValueError, match="root is required"):
        ak.datasets.load("dtd")
    with pytest.raises(ValueError, match="dataset must be one of"):
        ak.datasets.load("pets")


def test_fgvc_variant_lists(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    (base / "images").mkdir(parents=True)
    (base / "variants.txt").write_text("707-320\nA300B4\n")
    for split, rows in {"train": ["0001 A300B4", "0002 707-320"], "val": ["0003 707-320"],
                        "test": ["0004 A300B4"]}.items():
        (base / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
    ds = ak.datasets.load("fgvc_aircraft", root=tmp_path)
    assert ds.classnames == ["707-320", "A300B4"]
    assert list(ds.split("train").labels) == [1, 0]
    assert ds.split("test").images == [str(base / "images" / "0004.jpg")]


def test_imagenet_holds_out_val_from_train_never_test(tmp_path):
    base = tmp_path / "imagenet"
    base.mkdir()
    (base / "classnames.txt").write_text("n01 tench\nn02 goldfish\n")
    for wnid in ("n01", "n02"):
        for i in range(12):
            _png(base / "images" / "train" / wnid / f"{i:03d}.JPEG", i)
        _png(base / "images" / "val" / wnid / "v.JPEG", 1)
    ds = ak.datasets.load("imagenet", root=tmp_path)
    assert ds.classnames == ["tench", "goldfish"] and len(ds.templates) == 7
    val, train, test = ds.split("val"), ds.split("train"), ds.split("test")
    assert len(val) == 4 and len(train) == 20 and len(test) == 2
    assert not set(val.images) & set(train.images)
    assert all("/train/" in p for p in val.images)


def test_image_folder_with_and_without_split_folders(tmp_path):
    for cls in ("golden_retriever", "tabby"):
        for i in range(10):
            _png(tmp_path / "flat" / cls / f"{i}.png", i)
            _png(tmp_path / "split" / "train" / cls / f"{i}.png", i)
        _png(tmp_path / "split" / "test" / cls / "t.png", 3)
    flat = ak.datasets.load("imagefolder", root=tmp_path / "flat")
    assert flat.classnames == ["golden retriever", "tabby"]
    sizes = [len(flat.split(s)) for s in ("train", "val", "test")]
    assert sizes == [12, 4, 4]
    everything = set().union(*(flat.split(s).images for s in ("train", "val", "test")))
    assert len(everything) == 20
    split = ak.datasets.load("imagefolder", root=tmp_path / "split")
    assert len(split.split("test")) == 2 and len(split.split("val")) == 4 and len(split.split("train")) == 16
    with pytest.raises(ValueError, match="no class sub-folders"):
        ak.datasets.load("imagefolder", root=tmp_path / "split" / "train" / "tabby")


def test_with_classnames_renames_every_split_and_leaves_the_dataset_as_it_was():
    digits = ak.datasets.load("digits")
    names = [f"digit {i}" for i in range(10)]
    renamed = digits.with_classnames(names)
    assert renamed.classnames == names and renamed.split("test").classnames == names
    assert np.array_equal(renamed.split("test").labels, digits.split("test").labels)
    assert digits.classnames[0] == "zero" and digits.split("train").classnames[0] == "zero"
    with pytest.raises(ValueError, match="classnames has 2 names for the 10 classes of digits"):
        digits.with_classnames(["a", "b"])
    with pytest.raises(TypeError, match="classnames must be a list of strings"):
        digits.with_classnames("abc")


def test_the_public_names_readme_uses_exist():
    from adaptkit.datasets import Dataset, ImageSet, load  # noqa: F401

    assert ak.datasets.ImageSet is ImageSet and ak.datasets.load is load
    assert ak.synthesize_new_classes is ak.adapters.synthesize_new_classes
