"""SupportIndex (faiss), sparse cache affinities and retrieval-built support sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_adapters import assert_logits_close
from typer.testing import CliRunner

import adaptkit as ak
from adaptkit.adapters import CaptionCache, TipX
from adaptkit.cli import app
from adaptkit.support import SupportIndex, build_support_set, class_queries, gpu_available
from helpers import clip_like, normalize


def clustered(n_keys=4000, n_queries=200, dim=64, n_clusters=50, seed=0):
    """Unit vectors around random cluster centres (an easy case for IVF/HNSW, as CLIP pools are)."""
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(n_clusters, dim)))
    keys = normalize(centres[rng.integers(0, n_clusters, n_keys)] + 0.3 * rng.normal(size=(n_keys, dim)) / 4)
    queries = normalize(centres[rng.integers(0, n_clusters, n_queries)] + 0.3 * rng.normal(size=(n_queries, dim)) / 4)
    return keys.astype(np.float32), queries.astype(np.float32)


def brute_force(keys, queries, k):
    similarities = queries.astype(np.float64) @ keys.astype(np.float64).T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(similarities, order, axis=1), order


def test_exact_index_equals_brute_force_with_ties():
    keys, queries = clustered(n_keys=500, n_queries=40)
    keys = np.concatenate([keys, keys[:50]])  # exact duplicates: tied similarities
    index = SupportIndex(64, "flat", device="cpu").add(keys, labels=np.arange(len(keys)) % 7)
    similarities, positions = index.search(queries, 10)
    expected_sims, expected_positions = brute_force(keys, queries, 10)
    np.testing.assert_allclose(similarities.numpy(), expected_sims, atol=1e-5)
    exact = queries.astype(np.float64) @ keys.astype(np.float64).T
    for row in range(len(queries)):
        np.testing.assert_allclose(exact[row, positions[row].numpy()], expected_sims[row], atol=1e-5)
        untied = np.abs(np.diff(expected_sims[row])) > 1e-5
        assert len(set(positions[row].numpy())) == 10
        if untied.all():
            np.testing.assert_array_equal(positions[row].numpy(), expected_positions[row])
    assert isinstance(similarities, torch.Tensor) and positions.dtype == torch.int64


def test_search_returns_tensors_on_the_queries_device_and_normalises():
    keys, queries = clustered(n_keys=300, n_queries=5)
    index = SupportIndex(64, device="cpu").add(torch.from_numpy(keys) * 3.0)
    similarities, _ = index.search(torch.from_numpy(queries) * 7.0, 3)
    assert similarities.max() <= 1.0 + 1e-5 and similarities.device.type == "cpu"


@pytest.mark.parametrize("kind,options,minimum", [
    ("ivf_flat", {"nlist": 64, "nprobe": 16}, 0.95),
    ("ivf_pq", {"nlist": 64, "nprobe": 16, "pq_m": 32, "pq_bits": 8, "refine": 4}, 0.95),
    ("ivf_pq", {"nlist": 64, "nprobe": 16, "pq_m": 32, "pq_bits": 8}, 0.8),
    ("hnsw", {"hnsw_m": 32, "ef_search": 128}, 0.95),
])
def test_approximate_kinds_reach_recall_at_10(kind, options, minimum):
    """4,000 clustered keys, 200 queries, D=64; plain IVF-PQ is documented at ~0.88."""
    keys, queries = clustered()
    index = SupportIndex(64, kind, device="cpu", **options).add(keys)
    _, positions = index.search(queries, 10)
    _, truth = brute_force(keys, queries, 10)
    recall = np.mean([len(set(p) & set(t)) / 10 for p, t in zip(positions.numpy(), truth)])
    assert recall >= minimum, f"{kind} recall@10 = {recall:.3f}"


def test_save_load_round_trip_and_damage(tmp_path):
    keys, queries = clustered(n_keys=800, n_queries=20)
    index = SupportIndex(64, "ivf_flat", device="cpu", nlist=16).add(
        keys, labels=np.arange(800) % 9, paths=[f"img/{i}.jpg" for i in range(800)],
        captions=[f"caption {i}" for i in range(800)])
    index.metadata = {"pool": "synthetic"}
    path = tmp_path / "pool.safetensors"
    index.save(path)
    loaded = SupportIndex.load(path, device="cpu")
    for a, b in zip(index.search(queries, 5), loaded.search(queries, 5)):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(loaded.labels, index.labels)
    assert loaded.paths[7] == "img/7.jpg" and loaded.captions[3] == "caption 3"
    assert loaded.kind == "ivf_flat" and loaded.metadata == {"pool": "synthetic"}
    blob = path.read_bytes()
    path.write_bytes(blob[:200])
    with pytest.raises(ValueError, match="pool.safetensors is not a support index file adaptkit can trust"):
        SupportIndex.load(path)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x04
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="SHA-256"):
        SupportIndex.load(path)


def test_out_of_core_index_over_a_sharded_store_finds_the_exact_neighbours(tiny, tmp_path, capfd):
    rng = np.random.default_rng(0)
    images = ak.datasets.ImageSet(rng.integers(0, 255, (900, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 900),
                                  ["a", "b", "c"], "pool")
    entry = ak.extract(tiny, images, cache_dir=tmp_path / "cache", load=False, shard_size=128, progress=False)
    assert len(entry.manifest["shards"]) == 4
    capfd.readouterr()
    on_disk = SupportIndex.from_entry(entry, tmp_path / "lists", "ivf_flat", nlist=8, nprobe=8, train_size=400)
    assert capfd.readouterr().out == "", "faiss's progress goes to stderr, never stdout"
    features = entry.load().features
    exact = SupportIndex(features.shape[1], "flat", device="cpu").add(features)
    queries = features[::30] + 0.01 * torch.randn(30, features.shape[1])
    for a, b in zip(on_disk.search(queries, 7), exact.search(queries, 7)):
        torch.testing.assert_close(a, b)
    np.testing.assert_array_equal(on_disk.labels, images.labels)
    np.testing.assert_array_equal(on_disk.ids, np.arange(900))
    assert (Path(on_disk.lists_folder) / "lists.ivfdata").is_file() and Path(on_disk.lists_folder).parent == tmp_path / "lists"
    on_disk.save(tmp_path / "pool.safetensors")
    reloaded = SupportIndex.load(tmp_path / "pool.safetensors")
    assert torch.equal(reloaded.search(queries, 7)[1], exact.search(queries, 7)[1])
    with pytest.raises(ValueError, match="takes no more keys"):
        reloaded.add(features[:2])


def test_bad_arguments():
    with pytest.raises(ValueError, match="'kind' parameter of SupportIndex must be a str among"):
        SupportIndex(8, "lsh")
    for kwargs, match in [({"nprobe": 0}, "'nprobe'"), ({"pq_bits": 40}, "'pq_bits'"), ({"nlist": True}, "'nlist'"),
                          ({"device": "tpu"}, "'device'")]:
        with pytest.raises(ValueError, match=match):
            SupportIndex(8, **kwargs)
    with pytest.raises(ValueError, match="pq_m must divide dim=10"):
        SupportIndex(10, "ivf_pq", pq_m=4)
    index = SupportIndex(8, device="cpu")
    with pytest.raises(ValueError, match="the index is empty"):
        index.search(np.ones((1, 8), np.float32), 1)
    index.add(np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match=r"The 'k' parameter of SupportIndex.search must be an int in the range \[1, 8\]"):
        index.search(np.ones((1, 8), np.float32), 9)
    with pytest.raises(ValueError, match="queries has 4 features, but this SupportIndex is expecting 8"):
        index.search(np.ones((1, 4), np.float32), 1)
    with pytest.raises(ValueError, match="labels must have one entry per feature"):
        index.add(np.eye(8, dtype=np.float32), labels=[1, 2])


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs faiss-gpu and a CUDA device")
def test_gpu_exact_search_equals_cpu():
    keys, queries = clustered()
    cpu = SupportIndex(64, device="cpu").add(keys)
    gpu = SupportIndex(64, device="cuda").add(torch.from_numpy(keys).cuda())
    sims_gpu, pos_gpu = gpu.search(torch.from_numpy(queries).cuda(), 10)
    sims_cpu, pos_cpu = cpu.search(queries, 10)
    assert sims_gpu.is_cuda
    torch.testing.assert_close(sims_gpu.cpu(), sims_cpu, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,extra", [(ak.TipAdapter, {}), (TipX, {}), (CaptionCache, {"captions": True})])
def test_top_k_all_keys_equals_dense(cls, extra):
    X, y, X_test, _, T = clip_like(n_classes=12, dim=64, per_class=10, n_test=60)
    if extra:
        extra = {"captions": normalize(X[::-1] + 0.1).astype(np.float32)}
    dense = cls(alpha=1.5, beta=4.0, top_k=None, device="cpu").fit(X, y, text_weights=T, **extra)
    sparse = cls(alpha=1.5, beta=4.0, top_k=len(X), device="cpu").fit(X, y, text_weights=T, **extra)
    assert_logits_close(sparse.decision_function(X_test), dense.decision_function(X_test), rtol=1e-6)


def test_small_top_k_stays_close_to_dense():
    """480 keys in 12 classes of 40; k = 64 keeps a query's class and its nearest rivals. The
    documented tolerance: logits within 5 % of the cache term's scale, ≥ 98 % equal predictions."""
    X, y, X_test, _, T = clip_like(n_classes=12, dim=64, per_class=40, n_test=300, spread=0.15, text_noise=1.0)
    dense = ak.TipAdapter(alpha=3.0, beta=6.0, top_k=None, device="cpu").fit(X, y, text_weights=T)
    sparse = ak.TipAdapter(alpha=3.0, beta=6.0, top_k=64, device="cpu").fit(X, y, text_weights=T)
    dense_logits, sparse_logits = dense.decision_function(X_test), sparse.decision_function(X_test)
    cache_scale = np.abs(dense_logits - 100 * X_test @ T.T).max()
    assert np.abs(dense_logits - sparse_logits).max() <= 0.05 * cache_scale
    assert (dense.predict(X_test) == sparse.predict(X_test)).mean() >= 0.98


def test_sparse_adapter_tunes_saves_and_reloads(tmp_path):
    X, y, X_test, y_test, T = clip_like(n_classes=10, dim=64, per_class=8, n_test=40)
    tip = ak.TipAdapter(top_k=16, device="cpu").fit(X, y, text_weights=T)
    tuned = ak.tune(tip, X_test, y_test, {"beta": [1.0, 5.0], "alpha": [0.5, 2.0]})
    tuned.save(tmp_path / "tip.safetensors")
    loaded = ak.load_adapter(tmp_path / "tip.safetensors")
    np.testing.assert_array_equal(loaded.decision_function(X_test), tuned.decision_function(X_test))


def synthetic_pool(n_classes=8, per_class=60, noise_items=200, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(n_classes, dim)))
    labels = np.repeat(np.arange(n_classes), per_class)
    pool = normalize(centres[labels] + 0.15 * rng.normal(size=(len(labels), dim)))
    junk = normalize(rng.normal(size=(noise_items, dim)))
    features = np.concatenate([pool, junk]).astype(np.float32)
    truth = np.concatenate([labels, np.full(noise_items, -1)])
    text = normalize(centres + 0.08 * rng.normal(size=centres.shape)).astype(np.float32)
    return features, truth, text


def test_retrieval_built_support_set_recovers_the_classes():
    features, truth, text = synthetic_pool()
    pool = ak.FeatureSet(torch.from_numpy(features), torch.zeros(len(features), dtype=torch.int64), ["?"],
                         {"name": "pool", "key": "abc", "paths": [f"p/{i}.png" for i in range(len(features))]})
    names = [f"class {c}" for c in range(8)]
    support = build_support_set(pool, text, 16, classnames=names, queries=class_queries(names))
    positions = np.array(support.metadata["pool_positions"])
    precision = (truth[positions] == support.labels.numpy()).mean()
    print(f"retrieval precision: {precision:.3f}")
    assert precision >= 0.95
    assert support.features.shape == (8 * 16, 64) and len(set(positions)) == len(positions)
    assert torch.allclose(support.features, torch.from_numpy(features[positions]))
    provenance = support.metadata["provenance"]
    assert provenance["shots"] == 16 and provenance["pool"]["key"] == "abc"
    assert provenance["queries"][2] == "a photo of a class 2." and support.metadata["paths"][0].startswith("p/")
    again = build_support_set(pool, text, 16, classnames=names)
    assert again.metadata["pool_positions"] == support.metadata["pool_positions"]
    index = SupportIndex(64, device="cpu").add(features)
    from_index = build_support_set(index, text, 16, classnames=names)
    assert from_index.metadata["pool_positions"] == support.metadata["pool_positions"]
    with pytest.raises(ValueError, match="fewer than the 200 per class × 8 classes"):
        build_support_set(pool, text, 200, classnames=names)
    crowded = build_support_set(pool, text, 80, classnames=names, oversample=1)
    assert len(set(crowded.metadata["pool_positions"])) == 640


def test_class_queries_with_captions():
    assert class_queries(["cat", "dog"], captions={"dog": "It barks."}) == ["a photo of a cat.",
                                                                            "a photo of a dog. It barks."]
    with pytest.raises(ValueError, match="one caption per class"):
        class_queries(["cat", "dog"], captions=["only one"])


def test_cli_support_build(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "classes.txt").write_text("cat\ndog\nship\n")
    out = tmp_path / "support.safetensors"
    result = CliRunner().invoke(app, ["support", "build", str(tmp_path), "--classes",
                                      str(tmp_path / "classes.txt"), "--shots", "4", "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    support = ak.load_features(out)
    assert support.features.shape == (12, 64) and support.classnames == ["cat", "dog", "ship"]
    assert len(set(support.metadata["paths"])) == 12 and "provenance" in support.metadata


def test_class_queries_fill_templates_as_prompts_do():
    from adaptkit.support import class_queries

    assert class_queries(["cat", "dog"], "a photo of a {c}.") == ["a photo of a cat.", "a photo of a dog."]
    assert class_queries(["cat"], "a {} photo", captions={"cat": "on a sofa"}) == ["a cat photo on a sofa"]
    with pytest.raises(TypeError, match="template must be a string"):
        class_queries(["cat"], ["a {}"])


def test_ivf_pq_on_a_small_pool_is_refused_by_name_and_warns_once(capfd):
    small = torch.nn.functional.normalize(torch.randn(200, 64), dim=-1)
    with pytest.raises(ValueError, match=r"pq_bits=8 needs at least 256 keys"):
        SupportIndex(64, kind="ivf_pq", device="cpu").add(small)
    with pytest.raises(ValueError, match=r"nlist=500 IVF cells need at least 500 keys"):
        SupportIndex(64, kind="ivf_flat", nlist=500, device="cpu").add(small)
    pool = torch.nn.functional.normalize(torch.randn(2000, 64), dim=-1)
    capfd.readouterr()
    with pytest.warns(UserWarning, match="faiss recommends at least 9984") as caught:
        SupportIndex(64, kind="ivf_pq", device="cpu").add(pool)
    assert len([w for w in caught if "recommends" in str(w.message)]) == 1
    assert "WARNING clustering" not in capfd.readouterr().err


def test_an_ivf_search_that_reaches_fewer_than_k_keys_says_so():
    keys = torch.nn.functional.normalize(torch.randn(400, 16), dim=-1)
    index = SupportIndex(16, kind="ivf_flat", nlist=10, nprobe=1, device="cpu").add(keys)
    with pytest.raises(ValueError, match=r"of the k=300 nearest keys are reachable .* nprobe=1 .* raise nprobe or lower k"):
        index.search(keys[:5], 300)
    similarities, positions = SupportIndex(16, kind="flat", device="cpu").add(keys).search(keys[:5], 300)
    assert bool((positions >= 0).all()) and bool((similarities > -2).all())


@pytest.mark.parametrize("on_disk", [False, True])
def test_support_provenance_names_pool_positions_and_paths_when_pool_images_were_skipped(tmp_path, on_disk):
    from PIL import Image

    rng = np.random.default_rng(0)
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(60):
        path = pool / f"{i:02d}.png"
        if i % 7 == 3:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(path)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    out = tmp_path / "support.safetensors"
    args = ["support", "build", str(pool), "--classes", str(tmp_path / "classes.txt"), "--shots", "8", "--out",
            str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--workers", "0"]
    result = CliRunner().invoke(app, args + (["--index-dir", str(tmp_path / "index")] if on_disk else []))
    assert result.exit_code == 0, result.output
    support = ak.load_features(out)
    positions = support.metadata["pool_positions"]
    assert all(p % 7 != 3 for p in positions), positions  # pool positions, not rows of the kept images
    assert support.metadata["paths"] == [str(pool / f"{p:02d}.png") for p in positions]
    images = ak.datasets.ImageSet([str(pool / f"{p:02d}.png") for p in positions], [0] * 16, ["x"], "picked")
    encoded = ak.extract(ak.Backbone(ak.TINY, device="cpu"), images, cache_dir=False, progress=False)
    torch.testing.assert_close(support.features, encoded.features, atol=1e-5, rtol=0)
