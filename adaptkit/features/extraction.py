"""Feature extraction and the content-addressed on-disk feature cache.

Encoding is the one expensive step, so :func:`extract` runs it once per (backbone identity,
images, split, transform, views, seed, storage dtype) and stores the result under
``cache_dir`` (default ``$ADAPTKIT_CACHE`` or ``~/.cache/adaptkit/features``) as checksummed
shards written as they are produced (:mod:`adaptkit.features.store`). An interrupted or killed
extraction resumes from its finished shards; a finished entry loads as one :class:`FeatureSet`.
Two processes asking for the same entry share the work: one encodes, the other waits and loads.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from .._options import DECODERS, ENGINES, ON_ERROR
from .._params import Int as IntRange
from .._params import StrOptions, check_params
from ..backbones import Backbone
from ..data.base import ImageSet
from ..storage import UntrustedFileError, expand_path, json_sha256
from .featureset import FeatureSet
from .pipeline import encode_local
from .ray_engine import encode_ray
from .store import STORAGE_DTYPES, FeatureStore, ShardPlan, as_storage_dtype, auto_shard_size, plan_shards

logger = logging.getLogger("adaptkit")

CACHE_FORMAT = 1
"""Part of every cache key: bump when the numbers a key names would change."""


def default_cache_dir() -> Path:
    """``$ADAPTKIT_CACHE`` if set, else ``~/.cache/adaptkit/features``."""
    return Path(os.environ.get("ADAPTKIT_CACHE", Path.home() / ".cache" / "adaptkit" / "features"))


class FeatureEntry:
    """A finished cache entry on disk, not loaded: for sets larger than memory.

    ``shape``, ``classnames`` and ``metadata`` describe it; :meth:`iter_shards` yields its rows
    shard by shard (verified) and :meth:`load` assembles the whole :class:`FeatureSet`."""

    def __init__(self, store: FeatureStore, key: str, manifest: dict):
        self.store, self.key, self.manifest = store, key, manifest
        self.shape = tuple(manifest["shape"])
        self.classnames = list(manifest["classnames"])
        self.metadata = {**manifest["metadata"], **({"skipped": manifest["skipped"]} if manifest["skipped"] else {})}

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FeatureEntry({self.metadata.get('name')!r}, shape={self.shape}, {len(self.manifest['shards'])} shards)"

    def iter_shards(self):
        """(features float32 (n, [V,] D), labels (n,), positions (n,)) per shard, in order."""
        for number, shard in enumerate(self.manifest["shards"]):
            plan = ShardPlan(number, shard["start"], shard["stop"], shard["id"])
            try:
                tensors, _ = self.store.read_shard(plan)
            except UntrustedFileError as err:
                raise ValueError(f"{err}; run extract again to re-encode it") from None
            yield tensors["features"].float(), tensors["labels"], tensors["positions"]

    def load(self, on_error: str = "skip") -> FeatureSet:
        """The whole entry as one FeatureSet."""
        assembled = self.store.assemble(self.key, self.manifest)
        if assembled is None:
            raise ValueError(f"feature cache entry {self.key} is damaged; run extract again to re-encode it")
        return _feature_set(self.manifest, assembled[0], assembled[1], on_error)


def cache_key(backbone: Backbone, images: ImageSet, transform: str, views: int, seed: int, dtype: str) -> str:
    """SHA-256 of everything that changes the stored numbers."""
    description = {
        "format": CACHE_FORMAT,
        "backbone": backbone.identity,
        "images": images.fingerprint(),
        "set": images.name,
        "transform": transform,
        "views": views,
        "seed": seed if views > 1 else None,
        "dtype": dtype,
    }
    return json_sha256(description)



_CONSTRAINTS = {
    "views": [IntRange(1, None, closed="left")],
    "seed": [IntRange(0, None, closed="left")],
    "batch_size": [IntRange(1, None, closed="left")],
    "dtype": [StrOptions(set(STORAGE_DTYPES))],
    "num_workers": [IntRange(0, None, closed="left"), StrOptions({"auto"})],
    "decode": [StrOptions(set(DECODERS))],
    "engine": [StrOptions(set(ENGINES))],
    "on_error": [StrOptions(set(ON_ERROR))],
    "shard_size": [IntRange(1, None, closed="left"), StrOptions({"auto"})],
    "progress": ["boolean"],
    "refresh": ["boolean"],
    "load": ["boolean"],
    "address": [str, None],
}


def _description(images: ImageSet, backbone: Backbone, key: str, views: int, seed: int, dtype: str,
                 shape: list[int], skipped: list[dict]) -> dict:
    return {"shape": shape, "dtype": dtype, "classnames": images.classnames, "skipped": skipped,
            "metadata": {"name": images.name, "backbone": backbone.identity, "views": views,
                         "seed": seed if views > 1 else None, "key": key}}


def _note_skipped(manifest: dict, on_error: str) -> None:
    """Warn when a set cached with on_error='skip' is asked for under on_error='raise'."""
    skipped = manifest.get("skipped", [])
    if skipped and on_error == "raise":
        first = skipped[0]
        warnings.warn(f"{manifest['metadata'].get('name')}: {len(skipped)} image(s) were left out when this set was "
                      f"encoded with on_error='skip' (e.g. {first['image']}: {first['reason']}); the set is used "
                      "without them (metadata['skipped'] lists them). Fix the files and pass refresh=True to "
                      "encode them.", UserWarning, stacklevel=4)


def _feature_set(manifest: dict, features: torch.Tensor, labels: torch.Tensor, on_error: str) -> FeatureSet:
    _note_skipped(manifest, on_error)
    skipped = manifest.get("skipped", [])
    metadata = dict(manifest["metadata"])
    if skipped:
        metadata["skipped"] = skipped
    return FeatureSet(features, labels, list(manifest["classnames"]), metadata)


def _read_entry(store: FeatureStore, key: str, on_error: str) -> FeatureSet | None:
    manifest = store.read_manifest(key)
    if manifest is None:
        return None
    assembled = store.assemble(key, manifest)
    if assembled is None:
        return None
    return _feature_set(manifest, *assembled[:2], on_error)


def _entry(store: FeatureStore, key: str, on_error: str) -> FeatureEntry | None:
    """The published entry as a handle, every shard's checksum verified (a damaged one is deleted:
    ``None``, and extraction re-encodes it), one shard in memory at a time."""
    manifest = store.read_manifest(key)
    if manifest is None:
        return None
    for number, shard in enumerate(manifest["shards"]):
        if not store.verified(ShardPlan(number, shard["start"], shard["stop"], shard["id"])):
            return None
    _note_skipped(manifest, on_error)
    return FeatureEntry(store, key, manifest)


def _encoder(engine: str):
    return encode_ray if engine == "ray" else encode_local


def extract(backbone: Backbone, images: ImageSet, views: int = 1, seed: int = 0, *, batch_size: int = 256,
            cache_dir: str | os.PathLike | bool | None = None, dtype: str = "float32",
            num_workers: int | str = "auto", decode: str = "cpu", engine: str = "local", address: str | None = None,
            on_error: str = "raise", shard_size: int | str = "auto", progress: bool = True,
            refresh: bool = False, load: bool = True) -> FeatureSet | FeatureEntry:
    """Encode ``images`` with ``backbone``, through the on-disk cache.

    Parameters
    ----------
    views : 1 uses the backbone's own preprocessing and gives (N, D) features; ``views > 1``
        encodes each image ``views`` times under :meth:`Backbone.support_augmentation`, the views
        of image i seeded by (``seed``, i), and gives (N, V, D).
    seed : integer ≥ 0 seeding the views.
    batch_size : images × views per forward pass.
    cache_dir : the cache folder (default ``$ADAPTKIT_CACHE``); ``False`` encodes without caching.
    dtype : storage dtype, ``"float32"`` or ``"float16"``; loaded features are always float32.
    num_workers : loader processes decoding images; ``"auto"`` = the CPUs this process may use
        (at most 16). Features do not depend on it.
    decode : ``"cpu"``, or ``"gpu"`` to decode JPEG files on a CUDA backbone's GPU (nvjpeg)
        with the preprocessing there too; pays off when the CPUs cannot decode as fast as the
        GPU encodes (small models, few cores). Its features differ slightly from CPU decoding
        (another resampling implementation) and are cached separately.
    engine : ``"local"`` (this process and its loader workers) or ``"ray"`` (a Ray Data job:
        decoding as CPU tasks, encoding in an actor pool, one GPU per actor when there are GPUs;
        ``address`` joins a running cluster, else a local Ray starts). Both write the same cache.
    on_error : ``"raise"``: an unreadable image stops the run with a ``ValueError`` naming it,
        after the shards finished so far are stored. ``"skip"``: leave it out and record it in
        ``metadata["skipped"]``; labels stay aligned with the kept images.
    shard_size : images per stored shard (``"auto"``: about 32 shards, 128 to 8,192 images),
        rounded up to a multiple of the images per batch so that a resumed run encodes exactly
        the batches of an uninterrupted one (bit-identical features).
    progress : a progress bar on a terminal or in a notebook.
    refresh : encode again even when the cache has the entry.
    load : ``False`` returns a :class:`FeatureEntry` (the stored entry, not loaded) for sets
        larger than memory, such as retrieval pools.
    """
    if not isinstance(backbone, Backbone):
        raise TypeError(f"backbone must be an adaptkit.Backbone; got {type(backbone).__name__}")
    if not isinstance(images, ImageSet):
        raise TypeError(f"images must be an adaptkit ImageSet (e.g. dataset.split('test')); "
                        f"got {type(images).__name__}")
    check_params("extract", _CONSTRAINTS, {"views": views, "seed": seed, "batch_size": batch_size, "dtype": dtype,
                                           "num_workers": num_workers, "decode": decode, "engine": engine,
                                           "on_error": on_error, "shard_size": shard_size, "progress": progress,
                                           "refresh": refresh, "load": load, "address": address})
    if cache_dir is not False and cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a folder path, None (the default cache) or False; got {cache_dir!r}")
    if len(images) == 0:
        raise ValueError(f"images {images.name!r} holds no images; there is nothing to encode")
    if engine == "ray" and decode == "gpu":
        raise ValueError("decode='gpu' runs with engine='local'; the Ray engine decodes on CPU workers")
    images.source.check_unchanged()
    transform = backbone.preprocess if views == 1 else backbone.support_augmentation()
    transform_id = repr(transform) + ("|decode=gpu" if decode == "gpu" else "")
    key = cache_key(backbone, images, transform_id, views, seed, dtype)
    per_batch = max(1, batch_size // views)
    size = auto_shard_size(len(images)) if shard_size == "auto" else shard_size
    size = -(-size // per_batch) * per_batch
    identities = [images.source.identity(i) for i in range(len(images))]
    config = {"backbone": backbone.identity, "transform": transform_id, "views": views,
              "seed": seed if views > 1 else None, "dtype": dtype}
    plans = plan_shards(identities, images.labels, config, size, positional=views > 1)
    encode = _encoder(engine)
    options = {"batch_size": batch_size, "num_workers": num_workers, "on_error": on_error, "decode": decode,
               "progress": progress}
    if engine == "ray":
        options["address"] = address
    if cache_dir is False:
        if not load:
            raise ValueError("load=False keeps the features on disk; it needs the cache (cache_dir must not be False)")
        return _extract_in_memory(backbone, images, transform, views, seed, plans, key, dtype, encode, options)

    store = FeatureStore(expand_path(cache_dir, "cache_dir") if cache_dir is not None else default_cache_dir())
    read = _read_entry if load else _entry
    store.remove_stale_temporaries()  # leftovers of killed writes; a read-only cache keeps its own
    if not refresh:  # a finished entry needs no write: read-only caches serve it
        found = read(store, key, on_error)
        if found is not None:
            return found
    store.check_writable(f"{images.name} is not among its finished entries")
    with store.lock(key):
        if refresh:
            store.remove(key)
        else:
            found = read(store, key, on_error)
            if found is not None:
                return found
        for _ in range(3):
            todo = [plan for plan in plans if not store.has_shard(plan)]

            def write(plan, features, labels, positions, skipped):
                store.write_shard(plan, features, labels, positions, skipped, dtype)

            encode(backbone, images, transform, views, seed, todo, write=write, **options)
            rows, skipped = 0, []
            for plan in plans:
                info = store.shard_rows(plan)
                if info is None:
                    break
                rows, skipped = rows + info[0], skipped + info[1]
            else:
                tail = [backbone.embed_dim] if views == 1 else [views, backbone.embed_dim]
                store.publish(key, plans, _description(images, backbone, key, views, seed, dtype, [rows, *tail],
                                                      skipped))
                found = read(store, key, on_error)
                if found is not None:
                    return found
        raise RuntimeError(f"feature cache {store.root}: shards of {images.name} keep failing verification after "
                           "being written; is the disk full or failing?")


def _extract_in_memory(backbone, images, transform, views, seed, plans, key, dtype, encode, options) -> FeatureSet:
    """Encode without the cache: shards are kept in memory and joined."""
    parts: list[tuple[torch.Tensor, torch.Tensor, list[dict]]] = []

    def write(plan, features, labels, positions, skipped):
        parts.append((as_storage_dtype(features, dtype).float(), labels, skipped))

    encode(backbone, images, transform, views, seed, plans, write=write, **options)
    skipped = [s for _, _, part in parts for s in part]
    manifest = _description(images, backbone, key, views, seed, dtype, [], skipped)
    return _feature_set(manifest, torch.cat([f for f, _, _ in parts]), torch.cat([y for _, y, _ in parts]),
                        options["on_error"])
