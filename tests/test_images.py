"""Decoding what users have, image sources for large pools, image folders and ImageNet's variants."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import adaptkit as ak
from adaptkit.data import ImageSet
from adaptkit.data.decode import ImageDecodeError, decode_image
from helpers import image_set, write_jpegs


def pattern(height=24, width=40):
    """An asymmetric RGB pattern, so rotations are told apart."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + 2 * y) % 256], axis=-1).astype(np.uint8)


def test_exif_orientation_is_applied_and_encodes_like_the_transposed_pixels(tiny, tmp_path):
    plain = tmp_path / "plain.jpg"
    Image.fromarray(pattern()).save(plain, quality=95)
    stored = np.asarray(Image.open(plain).convert("RGB"))
    rotated = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(plain).save(rotated, quality=95, exif=exif)
    decoded = np.asarray(decode_image(rotated))
    expected = np.asarray(Image.fromarray(np.asarray(Image.open(rotated).convert("RGB"))).transpose(
        Image.Transpose.ROTATE_270))
    assert decoded.shape == (40, 24, 3) and np.array_equal(decoded, expected)
    assert np.abs(decoded.astype(int) - np.rot90(stored, k=-1).astype(int)).mean() < 3
    by_exif = ak.extract(tiny, ImageSet([str(rotated)], [0], ["x"], "exif"), cache_dir=False, progress=False)
    by_pixels = ak.extract(tiny, ImageSet(expected[None].copy(), [0], ["x"], "pixels"), cache_dir=False,
                           progress=False)
    torch.testing.assert_close(by_exif.features, by_pixels.features, rtol=1e-5, atol=1e-6)


def test_16_bit_png_and_float_tiff_keep_their_gradient(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    png = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(png)
    assert Image.open(png).mode.startswith("I")
    gray = np.asarray(decode_image(png))[..., 0].astype(int)
    assert gray[0, 0] == 0 and gray[0, -1] == 255 and (np.diff(gray[0]) >= 0).all() and len(set(gray[0])) > 50
    assert np.array_equal(gray[0], np.rint(ramp[0].astype(np.int64) * 255 / 65535).astype(int))
    for values, expected_top in ((np.linspace(0.0, 1.0, 64), 255), (np.linspace(-3.0, 5.0, 64), 255)):
        tiff = tmp_path / "ramp.tif"
        Image.fromarray(np.tile(values.astype(np.float32), (4, 1)), mode="F").save(tiff)
        row = np.asarray(decode_image(tiff))[0, :, 0].astype(int)
        assert row[0] == 0 and row[-1] == expected_top and (np.diff(row) >= 0).all() and len(set(row)) > 50


def test_decompression_bombs_truncated_and_foreign_files_name_the_file(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(big)
    monkeypatch.setenv("ADAPTKIT_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ImageDecodeError, match=f"cannot read image {big}: .*ADAPTKIT_MAX_IMAGE_PIXELS"):
        decode_image(big)
    monkeypatch.setenv("ADAPTKIT_MAX_IMAGE_PIXELS", "none")
    assert decode_image(big).size == (30, 30)
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ValueError, match=f"cannot read image {text}: not an image file"):
        decode_image(text)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        ak.data.decode.load_image(tmp_path / "nope.jpg")


def test_non_utf8_file_names_are_read_and_reported(tiny, tmp_path):
    name = os.fsdecode(b"caf\xe9-\xff.jpg")
    path = str(tmp_path / name)
    Image.fromarray(pattern()).save(path)
    broken = str(tmp_path / os.fsdecode(b"bad\xfe.jpg"))
    Path(broken).write_bytes(b"")
    images = ImageSet([path, broken], [0, 0], ["x"], "latin1")
    fs = ak.extract(tiny, images, cache_dir=tmp_path / "cache", on_error="skip", progress=False)
    assert len(fs) == 1
    [skipped] = fs.metadata["skipped"]
    assert skipped["image"].endswith("bad\\xfe.jpg")
    json.dumps(fs.metadata)
    again = ak.extract(tiny, images, cache_dir=tmp_path / "cache", on_error="skip", progress=False)
    assert torch.equal(again.features, fs.features)


def test_image_folders_ignore_hidden_entries_and_name_bad_class_folders(tmp_path):
    write_jpegs(tmp_path / "data", n_classes=3, per_class=6)
    (tmp_path / "data" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(pattern()).save(tmp_path / "data" / ".ipynb_checkpoints" / "x.jpg")
    Image.fromarray(pattern()).save(tmp_path / "data" / "class_0" / ".hidden.jpg")
    ds = ak.datasets.load("imagefolder", root=tmp_path / "data")
    assert ds.classnames == ["class 0", "class 1", "class 2"]
    assert sum(len(s) for s in ds.splits.values()) == 18
    assert not any(".hidden" in p or ".ipynb" in p for s in ds.splits.values() for p in s.images)
    (tmp_path / "data" / "class_3").mkdir()
    with pytest.raises(ValueError, match="class folder.* without images.*class_3"):
        ak.datasets.load("imagefolder", root=tmp_path / "data")
    for path in (tmp_path / "data" / "class_2").glob("*.jpg"):
        if path.name != "0000.jpg":
            path.unlink()
    Image.fromarray(pattern()).save(tmp_path / "data" / "class_3" / "a.jpg")
    with pytest.raises(ValueError, match="class folder .*class_2 has 1 image.*too few to split"):
        ak.datasets.load("imagefolder", root=tmp_path / "data")


def test_image_folder_class_name_files(tmp_path):
    write_jpegs(tmp_path / "wnids", n_classes=2, per_class=5)
    pairs = tmp_path / "names.txt"
    pairs.write_text("class_1 goldfish\nclass_0 tench\nn99 unused\n")
    assert ak.datasets.load("imagefolder", root=tmp_path / "wnids", classnames=pairs).classnames == ["tench", "goldfish"]
    plain = tmp_path / "plain.txt"
    plain.write_text("tench\ngoldfish\n")
    assert ak.datasets.load("imagefolder", root=tmp_path / "wnids", classnames=plain).classnames == ["tench", "goldfish"]
    plain.write_text("only one\n")
    with pytest.raises(ValueError, match="lists 1 names for 2 class folders"):
        ak.datasets.load("imagefolder", root=tmp_path / "wnids", classnames=plain)


def test_webdataset_and_parquet_give_the_features_of_the_same_images_in_a_folder(tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    paths = write_jpegs(tmp_path / "folder", n_classes=3, per_class=7)
    folder = image_set(paths)
    shards = []
    for number, chunk in enumerate((paths[:10], paths[10:])):
        shard = tmp_path / f"pool-{number:03d}.tar"
        with wds.TarWriter(str(shard)) as sink:
            for path in chunk:
                label = int(path.split("class_")[1].split("/")[0])
                sink.write({"__key__": f"{Path(path).parent.name}_{Path(path).stem}", "jpg": Path(path).read_bytes(),
                            "cls": label, "txt": "a caption"})
        shards.append(shard)
    from_tar = ImageSet.from_webdataset(str(tmp_path / "pool-{000..001}.tar"), classnames=folder.classnames)
    assert np.array_equal(from_tar.labels, folder.labels) and len(from_tar) == len(folder)
    assert from_tar.describe(0).endswith("pool-000.tar:class_0_0000.jpg")

    images = pa.array([{"bytes": Path(p).read_bytes(), "path": p} for p in paths])
    table = pa.table({"image": images, "label": pa.array(folder.labels)})
    info = {"info": {"features": {"label": {"_type": "ClassLabel", "names": folder.classnames},
                                  "image": {"_type": "Image"}}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(info)})
    parquet = tmp_path / "pool.parquet"
    pq.write_table(table, parquet, row_group_size=8)
    from_parquet = ImageSet.from_parquet(parquet)
    assert from_parquet.classnames == folder.classnames and np.array_equal(from_parquet.labels, folder.labels)

    expected = ak.extract(tiny, folder, cache_dir=False, progress=False).features
    for other in (from_tar, from_parquet):
        got = ak.extract(tiny, other, cache_dir=tmp_path / "cache", progress=False, num_workers=2)
        assert torch.equal(got.features, expected)
    shot = from_parquet.few_shot(2, seed=1)
    assert len(shot) == 6 and shot.fingerprint() != from_parquet.fingerprint()
    unlabeled = ImageSet.from_webdataset(str(shards[0]), label_key=None)
    assert unlabeled.classnames == ["unlabeled"] and len(unlabeled) == 10

    from adaptkit.data.pools import open_pool

    globbed = open_pool([str(s) for s in shards])  # what `support build pool-*.tar` receives from a shell
    assert len(globbed) == len(folder) and globbed.classnames == ["unlabeled"]
    shard_folder = tmp_path / "hf-download"
    shard_folder.mkdir()
    parquet.rename(shard_folder / "train-00000.parquet")
    from_folder = open_pool(shard_folder)
    assert len(from_folder) == len(folder)
    with pytest.raises(ValueError, match="several paths must all be .tar shards or all .parquet files"):
        open_pool([str(shards[0]), str(shard_folder / "train-00000.parquet")])


def imagenet_root(tmp_path, name, wnid_folders=None, by_index=None):
    from adaptkit.data.imagenet_variants import VARIANTS

    root = tmp_path / "data"
    layout = VARIANTS[name]
    (root / "imagenet").mkdir(parents=True, exist_ok=True)
    (root / "imagenet" / "classnames.txt").write_text("".join(f"n{i:08d} class number {i}\n" for i in range(1000)))
    images = root / layout.folder / layout.images
    folders = [str(i) for i in by_index] if by_index else [f"n{i:08d}" for i in wnid_folders]
    for folder in folders:
        (images / folder).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(pattern()).save(images / folder / f"{j}.jpg")
    return root


def test_imagenet_variants_load_with_their_class_subsets(tmp_path):
    root = imagenet_root(tmp_path, "imagenet_a", wnid_folders=[7, 1, 999])
    dataset = ak.datasets.load("imagenet_a", root=root)
    assert dataset.classnames == ["class number 1", "class number 7", "class number 999"]
    assert dataset.class_indices.tolist() == [1, 7, 999] and sorted(dataset.splits) == ["test"]
    assert dataset.templates == ak.text.IMAGENET_TEMPLATES and len(dataset.split("test")) == 6
    v2 = ak.datasets.load("imagenet_v2", root=imagenet_root(tmp_path / "v2", "imagenet_v2", by_index=[0, 5]))
    assert v2.classnames == ["class number 0", "class number 5"] and v2.class_indices.tolist() == [0, 5]
    with pytest.raises(ValueError, match="imagenet_r: image folder not found.*imagenet-r.tar"):
        ak.datasets.load("imagenet_r", root=tmp_path / "nothing")
    with pytest.raises(ValueError, match="split must be one of"):
        dataset.few_shot(1, seed=1)


def test_gpu_decoding_needs_a_cuda_backbone(tiny, tmp_path):
    paths = write_jpegs(tmp_path / "img", n_classes=2, per_class=2)
    with pytest.raises(ValueError, match="decode='gpu' needs a CUDA backbone"):
        ak.extract(tiny, image_set(paths), decode="gpu", cache_dir=False, progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU decoding needs a CUDA device")
def test_gpu_decoding_encodes_like_cpu_decoding_and_falls_back_for_other_formats(tmp_path):
    """nvjpeg + GPU resizing are not bit-identical to Pillow, so rows must agree in direction; a PNG
    in the set goes through the CPU decoder, and views stay seeded per image."""
    cuda = ak.Backbone(ak.TINY, device="cuda")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    paths = []
    for c in range(3):
        for i in range(6):
            smooth = np.stack([(x * (c + 1) + 17 * i) % 256, (y * 2 + 5 * c) % 256, (x + y + 9 * i) % 256], -1)
            noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
            path = tmp_path / "img" / f"class_{c}" / f"{i:02d}.{'png' if i == 0 else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(noisy).save(path, **({} if i == 0 else {"quality": 95}))
            paths.append(str(path))
    images = image_set(sorted(paths))
    for views in (1, 3):
        cpu = ak.extract(cuda, images, views=views, seed=4, cache_dir=False, progress=False, decode="cpu")
        gpu = ak.extract(cuda, images, views=views, seed=4, cache_dir=False, progress=False, decode="gpu")
        assert gpu.features.shape == cpu.features.shape and torch.equal(gpu.labels, cpu.labels)
        if views == 1:
            cosine = (gpu.features * cpu.features).sum(-1)
            assert float(cosine.min()) > 0.98, cosine
        again = ak.extract(cuda, images, views=views, seed=4, cache_dir=False, progress=False, decode="gpu",
                           batch_size=5)
        torch.testing.assert_close(again.features, gpu.features, atol=2e-3, rtol=0)


def test_a_fifo_a_symlink_loop_and_a_bytes_path_are_handled_in_seconds(tiny, tmp_path):
    import time

    paths = write_jpegs(tmp_path / "ok", n_classes=1, per_class=2, size=(32, 32))
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    files = [paths[0], str(fifo), str(loop), os.fsencode(paths[1])]
    images = ak.datasets.ImageSet(files, [0, 0, 0, 0], ["a"], "odd files")
    start = time.perf_counter()
    kept = ak.extract(tiny, images, cache_dir=str(tmp_path / "cache"), on_error="skip", num_workers=0, progress=False)
    assert time.perf_counter() - start < 30
    reasons = {entry["image"].rsplit("/", 1)[-1]: entry["reason"] for entry in kept.metadata["skipped"]}
    assert "not a regular file" in reasons["pipe.jpg"] and "loop.jpg" in reasons
    assert len(kept) == 2
    expected = tiny.encode_images([paths[0], paths[1]])
    torch.testing.assert_close(kept.features, expected)
    with pytest.raises(ValueError, match="pipe.jpg.*not a regular file"):
        ak.extract(tiny, images, cache_dir=False, num_workers=0, progress=False)


def test_a_broken_symlink_and_a_jfif_in_a_folder_are_listed_not_dropped(tiny, tmp_path):
    paths = write_jpegs(tmp_path / "data", n_classes=2, per_class=3, size=(32, 32))
    os.rename(paths[0], paths[0].replace(".jpg", ".jfif"))
    (tmp_path / "data" / "class_1" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    dataset = ak.datasets.load("imagefolder", root=tmp_path / "data", val_fraction=0.2, test_fraction=0.2)
    listed = [p for split in ("train", "val", "test") for p in dataset.split(split).source.paths]
    assert any(p.endswith(".jfif") for p in listed) and any(p.endswith("gone.jpg") for p in listed)
    images = ak.datasets.ImageSet(listed, [0] * len(listed), ["a"], "all")
    kept = ak.extract(tiny, images, cache_dir=False, on_error="skip", num_workers=0, progress=False)
    assert len(kept) == len(listed) - 1
    assert "broken symbolic link" in kept.metadata["skipped"][0]["reason"]


def _write_shard(path, jpegs, images_first=False):
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for i, jpeg in enumerate(jpegs):
            sample = {"__key__": f"s{i:03d}", "jpg": Path(jpeg).read_bytes(), "cls": i % 2}
            sink.write(sample if images_first else {"__key__": sample["__key__"], "cls": i % 2, "jpg": sample["jpg"]})
    return path


@pytest.mark.parametrize("images_first", [False, True])
@pytest.mark.parametrize("kept", [0.3, 0.6])
def test_a_truncated_webdataset_shard_is_refused_with_its_sample_count(tmp_path, images_first, kept):
    shard = _write_shard(tmp_path / "pool-000.tar", write_jpegs(tmp_path / "jpegs", n_classes=2, per_class=4),
                         images_first)
    assert len(ImageSet.from_webdataset(str(shard))) == 8
    data = shard.read_bytes()
    shard.write_bytes(data[:int(len(data) * kept)])
    with pytest.raises(ValueError, match=r"pool-000.tar is truncated or damaged: its listing stops at byte \d+ of "
                                         r"\d+ after \d sample\(s\), with no end-of-archive block"):
        ImageSet.from_webdataset(str(shard))


def test_a_shard_rewritten_after_indexing_is_named_not_read_at_old_offsets(tiny, tmp_path):
    jpegs = write_jpegs(tmp_path / "jpegs", n_classes=2, per_class=4)
    shard = _write_shard(tmp_path / "pool-000.tar", jpegs)
    pool = ImageSet.from_webdataset(str(shard), label_key=None)
    _write_shard(shard, jpegs[::-1], images_first=True)
    os.utime(shard, ns=(1, 1))
    for on_error in ("raise", "skip"):
        with pytest.raises(ValueError, match=r"webdataset shard .*pool-000.tar changed since the pool was indexed"):
            ak.extract(tiny, pool, cache_dir=tmp_path / "cache", on_error=on_error, progress=False)
    again = ImageSet.from_webdataset(str(shard), label_key=None)
    assert len(ak.extract(tiny, again, cache_dir=tmp_path / "cache", progress=False, num_workers=0)) == 8
