"""engine="ray": a Ray Data job that writes the same cache entry as the local engine."""

from __future__ import annotations

import pytest
import torch

import adaptkit as ak
from helpers import image_set, write_jpegs

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
def test_ray_engine_gives_the_local_features_in_order_and_the_same_cache_entry(tiny, tmp_path, monkeypatch):
    paths = write_jpegs(tmp_path / "img", n_classes=3, per_class=12)
    bad = paths[5]
    with open(bad, "wb"):
        pass
    images = image_set(paths)
    local = ak.extract(tiny, images, views=2, seed=3, cache_dir=False, on_error="skip", batch_size=8,
                       progress=False)
    cache = tmp_path / "cache"
    on_ray = ak.extract(tiny, images, views=2, seed=3, cache_dir=cache, on_error="skip", engine="ray",
                        batch_size=8, progress=False)
    assert ray.is_initialized()
    assert on_ray.features.shape == local.features.shape == (35, 2, tiny.embed_dim)
    assert (on_ray.features - local.features).abs().max() <= 1e-5
    assert torch.equal(on_ray.labels, local.labels)
    assert [s["image"] for s in on_ray.metadata["skipped"]] == [bad]

    def no_encoding(pixels):
        raise AssertionError("the entry the Ray engine wrote should have been found")

    monkeypatch.setattr(tiny, "encode_batch", no_encoding)
    reread = ak.extract(tiny, images, views=2, seed=3, cache_dir=cache, on_error="skip", batch_size=8,
                        progress=False)
    assert torch.equal(reread.features, on_ray.features) and reread.metadata == on_ray.metadata


@pytest.mark.slow
def test_an_address_other_than_the_running_ray_is_refused_not_ignored(tiny, tmp_path):
    images = image_set(write_jpegs(tmp_path / "img", n_classes=2, per_class=3))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    running = ray.get_runtime_context().gcs_address
    with pytest.raises(ValueError, match=r"address='10\.1\.2\.3:6379': Ray already runs in this process, connected "
                                         rf"to {running}; call ray.shutdown\(\) first"):
        ak.extract(tiny, images, engine="ray", address="10.1.2.3:6379", cache_dir=False, progress=False)
    same = ak.extract(tiny, images, engine="ray", address=running, cache_dir=False, progress=False)
    assert same.features.shape == (6, tiny.embed_dim)


@pytest.mark.slow
def test_a_failing_ray_actor_ends_the_run_with_a_message(tmp_path):
    """The encoder actors rebuild the backbone from its spec: a checkpoint folder deleted after the
    driver loaded it makes them fail, and the run ends with what failed instead of waiting."""
    import shutil
    import time

    from test_backbones import tiny_checkpoint_folder

    from adaptkit.features.pipeline import LoaderFailed

    tiny_checkpoint_folder(tmp_path / "ckpt")
    backbone = ak.Backbone(f"local-dir:{tmp_path / 'ckpt'}", device="cpu")
    shutil.rmtree(tmp_path / "ckpt")
    images = image_set(write_jpegs(tmp_path / "img", n_classes=2, per_class=3))
    start = time.monotonic()
    with pytest.raises(LoaderFailed, match=r"the Ray job failed \(.*ckpt.*\); 0 finished shard\(s\) are saved"):
        ak.extract(backbone, images, engine="ray", cache_dir=tmp_path / "cache", progress=False)
    assert time.monotonic() - start < 120
