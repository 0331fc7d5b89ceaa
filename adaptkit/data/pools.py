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


def open_pool(pool: str | os.PathLike | Sequence[str | os.PathLike]) -> ImageSet:
    """An unlabeled :class:`ImageSet` from a folder of images, webdataset shards (``.tar`` files,
    several of them as a shell glob gives them, or a brace pattern such as ``pool-{000..099}.tar``),
    parquet files with an image column, or a folder of parquet shards (a Hugging Face download)."""
    parts = [pool] if isinstance(pool, (str, os.PathLike)) else list(pool)
    if not parts or not all(isinstance(p, (str, os.PathLike)) for p in parts):
        raise TypeError("pool must be a folder, .tar shards or .parquet files (paths); got "
                        f"{type(pool).__name__}")
    parts = [os.fspath(p) for p in parts]
    name = f"pool:{parts[0]}" + (f" (+{len(parts) - 1})" if len(parts) > 1 else "")
    if all(p.endswith(".tar") or "{" in p for p in parts):
        return ImageSet.from_webdataset(parts if len(parts) > 1 else parts[0], label_key=None, name=name)
    if all(p.endswith(".parquet") for p in parts):
        return ImageSet.from_parquet(parts, label_column=None, name=name)
    if len(parts) > 1:
        raise ValueError(f"pool: several paths must all be .tar shards or all .parquet files; got {parts[:3]}")
    folder = Path(parts[0])
    if not folder.is_dir():
        raise ValueError(f"pool {parts[0]} is not a folder, a .tar shard pattern or a .parquet file")
    files = expand_images([str(folder)])
    if files:
        return ImageSet(files, [0] * len(files), ["unlabeled"], f"pool:{folder.resolve()}")
    shards = sorted(str(p) for p in folder.rglob("*.parquet"))
    if shards:
        return ImageSet.from_parquet(shards, label_column=None, name=f"pool:{folder.resolve()}")
    raise ValueError(f"pool {parts[0]} holds no images and no .parquet shards")
