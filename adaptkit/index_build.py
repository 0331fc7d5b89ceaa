"""The folder of one out-of-core support-index build: writing it, checking it, cleaning up.

A build lies in ``FOLDER/build-<time>-<id>/``: ``lists.ivfdata`` (faiss's on-disk inverted lists),
``labels.npy`` and ``ids.npy`` (one row per key), and ``COMPLETE``, written last, with every file's
size and SHA-256. :class:`adaptkit.index.SupportIndex` records the same sizes and checksums in
its saved file and checks them when it loads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

try:  # faiss is an extra: adaptkit.index says how to install it
    import faiss
    from faiss.contrib.ondisk import merge_ondisk
except ImportError:
    faiss = None
import numpy as np
import torch.nn.functional as F

from .storage import file_sha256, write_text

logger = logging.getLogger("adaptkit")

BUILD_FILES = ("lists.ivfdata", "labels.npy", "ids.npy")
"""The files of an out-of-core build, recorded (size, SHA-256) in its ``COMPLETE`` marker and ``.st``."""
STALE_BUILD_S = 3600.0
"""An unfinished build folder older than this (s) is a killed build's leftover."""


def describe_files(build: Path) -> dict[str, dict]:
    """{file name: {"size", "sha256"}} of the build's files, as they lie on disk."""
    return {name: {"size": (build / name).stat().st_size, "sha256": file_sha256(build / name)} for name in BUILD_FILES}


def check_build_files(build: Path, files: dict, hash_names: tuple[str, ...]) -> None:
    """Refuse a build whose files are missing, of another size, or (for ``hash_names``) of
    another SHA-256 than recorded; every error names the file."""
    for name in BUILD_FILES:
        path, recorded = build / name, files[name]
        try:
            size = path.stat().st_size
        except OSError as err:
            raise ValueError(f"support index file {path} cannot be read ({err.strerror or err}); the index needs its "
                             "build folder as it was saved") from None
        if size != recorded["size"]:
            raise ValueError(f"support index file {path} holds {size} bytes, its index records {recorded['size']} "
                             "(truncated, rewritten or from another build); rebuild the index")
        if name in hash_names and file_sha256(path) != recorded["sha256"]:
            raise ValueError(f"support index file {path} does not match its recorded SHA-256 (edited, damaged or from "
                             "another build); rebuild the index")


def remove_stale_builds(folder: Path) -> None:
    """Delete unfinished build folders (no ``COMPLETE``) older than :data:`STALE_BUILD_S`."""
    now = time.time()
    for build in folder.glob("build-*"):
        if build.is_dir() and not (build / "COMPLETE").exists():
            try:
                if now - build.stat().st_mtime > STALE_BUILD_S:
                    shutil.rmtree(build)
                    logger.info("support index folder %s: removed %s, left by a killed build", folder, build.name)
            except OSError:
                continue


@contextlib.contextmanager
def _stdout_to_stderr():
    """faiss's C++ code prints progress ("resizing ...") on file descriptor 1; send it to stderr so
    that a command's standard output stays its own."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def write_build(build: Path, entry, trained) -> dict[str, dict]:
    """Add the entry's shards to copies of the trained index as blocks, merge them into the build's
    on-disk lists, write labels and ids, then ``COMPLETE``; returns the files' sizes and SHA-256."""
    n = entry.shape[0]
    blocks, labels_path, ids_path = [], build / "labels.npy", build / "ids.npy"
    labels = np.lib.format.open_memmap(labels_path, mode="w+", dtype=np.int64, shape=(n,))
    ids = np.lib.format.open_memmap(ids_path, mode="w+", dtype=np.int64, shape=(n,))
    row = 0
    for number, (features, shard_labels, positions) in enumerate(entry.iter_shards()):
        block = faiss.clone_index(trained)
        block.add_with_ids(F.normalize(features, dim=-1).contiguous().numpy(),
                           np.arange(row, row + features.shape[0], dtype=np.int64))
        path = build / f"block-{number:05d}.index"
        faiss.write_index(block, str(path))
        blocks.append(str(path))
        labels[row:row + features.shape[0]] = shard_labels.numpy()
        ids[row:row + features.shape[0]] = positions.numpy()
        row += features.shape[0]
        del block
    labels.flush()
    ids.flush()
    del labels, ids
    with _stdout_to_stderr():
        merge_ondisk(trained, blocks, str(build / "lists.ivfdata"))
    for path in blocks:
        os.unlink(path)
    files = describe_files(build)  # hashed as they lie on disk: the build's own verification
    write_text(build / "COMPLETE", json.dumps({"entry": entry.key, "files": files}, indent=1))
    return files
