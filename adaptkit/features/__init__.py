"""Feature extraction and the content-addressed on-disk feature cache.

Encoding is the one expensive step, so :func:`extract` runs it once per (backbone identity,
images, split, transform, views, seed, storage dtype) and stores the result under
``cache_dir`` (default ``$ADAPTKIT_CACHE`` or ``~/.cache/adaptkit/features``) as checksummed
shards written as they are produced (:mod:`adaptkit.features.store`). An interrupted or killed
extraction resumes from its finished shards; a finished entry loads as one :class:`FeatureSet`.
Two processes asking for the same entry share the work: one encodes, the other waits and loads.

:func:`save_features` / :func:`load_features` write and read one checksummed safetensors file.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from .._params import StrOptions, check_params
from .._params import Int as IntRange
from ..backbones import Backbone
from ..data.base import ImageSet
from ..storage import UntrustedFileError, expand_path, json_sha256, peek_format, read_checked, write_checked
from .store import STORAGE_DTYPES, FeatureStore, ShardPlan, auto_shard_size, plan_shards

logger = logging.getLogger("adaptkit")

CACHE_FORMAT = 1
"""Part of every cache key: bump when the numbers a key names would change."""
FILE_FORMAT = "adaptkit-features"
FILE_FORMAT_VERSION = 1
ENGINES = ("local", "ray")
ON_ERROR = ("raise", "skip")
DECODERS = ("cpu", "gpu")


def default_cache_dir() -> Path:
    """``$ADAPTKIT_CACHE`` if set, else ``~/.cache/adaptkit/features``."""
    return Path(os.environ.get("ADAPTKIT_CACHE", Path.home() / ".cache" / "adaptkit" / "features"))


@dataclass
class FeatureSet:
    """Encoded images of one set.

    features : float32, (N, D) for one view per image, (N, V, D) for ``V`` augmented views;
        rows L2-normalised.
    labels : int64 (N,).
    classnames : class names, index = label.
    metadata : what produced the features (backbone identity, set name, views, seed, cache key,
        and ``skipped``: the images left out with ``on_error="skip"``, with their reasons).
    """

    features: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.features, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise TypeError(f"features and labels must be torch tensors; got {type(self.features).__name__} and "
                            f"{type(self.labels).__name__}")
        if isinstance(self.classnames, str) or not isinstance(self.classnames, (list, tuple)):
            raise TypeError(f"classnames must be a list of strings; got {type(self.classnames).__name__}")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata must be a dict; got {type(self.metadata).__name__} {self.metadata!r:.60}")
        self.classnames = list(self.classnames)
        _check_feature_set(self.features, self.labels, self.classnames, "FeatureSet", finite=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"FeatureSet({self.metadata.get('name', '?')!r}, features={tuple(self.features.shape)}, "
                f"{len(self.classnames)} classes)")

    @property
    def views(self) -> int:
        """Augmented views per image (1 for a 2-D feature matrix)."""
        return 1 if self.features.ndim == 2 else int(self.features.shape[1])

    def flat(self) -> FeatureSet:
        """Every view a row: features (N·V, D), labels repeated V times."""
        if self.features.ndim == 2:
            return self
        n, v, d = self.features.shape
        return FeatureSet(self.features.reshape(n * v, d), self.labels.repeat_interleave(v), self.classnames,
                          {**self.metadata, "views_flattened": v})

    def mean_views(self) -> FeatureSet:
        """One row per image: the renormalised mean of its views, (N, D)."""
        if self.features.ndim == 2:
            return self
        return FeatureSet(F.normalize(self.features.mean(dim=1), dim=-1), self.labels, self.classnames,
                          {**self.metadata, "views_averaged": self.views})

    def save(self, path: str | os.PathLike, dtype: str = "float32") -> None:
        """:func:`save_features` as a method."""
        save_features(self, path, dtype)


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


# --- files -----------------------------------------------------------------------------------------

def _check_dtype(dtype) -> None:
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(STORAGE_DTYPES)}; got {dtype!r}")


def _check_feature_set(features, labels, classnames, where: str, finite: bool = True) -> None:
    """Shapes, dtypes, labels against class names and (unless ``finite=False``) finiteness, with
    ``where`` in the message."""
    if features.ndim not in (2, 3) or not features.is_floating_point():
        raise ValueError(f"{where}: features must be a float (N, D) or (N, V, D) tensor; got "
                         f"{features.dtype} {tuple(features.shape)}")
    if labels.dtype != torch.int64 or labels.shape != (features.shape[0],):
        raise ValueError(f"{where}: labels must be int64 of shape ({features.shape[0]},); got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if isinstance(classnames, str) or not all(isinstance(c, str) for c in classnames):
        raise ValueError(f"{where}: classnames must be a list of strings")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classnames)):
        raise ValueError(f"{where}: labels lie in [{int(labels.min())}, {int(labels.max())}] but there are "
                         f"{len(classnames)} class names")
    if finite and not bool(torch.isfinite(features).all()):
        raise ValueError(f"{where}: features hold NaN or infinite values")


def save_features(features: FeatureSet, path: str | os.PathLike, dtype: str = "float32") -> None:
    """Write a FeatureSet as one checksummed safetensors file (atomically); ``dtype`` is the
    storage dtype (``"float32"`` or ``"float16"``, which refuses values it cannot hold)."""
    if not isinstance(features, FeatureSet):
        raise TypeError(f"features must be a FeatureSet; got {type(features).__name__}")
    _check_dtype(dtype)
    path = expand_path(path)
    _check_feature_set(features.features, features.labels, features.classnames, "save_features")
    stored = features.features.detach().cpu().to(STORAGE_DTYPES[dtype])
    if not bool(torch.isfinite(stored).all()):
        raise ValueError(f"save_features: the features exceed {dtype}'s range; store them with dtype='float32'")
    try:
        json.dumps(features.metadata)
    except (TypeError, ValueError) as err:
        raise TypeError(f"save_features: metadata must be JSON-serialisable ({err})") from None
    header = {"format": FILE_FORMAT, "format_version": FILE_FORMAT_VERSION, "classnames": list(features.classnames),
              "metadata": features.metadata, "dtype": dtype}
    write_checked(path, {"features": stored, "labels": features.labels.detach().cpu().to(torch.int64)}, header)


def _load_legacy(path: Path) -> FeatureSet:
    """A file written by adaptkit 0.1 (safetensors + ``.json`` sidecar, no checksum)."""
    sidecar_path = path.with_name(path.name + ".json")
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        tensors = load_file(str(path))
        features, labels = tensors["features"].float().clone(), tensors["labels"].clone()
        shape_ok = list(features.shape) == sidecar["shape"] and labels.shape == (features.shape[0],)
    except (OSError, ValueError, SafetensorError, KeyError, TypeError) as err:
        raise ValueError(f"feature file {path} is unreadable or damaged ({err})") from err
    if not shape_ok:
        raise ValueError(f"feature file {path} does not match its sidecar {sidecar_path}")
    warnings.warn(f"{path} was written by adaptkit 0.1 and carries no checksum; re-save it with "
                  "save_features to protect it", UserWarning, stacklevel=3)
    _check_feature_set(features, labels, list(sidecar["classnames"]), str(path))
    return FeatureSet(features, labels, list(sidecar["classnames"]), sidecar["metadata"])


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Read a FeatureSet written by :func:`save_features` (checksum, shapes, labels against class
    names and finiteness verified; a damaged file raises ``ValueError`` naming it). Files of
    adaptkit 0.1 (with a ``.json`` sidecar) are read too, with a warning."""
    path = expand_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such feature file: {path}")
    if peek_format(path) is None and path.with_name(path.name + ".json").is_file():
        return _load_legacy(path)
    header, tensors = read_checked(path, FILE_FORMAT, FILE_FORMAT_VERSION, "a feature file")
    if set(tensors) != {"features", "labels"} or not isinstance(header.get("classnames"), list) or \
            not isinstance(header.get("metadata"), dict):
        raise UntrustedFileError(f"{path} is not a feature file adaptkit can trust: its header or tensors are "
                                 "not those of a FeatureSet")
    features = tensors["features"].float()
    _check_feature_set(features, tensors["labels"], header["classnames"], str(path))
    return FeatureSet(features, tensors["labels"], header["classnames"], header["metadata"])


# --- extraction --------------------------------------------------------------------------------

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


def _feature_set(manifest: dict, features: torch.Tensor, labels: torch.Tensor, on_error: str) -> FeatureSet:
    skipped = manifest.get("skipped", [])
    if skipped and on_error == "raise":
        first = skipped[0]
        raise ValueError(f"cannot read image {first['image']}: {first['reason']} ({len(skipped)} image(s) were skipped "
                         "when this set was encoded with on_error='skip'; pass on_error='skip' to load it, or fix "
                         "the files)")
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
    """The published entry as a handle, its shards verified (a damaged one is deleted: ``None``)."""
    manifest = store.read_manifest(key)
    if manifest is None:
        return None
    for number, shard in enumerate(manifest["shards"]):
        if _shard_rows(store, ShardPlan(number, shard["start"], shard["stop"], shard["id"])) is None:
            return None
    if manifest.get("skipped") and on_error == "raise":
        _feature_set(manifest, torch.empty(0), torch.empty(0), on_error)
    return FeatureEntry(store, key, manifest)


def _encoder(engine: str):
    if engine == "ray":
        from .ray_engine import encode_ray

        return encode_ray
    from .pipeline import encode_local

    return encode_local


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
    store.check_writable()
    read = _read_entry if load else _entry
    if not refresh:
        found = read(store, key, on_error)
        if found is not None:
            return found
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
                info = _shard_rows(store, plan)
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


def _shard_rows(store: FeatureStore, plan: ShardPlan) -> tuple[int, list[dict]] | None:
    """(rows, skipped) of a stored shard from its header, or ``None`` (deleted) when damaged."""
    from safetensors import safe_open

    path = store.shard_path(plan.id)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads(handle.metadata()["adaptkit"])
            rows = handle.get_slice("features").get_shape()[0]
        return rows, list(header.get("skipped", []))
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as err:
        store.discard(path, str(err))
        return None


def _extract_in_memory(backbone, images, transform, views, seed, plans, key, dtype, encode, options) -> FeatureSet:
    """Encode without the cache: shards are kept in memory and joined."""
    parts: list[tuple[torch.Tensor, torch.Tensor, list[dict]]] = []

    def write(plan, features, labels, positions, skipped):
        stored = features.to(STORAGE_DTYPES[dtype])
        if dtype == "float16" and not bool(torch.isfinite(stored).all()):
            raise ValueError("features exceed float16's range; use dtype='float32'")
        parts.append((stored.float(), labels, skipped))

    encode(backbone, images, transform, views, seed, plans, write=write, **options)
    skipped = [s for _, _, part in parts for s in part]
    manifest = _description(images, backbone, key, views, seed, dtype, [], skipped)
    return _feature_set(manifest, torch.cat([f for f, _, _ in parts]), torch.cat([y for _, y, _ in parts]),
                        options["on_error"])
