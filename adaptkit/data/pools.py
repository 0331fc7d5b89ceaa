"""Image lists and unlabeled pools as a user names them: files, folders, webdataset shards, parquet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .base import ImageSet
from .sources import list_image_files


def expand_images(images: Any) -> list:
    """A flat list of images from paths, folders (their visible image files, sorted), PIL images,
    or a preprocessed (N, 3, H, W) tensor (returned as is)."""
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        images = [images]
    out = []
    for image in images:
        if isinstance(image, (str, os.PathLike)) and Path(image).is_dir():
            folder = Path(image)
            out += list_image_files(folder)
        else:
            out.append(image)
    return out


def open_pool(pool: str) -> ImageSet:
    """An unlabeled :class:`ImageSet` from a folder of images, webdataset shards (``.tar`` files,
    brace patterns such as ``pool-{000..099}.tar``) or a parquet file with an image column."""
    if not isinstance(pool, (str, os.PathLike)):
        raise TypeError(f"pool must be a folder, a .tar shard pattern or a .parquet file; got {type(pool).__name__}")
    pool = os.fspath(pool)
    if pool.endswith(".tar") or "{" in pool:
        return ImageSet.from_webdataset(pool, label_key=None, name=f"pool:{pool}")
    if pool.endswith(".parquet"):
        return ImageSet.from_parquet(pool, label_column=None, name=f"pool:{pool}")
    folder = Path(pool)
    if not folder.is_dir():
        raise ValueError(f"pool {pool} is not a folder, a .tar shard pattern or a .parquet file")
    files = expand_images([str(folder)])
    if not files:
        raise ValueError(f"pool {pool} holds no images")
    return ImageSet(files, [0] * len(files), ["unlabeled"], f"pool:{folder.resolve()}")
