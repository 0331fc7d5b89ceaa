"""Datasets: the CoOp 11, ImageNet's OOD variants, generic image folders, the built-in ``digits``.

``load(name, root=...)`` is the one entry point; every loader returns a :class:`Dataset`.
"""

from __future__ import annotations

import os

from .base import Dataset, ImageSet
from .coop import COOP_DATASETS, load_coop
from .digits import load_digits
from .folder import load_image_folder
from .imagenet_variants import VARIANTS, load_imagenet_variant

BUILTIN = ("digits",)
IMAGENET_VARIANTS = tuple(VARIANTS)
NAMES = BUILTIN + COOP_DATASETS + IMAGENET_VARIANTS + ("imagefolder",)
"""Every name :func:`load` accepts (the CLI's choices are ``adaptkit._options.DATASET_NAMES``, the same)."""


def available() -> tuple[str, ...]:
    """Dataset names that :func:`load` accepts (``"imagefolder"`` included)."""
    return NAMES


def load(name: str, root: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a dataset by name.

    ``"digits"`` needs no root. The CoOp datasets (``"oxford_pets"``, ``"imagenet"``, ...) and
    ImageNet's variants (``"imagenet_v2"``, ``"imagenet_sketch"``, ``"imagenet_a"``,
    ``"imagenet_r"``) read ``root/<folder>`` in CoOp's layout. ``"imagefolder"`` reads ``root`` as
    class sub-folders; ``options`` go to :func:`load_image_folder` (``classnames=``, ``templates=``, ...).
    """
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"dataset must be one of {', '.join(NAMES)}; got {name!r}")
    if name == "digits":
        return load_digits()
    if root is None:
        raise ValueError(f"root is required for dataset {name!r}: the folder that holds its files")
    if name == "imagefolder":
        return load_image_folder(root, **options)
    if options:
        raise TypeError(f"dataset {name!r} takes no options; got {sorted(options)}")
    return load_imagenet_variant(name, root) if name in IMAGENET_VARIANTS else load_coop(name, root)


__all__ = ["COOP_DATASETS", "Dataset", "IMAGENET_VARIANTS", "ImageSet", "NAMES", "available", "load", "load_coop",
           "load_digits", "load_image_folder", "load_imagenet_variant"]
