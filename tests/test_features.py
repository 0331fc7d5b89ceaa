"""extract() and the feature store: caching, integrity, crashes and resume, bad images, files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import adaptkit as ak
import adaptkit.features.store
import adaptkit.storage
from adaptkit.data import ImageSet
from helpers import image_set, write_jpegs


class CountingBackbone:
    """Counts the images that reach the model."""

    def __init__(self, backbone, monkeypatch):
        self.images = 0
        original = backbone.encode_batch

        def counted(pixels):
            self.images += pixels.shape[0]
            return original(pixels)

        monkeypatch.setattr(backbone, "encode_batch", counted)


@pytest.fixture
def small(digits):
    return digits.few_shot(2, seed=1)


def shard_files(cache: Path) -> list[Path]:
    return sorted((cache / "shards").rglob("*.safetensors"))


def entry_files(cache: Path) -> list[Path]:
    return sorted((cache / "entries").rglob("*.json"))


def test_second_extract_loads_from_disk_without_running_the_model(tiny, small, tmp_path, monkeypatch):
    counter = CountingBackbone(tiny, monkeypatch)
    first = ak.extract(tiny, small, views=3, seed=5, cache_dir=tmp_path, progress=False)
    assert counter.images == len(small) * 3
    second = ak.extract(tiny, small, views=3, seed=5, cache_dir=tmp_path, progress=False)
    assert counter.images == len(small) * 3
    assert torch.equal(first.features, second.features) and torch.equal(first.labels, second.labels)
    assert first.metadata == second.metadata and second.classnames == small.classnames
    assert len(entry_files(tmp_path)) == 1 and len(shard_files(tmp_path)) == 1


@pytest.mark.slow
def test_changed_inputs_miss_the_cache(tiny, small, digits, tmp_path, monkeypatch):
    counter = CountingBackbone(tiny, monkeypatch)
    base = ak.extract(tiny, small, views=2, seed=1, cache_dir=tmp_path, progress=False)
    other_seed = ak.extract(tiny, small, views=2, seed=2, cache_dir=tmp_path, progress=False)
    assert not torch.equal(base.features, other_seed.features)
    edited_pixels = small.images.copy()
    edited_pixels[0, 0, 0] ^= 255
    edited = ImageSet(edited_pixels, small.labels, small.classnames, small.name)
    ak.extract(tiny, edited, views=2, seed=1, cache_dir=tmp_path, progress=False)
    ak.extract(tiny, small, views=1, cache_dir=tmp_path, progress=False)
    ak.extract(tiny, digits.few_shot(2, seed=2), views=2, seed=1, cache_dir=tmp_path, progress=False)
    assert counter.images == len(small) * (2 + 2 + 2 + 1 + 2)
    assert len(entry_files(tmp_path)) == 5


def test_file_images_are_keyed_by_path_size_and_mtime(tmp_path):
    paths = write_jpegs(tmp_path, n_classes=2, per_class=1)
    images = image_set(paths)
    before = images.fingerprint()
    Path(paths[1]).write_bytes(Path(paths[0]).read_bytes())
    os.utime(paths[1], ns=(1, 10**18))
    assert images.fingerprint() != before


def test_views_shapes_flat_and_mean(tiny, small, tmp_path):
    fs = ak.extract(tiny, small, views=4, seed=0, cache_dir=tmp_path, progress=False)
    n = len(small)
    assert fs.features.shape == (n, 4, tiny.embed_dim) and fs.views == 4
    torch.testing.assert_close(fs.features.norm(dim=-1), torch.ones(n, 4))
    flat = fs.flat()
    assert flat.features.shape == (n * 4, tiny.embed_dim)
    assert torch.equal(flat.labels, fs.labels.repeat_interleave(4))
    assert torch.equal(flat.features[4 * 3 + 2], fs.features[3, 2])
    mean = fs.mean_views()
    torch.testing.assert_close(mean.features, F.normalize(fs.features.mean(dim=1), dim=-1))
    plain = ak.extract(tiny, small, cache_dir=tmp_path, progress=False)
    assert plain.features.shape == (n, tiny.embed_dim) and plain.views == 1
    assert plain.flat() is plain and plain.mean_views() is plain


@pytest.mark.slow
def test_features_do_not_depend_on_workers_and_only_round_with_batch_size(tiny, tmp_path):
    images = image_set(write_jpegs(tmp_path, per_class=10))
    runs = {(w, b): ak.extract(tiny, images, views=3, seed=4, batch_size=b, num_workers=w, cache_dir=False,
                               progress=False).features for w in (0, 2) for b in (6, 60)}
    assert torch.equal(runs[0, 6], runs[2, 6]) and torch.equal(runs[0, 60], runs[2, 60])
    torch.testing.assert_close(runs[0, 6], runs[0, 60], rtol=1e-5, atol=1e-6)


def test_plain_features_equal_encode_images(tiny, small):
    fs = ak.extract(tiny, small, cache_dir=False, progress=False)
    direct = tiny.encode_images([small.load(i) for i in range(len(small))])
    torch.testing.assert_close(fs.features, direct, rtol=1e-5, atol=1e-6)


def test_float16_storage_round_trips(tiny, small, tmp_path):
    first = ak.extract(tiny, small, dtype="float16", cache_dir=tmp_path, progress=False)
    second = ak.extract(tiny, small, dtype="float16", cache_dir=tmp_path, progress=False)
    in_memory = ak.extract(tiny, small, dtype="float16", cache_dir=False, progress=False)
    assert first.features.dtype == second.features.dtype == torch.float32
    assert torch.equal(first.features, second.features) and torch.equal(first.features, in_memory.features)


@pytest.mark.slow
def test_a_crash_at_any_write_leaves_a_usable_cache(tiny, tmp_path, monkeypatch):
    images = image_set(write_jpegs(tmp_path / "img", per_class=10))
    reference = ak.extract(tiny, images, cache_dir=False, batch_size=4, progress=False)
    real = adaptkit.storage.atomic_write
    writes = []
    ak.extract(tiny, images, cache_dir=tmp_path / "count", shard_size=8, batch_size=4, progress=False)
    n_writes = len(shard_files(tmp_path / "count")) + 1

    for crash_at in range(1, n_writes + 1):
        cache = tmp_path / f"crash{crash_at}"
        writes.clear()

        def crashing(path, write, crash_at=crash_at):
            writes.append(path)
            if len(writes) == crash_at:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(str(path) + ".partial-junk").write_bytes(b"junk")
                raise KeyboardInterrupt
            return real(path, write)

        for module in (adaptkit.storage, adaptkit.features.store):
            monkeypatch.setattr(module, "atomic_write", crashing)
        with pytest.raises(KeyboardInterrupt):
            ak.extract(tiny, images, cache_dir=cache, shard_size=8, batch_size=4, progress=False)
        for module in (adaptkit.storage, adaptkit.features.store):
            monkeypatch.setattr(module, "atomic_write", real)
        assert not entry_files(cache), "an entry became visible before all its shards"
        resumed = ak.extract(tiny, images, cache_dir=cache, shard_size=8, batch_size=4, progress=False)
        assert torch.equal(resumed.features, reference.features), crash_at


@pytest.mark.slow
def test_a_flipped_bit_anywhere_in_an_entry_is_never_served(tiny, small, tmp_path, monkeypatch):
    good = ak.extract(tiny, small, cache_dir=tmp_path, progress=False)
    files = shard_files(tmp_path) + entry_files(tmp_path)
    rng = np.random.default_rng(0)
    counter = CountingBackbone(tiny, monkeypatch)
    for path in files:
        blob = path.read_bytes()
        for position in sorted(set(rng.integers(0, len(blob), 25).tolist()) | {0, 8, len(blob) - 1}):
            flipped = bytearray(blob)
            flipped[position] ^= 1 << int(rng.integers(0, 8))
            path.write_bytes(bytes(flipped))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                served = ak.extract(tiny, small, cache_dir=tmp_path, progress=False)
            assert torch.equal(served.features, good.features), (path.name, position)
            path.write_bytes(blob)
    assert counter.images > 0


@pytest.mark.slow
def test_damage_is_reported_and_refresh_re_encodes(tiny, small, tmp_path, caplog):
    good = ak.extract(tiny, small, cache_dir=tmp_path, progress=False)
    [shard] = shard_files(tmp_path)
    shard.write_bytes(shard.read_bytes()[:100])
    with caplog.at_level("WARNING", logger="adaptkit"):
        repaired = ak.extract(tiny, small, cache_dir=tmp_path, progress=False)
    assert "is damaged" in caplog.text and str(shard) in caplog.text
    assert torch.equal(repaired.features, good.features)
    refreshed = ak.extract(tiny, small, cache_dir=tmp_path, progress=False, refresh=True)
    assert torch.equal(refreshed.features, good.features) and len(shard_files(tmp_path)) == 1


def test_save_and_load_features_are_checksummed_and_validated(tiny, small, tmp_path):
    fs = ak.extract(tiny, small, cache_dir=False, progress=False)
    path = tmp_path / "features.safetensors"
    ak.save_features(fs, path)
    loaded = ak.load_features(path)
    assert torch.equal(loaded.features, fs.features) and loaded.classnames == fs.classnames
    path.write_bytes(path.read_bytes())  # rewriting the file must not change what was loaded
    before = loaded.features.clone()
    ak.save_features(ak.extract(tiny, small, views=2, cache_dir=False, progress=False), path)
    assert torch.equal(loaded.features, before)
    ak.save_features(fs, path)
    blob = path.read_bytes()
    for position in range(0, len(blob), max(1, len(blob) // 300)):
        flipped = bytearray(blob)
        flipped[position] ^= 0x10
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=str(path)):
            ak.load_features(path)
    path.write_bytes(blob)
    with pytest.raises(ValueError, match="dtype must be one of"):
        ak.save_features(fs, tmp_path / "x.safetensors", dtype="int8")
    big = ak.FeatureSet(torch.full((2, 3), 1e6), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(ValueError, match="exceed float16's range"):
        ak.save_features(big, tmp_path / "big.safetensors", dtype="float16")
    with pytest.raises(ValueError, match="labels lie in"):
        ak.FeatureSet(fs.features, fs.labels + 100, fs.classnames)
    changed = ak.FeatureSet(fs.features, fs.labels.clone(), fs.classnames)
    changed.labels += 100
    with pytest.raises(ValueError, match="labels lie in"):
        ak.save_features(changed, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="is a directory"):
        ak.save_features(fs, tmp_path)
    with pytest.raises(FileNotFoundError, match="no such feature file"):
        ak.load_features(tmp_path / "missing.safetensors")
    home = Path.home()
    assert ak.storage.expand_path("~/x") == home / "x"


def test_legacy_feature_files_still_load_with_a_warning(tiny, small, tmp_path):
    fs = ak.extract(tiny, small, cache_dir=False, progress=False)
    path = tmp_path / "legacy.safetensors"
    save_file({"features": fs.features, "labels": fs.labels}, path)
    sidecar = {"classnames": fs.classnames, "metadata": {"name": "old"}, "shape": list(fs.features.shape),
               "adaptkit": "0.1.0"}
    Path(str(path) + ".json").write_text(__import__("json").dumps(sidecar))
    with pytest.warns(UserWarning, match="carries no checksum"):
        loaded = ak.load_features(path)
    assert torch.equal(loaded.features, fs.features)


def test_extract_rejects_bad_arguments_before_any_work(tiny, small, tmp_path, monkeypatch):
    counter = CountingBackbone(tiny, monkeypatch)
    with pytest.raises(TypeError, match="backbone must be an adaptkit.Backbone"):
        ak.extract("ViT-B-32", small)
    with pytest.raises(TypeError, match="images must be an adaptkit ImageSet"):
        ak.extract(tiny, [1, 2])
    for kwargs, match in [({"views": 0}, "'views' parameter of extract"), ({"dtype": "int8"}, "'dtype' parameter"),
                          ({"seed": None}, "'seed' parameter"), ({"seed": -1}, "'seed' parameter"),
                          ({"num_workers": -1}, "'num_workers' parameter"), ({"on_error": "ignore"}, "'on_error'"),
                          ({"engine": "spark"}, "'engine' parameter"), ({"batch_size": 0}, "'batch_size' parameter"),
                          ({"cache_dir": 5}, "cache_dir must be a folder path")]:
        with pytest.raises((ValueError, TypeError), match=match):
            ak.extract(tiny, small, **kwargs)
    with pytest.raises(ValueError, match="holds no images"):
        ak.extract(tiny, small.subset([], "empty"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cache_dir=.*a-file/cache' cannot be written"):
        ak.extract(tiny, small, cache_dir=blocker / "cache")
    assert counter.images == 0


@pytest.mark.slow
def test_bad_images_raise_with_the_file_or_are_skipped_and_listed(tiny, tmp_path):
    paths = write_jpegs(tmp_path / "img", n_classes=4, per_class=250, size=(8, 10))
    truncated, empty = paths[123], paths[777]
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:-40])
    Path(empty).write_bytes(b"")
    images = image_set(paths)
    with pytest.raises(ValueError, match=f"cannot read image {truncated}: truncated or damaged"):
        ak.extract(tiny, images, cache_dir=tmp_path / "c1", progress=False)
    kept = ak.extract(tiny, images, cache_dir=tmp_path / "c2", on_error="skip", progress=False)
    assert len(kept) == 998
    skipped = kept.metadata["skipped"]
    assert [s["image"] for s in skipped] == [truncated, empty]
    assert "truncated" in skipped[0]["reason"] and "not an image file" in skipped[1]["reason"]
    expected = np.delete(images.labels, [123, 777])
    assert np.array_equal(kept.labels.numpy(), expected)
    again = ak.extract(tiny, images, cache_dir=tmp_path / "c2", on_error="skip", progress=False)
    assert torch.equal(again.features, kept.features)
    with pytest.warns(UserWarning, match=r"2 image\(s\) were left out when this set was encoded with on_error='skip'"):
        plain = ak.extract(tiny, images, cache_dir=tmp_path / "c2", progress=False)
    assert torch.equal(plain.features, kept.features) and plain.metadata["skipped"] == skipped
    with pytest.warns(UserWarning, match=r"2 image\(s\) were left out"):
        entry = ak.extract(tiny, images, cache_dir=tmp_path / "c2", load=False, progress=False)
    assert len(entry) == 998 and entry.metadata["skipped"] == skipped


@pytest.mark.slow
def test_finished_shards_survive_a_bad_file_and_are_not_redone(tiny, tmp_path, monkeypatch):
    paths = write_jpegs(tmp_path / "img", n_classes=2, per_class=40, size=(8, 10))
    bad = paths[60]
    good_bytes = Path(bad).read_bytes()
    Path(bad).write_bytes(b"not a jpeg")
    images = image_set(paths)
    with pytest.raises(ValueError, match="3 finished shard"):
        ak.extract(tiny, images, cache_dir=tmp_path / "c", shard_size=16, batch_size=8, progress=False)
    Path(bad).write_bytes(good_bytes)
    counter = CountingBackbone(tiny, monkeypatch)
    fixed = ak.extract(tiny, image_set(paths), cache_dir=tmp_path / "c", shard_size=16, batch_size=8, progress=False)
    assert counter.images == len(paths) - 48
    reference = ak.extract(tiny, image_set(paths), cache_dir=False, shard_size=16, batch_size=8, progress=False)
    assert torch.equal(fixed.features, reference.features)


KILLED_RUN = textwrap.dedent("""
    import sys, time
    import adaptkit as ak
    from adaptkit.data import ImageSet
    import adaptkit.features.pipeline as pipeline
    paths = sys.argv[1].split("\\n")
    labels = [int(p.split("class_")[1].split("/")[0]) for p in paths]
    images = ImageSet(paths, labels, ["a", "b"], "kill")
    bb = ak.Backbone(ak.TINY, device="cpu")
    original = bb.encode_batch
    def slow(pixels):
        time.sleep(0.05)
        return original(pixels)
    bb.encode_batch = slow
    ak.extract(bb, images, cache_dir=sys.argv[2], shard_size=16, batch_size=16, num_workers=0, progress=False)
""")


@pytest.mark.slow
def test_an_extraction_killed_at_60_percent_resumes_bit_for_bit(tiny, tmp_path, monkeypatch):
    paths = write_jpegs(tmp_path / "img", n_classes=2, per_class=80, size=(8, 10))
    cache = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, "\n".join(paths), str(cache)],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    deadline = time.time() + 120
    while len(shard_files(cache)) < 6 and time.time() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = len(shard_files(cache))
    assert 6 <= done < 10 and not entry_files(cache)
    counter = CountingBackbone(tiny, monkeypatch)
    images = image_set(paths, "kill")
    images.classnames = ["a", "b"]
    resumed = ak.extract(tiny, images, cache_dir=cache, shard_size=16, batch_size=16, num_workers=0, progress=False)
    assert counter.images == len(paths) - 16 * done <= 0.4 * len(paths)
    whole = ak.extract(tiny, images, cache_dir=tmp_path / "whole", shard_size=16, batch_size=16, num_workers=0,
                       progress=False)
    assert torch.equal(resumed.features, whole.features) and torch.equal(resumed.labels, whole.labels)


def test_load_false_verifies_every_shard_and_stale_temporaries_are_removed(tiny, tmp_path):
    import os
    import time

    rng = np.random.default_rng(0)
    images = ak.datasets.ImageSet(rng.integers(0, 255, (300, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 300),
                                  ["a", "b", "c"], "verify")
    entry = ak.extract(tiny, images, cache_dir=tmp_path, load=False, shard_size=100, progress=False)
    shard = next((tmp_path / "shards").glob("*/*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    again = ak.extract(tiny, images, cache_dir=tmp_path, load=False, shard_size=100, progress=False)
    assert sum(features.shape[0] for features, _, _ in again.iter_shards()) == 300
    torch.testing.assert_close(again.load().features, entry.load().features)
    stale = shard.parent / f".{shard.name}.abc.tmp"
    fresh = shard.parent / f".{shard.name}.def.tmp"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    ak.extract(tiny, images, cache_dir=tmp_path, load=False, shard_size=100, progress=False)
    assert not stale.exists() and fresh.exists()
