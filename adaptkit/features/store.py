"""The on-disk feature store: content-addressed shards and atomically published entries.

Layout under the cache directory::

    shards/<hh>/<shard id>.safetensors   encoded features of a run of images (immutable)
    entries/<kk>/<key>.json              a finished entry: which shards, class names, metadata
    locks/<key>.lock                     held by the process that is encoding the entry

A shard's id is the SHA-256 of everything that determines its numbers (backbone identity,
transform, views, seed, storage dtype, and each image's identity, label and, with augmented views,
position), so a rerun after a crash, or after fixing or removing one bad file, finds every shard
that was finished and encodes only the rest. Shards and manifests are written atomically and carry
a SHA-256 (:mod:`adaptkit.storage`); an entry becomes visible only when its manifest is renamed
into place, after all its shards. A damaged shard or manifest is reported, deleted and encoded
again: the store is a cache. Readers copy the tensors out, so a later rewrite never changes a
loaded set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..storage import UntrustedFileError, atomic_write, file_lock, json_sha256, read_checked, write_checked

logger = logging.getLogger("adaptkit")

SHARD_FORMAT = "adaptkit-feature-shard"
ENTRY_FORMAT = "adaptkit-feature-entry"
STORE_VERSION = 1
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
STALE_TEMPORARY_S = 3600.0
"""Temporary files older than this (s) are leftovers of a killed write: no write takes an hour."""


def as_storage_dtype(features: torch.Tensor, dtype: str) -> torch.Tensor:
    """``features`` in the storage ``dtype``; a ``ValueError`` when a value overflows it."""
    stored = features.to(STORAGE_DTYPES[dtype])
    if not bool(torch.isfinite(stored).all()):
        raise ValueError(f"features exceed {dtype}'s range; store them with dtype='float32'")
    return stored


@dataclass(frozen=True)
class ShardPlan:
    """Images [start, stop) of a set, encoded into the shard ``id``."""

    number: int
    start: int
    stop: int
    id: str


def plan_shards(identities: list[bytes], labels: np.ndarray, config: dict[str, Any], shard_size: int,
                positional: bool) -> list[ShardPlan]:
    """Cut N images into runs of ``shard_size`` and name each run by the hash of ``config`` and its
    images (identity, label and, when ``positional``, the position that seeds its views)."""
    header = json.dumps(config, sort_keys=True).encode()
    plans = []
    for number, start in enumerate(range(0, len(identities), shard_size)):
        stop = min(len(identities), start + shard_size)
        digest = hashlib.sha256(header)
        for position in range(start, stop):
            digest.update(f"{position if positional else ''}|{int(labels[position])}|".encode())
            digest.update(identities[position] + b"\n")
        plans.append(ShardPlan(number, start, stop, digest.hexdigest()))
    return plans


def auto_shard_size(n_images: int) -> int:
    """About 32 shards per set, a power of two between 128 and 8,192 images."""
    target = max(1, n_images // 32)
    return int(min(8192, max(128, 1 << (target - 1).bit_length())))


class FeatureStore:
    """Shards and entries under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def check_writable(self, why: str = "") -> None:
        """Fail now, before any encoding, when the store cannot be written (``why`` it must be)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ValueError(f"cache_dir={str(self.root)!r} cannot be written ({err.strerror or err})"
                             f"{': ' + why if why else ''}; a read-only cache serves only the entries it holds. "
                             "Pass a writable folder, or cache_dir=False to encode without caching") from None

    def remove_stale_temporaries(self, max_age_s: float = STALE_TEMPORARY_S) -> list[Path]:
        """Delete temporary files a killed write left in ``shards/`` and ``entries/`` (older than
        ``max_age_s``: a write in progress elsewhere is never touched); returns what was deleted."""
        now, removed = time.time(), []
        for folder in (self.root / "shards", self.root / "entries"):
            for path in folder.glob("*/.*.tmp") if folder.is_dir() else ():
                try:
                    if now - path.stat().st_mtime > max_age_s:
                        path.unlink()
                        removed.append(path)
                except OSError:  # gone meanwhile, or a cache this process may not write
                    continue
        if removed:
            logger.info("feature cache %s: removed %d stale temporary file(s) of killed writes", self.root, len(removed))
        return removed

    def verified(self, plan: ShardPlan) -> bool:
        """Whether a stored shard reads back with its checksum; a damaged one is deleted."""
        try:
            self.read_shard(plan)
        except UntrustedFileError as err:
            self.discard(self.shard_path(plan.id), str(err))
            return False
        return True

    def shard_path(self, shard_id: str) -> Path:
        return self.root / "shards" / shard_id[:2] / f"{shard_id}.safetensors"

    def entry_path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.json"

    def lock(self, key: str):
        """The inter-process lock of an entry (waits, with a message, while another process holds it)."""
        return file_lock(self.root / "locks" / f"{key}.lock", "the feature-cache entry being encoded")

    # --- shards -------------------------------------------------------------------------------

    def has_shard(self, plan: ShardPlan) -> bool:
        return self.shard_path(plan.id).is_file()

    def write_shard(self, plan: ShardPlan, features: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor,
                    skipped: list[dict], dtype: str) -> None:
        """Store the encoded rows of one shard (kept images only) and what was skipped."""
        stored = as_storage_dtype(features, dtype)
        header = {"format": SHARD_FORMAT, "format_version": STORE_VERSION, "id": plan.id, "start": plan.start,
                  "stop": plan.stop, "skipped": skipped}
        write_checked(self.shard_path(plan.id), {"features": stored, "labels": labels.to(torch.int64),
                                                 "positions": positions.to(torch.int64)}, header)

    def read_shard(self, plan: ShardPlan) -> tuple[dict[str, torch.Tensor], list[dict]]:
        """(tensors, skipped) of a shard; ``UntrustedFileError`` when it is missing or damaged."""
        path = self.shard_path(plan.id)
        try:
            header, tensors = read_checked(path, SHARD_FORMAT, STORE_VERSION, "a feature shard")
        except FileNotFoundError as err:
            raise UntrustedFileError(f"feature shard {path} is missing") from err
        if header.get("id") != plan.id or {"features", "labels", "positions"} != set(tensors):
            raise UntrustedFileError(f"{path} is not the shard its name says")
        return tensors, header.get("skipped", [])

    def shard_rows(self, plan: ShardPlan) -> tuple[int, list[dict]] | None:
        """(rows, skipped) of a stored shard from its header, or ``None`` (deleted) when damaged."""
        path = self.shard_path(plan.id)
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads(handle.metadata()["adaptkit"])
                rows = handle.get_slice("features").get_shape()[0]
            return rows, list(header.get("skipped", []))
        except (OSError, SafetensorError, KeyError, ValueError, TypeError) as err:
            self.discard(path, str(err))
            return None

    def discard(self, path: Path, reason: str) -> None:
        logger.warning("feature cache: %s is damaged (%s); it will be encoded again", path, reason)
        try:
            path.unlink()
        except OSError:
            pass

    # --- entries ------------------------------------------------------------------------------

    def publish(self, key: str, shards: list[ShardPlan], description: dict[str, Any]) -> None:
        """Make an entry visible: write its manifest (atomically, checksummed) after its shards."""
        manifest = {"format": ENTRY_FORMAT, "format_version": STORE_VERSION, "key": key,
                    "shards": [{"id": s.id, "start": s.start, "stop": s.stop} for s in shards], **description}
        manifest["sha256"] = json_sha256(manifest)
        atomic_write(self.entry_path(key), lambda tmp: Path(tmp).write_text(json.dumps(manifest), encoding="utf-8"))

    def read_manifest(self, key: str) -> dict | None:
        """The verified manifest of an entry, or ``None`` when there is none (a damaged one is
        reported and deleted)."""
        path = self.entry_path(key)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            expected = manifest.pop("sha256")
            ok = (manifest.get("format") == ENTRY_FORMAT and manifest.get("format_version") == STORE_VERSION
                  and manifest.get("key") == key
                  and json_sha256(manifest) == expected)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as err:
            self.discard(path, f"unreadable manifest: {err}")
            return None
        if not ok:
            self.discard(path, "its manifest does not match its SHA-256")
            return None
        return manifest

    def remove(self, key: str) -> None:
        """Delete an entry and the shards it lists (``refresh=True``)."""
        manifest = self.read_manifest(key)
        for shard in (manifest or {}).get("shards", []):
            self.shard_path(shard["id"]).unlink(missing_ok=True)
        self.entry_path(key).unlink(missing_ok=True)

    def assemble(self, key: str, manifest: dict) -> tuple[torch.Tensor, torch.Tensor, list[dict]] | None:
        """(features float32, labels, skipped) of a published entry, read shard by shard into one
        preallocated tensor; ``None`` when a shard is missing or damaged (it is deleted)."""
        plans = [ShardPlan(n, s["start"], s["stop"], s["id"]) for n, s in enumerate(manifest["shards"])]
        shape = manifest["shape"]
        features = torch.empty(shape, dtype=torch.float32)
        labels = torch.empty(shape[0], dtype=torch.int64)
        skipped, row = [], 0
        for plan in plans:
            try:
                tensors, shard_skipped = self.read_shard(plan)
            except UntrustedFileError as err:
                self.discard(self.shard_path(plan.id), str(err))
                return None
            rows = tensors["features"].shape[0]
            if row + rows > shape[0] or tuple(tensors["features"].shape[1:]) != tuple(shape[1:]):
                self.discard(self.shard_path(plan.id), "its shape does not match the entry")
                return None
            features[row:row + rows] = tensors["features"]
            labels[row:row + rows] = tensors["labels"]
            skipped += shard_skipped
            row += rows
        if row != shape[0]:
            self.discard(self.entry_path(key), f"its shards hold {row} rows, the manifest says {shape[0]}")
            return None
        return features, labels, skipped
