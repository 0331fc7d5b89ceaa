"""Generic image folders: ``root/<split>/<class>/*.jpg`` or ``root/<class>/*.jpg``.

Hidden files and folders (names starting with ``.``, such as ``.ipynb_checkpoints/``) are ignored.
A class folder without images is an error that names it, and so is a class with too few images to
split. Class names default to the folder names (``_`` read as a space); ``classnames`` maps them
otherwise (a file of ``folder name`` lines such as ImageNet's ``n01440764 tench``, a file with one
name per folder in sorted order, a dict or a list).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ..storage import expand_path, read_text
from ..text import DEFAULT_TEMPLATES, Prompts
from .base import Dataset, ImageSet
from .decode import display_path
from .sources import IMAGE_EXTENSIONS, list_image_files


def _images_in(folder: Path) -> list[str]:
    return list_image_files(folder)


def _class_folders(base: Path) -> list[str]:
    return sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan(directory: Path, classes: list[str], required: bool) -> tuple[list[str], np.ndarray]:
    paths, labels, empty = [], [], []
    for label, cls in enumerate(classes):
        class_dir = directory / cls
        found = _images_in(class_dir) if class_dir.is_dir() else []
        if not found and required:
            empty.append(display_path(class_dir))
        paths += found
        labels += [label] * len(found)
    if empty:
        raise ValueError(f"class folder(s) without images ({', '.join(IMAGE_EXTENSIONS)}): {', '.join(empty[:5])}"
                         f"{f' and {len(empty) - 5} more' if len(empty) > 5 else ''}; remove them or add images")
    return paths, np.asarray(labels, dtype=np.int64)


def _read_classnames(classnames, folders: list[str]) -> list[str]:
    """Class names for the sorted class folders (see the module docstring)."""
    if classnames is None:
        return [f.replace("_", " ") for f in folders]
    if isinstance(classnames, (str, os.PathLike)):
        lines = [line.strip() for line in read_text(classnames, "class-name file").splitlines() if line.strip()]
        pairs = [line.split(maxsplit=1) for line in lines]
        if pairs and all(len(p) == 2 for p in pairs) and set(folders) <= {p[0] for p in pairs}:
            classnames = {folder: name for folder, name in pairs}
        else:
            classnames = lines
    if isinstance(classnames, Mapping):
        missing = [f for f in folders if f not in classnames]
        if missing:
            raise ValueError(f"classnames gives no name for the class folder(s) {missing[:5]}")
        return [str(classnames[f]) for f in folders]
    if isinstance(classnames, Sequence) and not isinstance(classnames, str):
        if len(classnames) != len(folders):
            raise ValueError(f"classnames lists {len(classnames)} names for {len(folders)} class folders (one name per "
                             "folder, in sorted folder order, or 'folder name' lines)")
        return [str(c) for c in classnames]
    raise TypeError(f"classnames must be a file path, a dict or a list; got {type(classnames).__name__}")


def load_image_folder(root: str | os.PathLike, *, name: str | None = None, templates: Prompts = DEFAULT_TEMPLATES,
                      classnames=None, val_fraction: float = 0.2, test_fraction: float = 0.2,
                      seed: int = 0) -> Dataset:
    """An image-folder dataset (see the module docstring).

    With ``train/``, ``val/`` and ``test/`` sub-folders those are the splits (``val`` optional:
    then it is carved from train). With class folders directly under ``root`` the images are
    split stratified into train / val / test by ``val_fraction`` and ``test_fraction``.
    """
    root = expand_path(root, "root")
    if not root.is_dir():
        raise ValueError(f"root={str(root)!r} is not a directory")
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"{label} must be a number in (0, 1); got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must stay below 1; got {val_fraction + test_fraction}")
    name = name or root.name
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    base = split_dirs.get("train", root)
    classes = _class_folders(base)
    if not classes:
        raise ValueError(f"root={str(root)!r} has no class sub-folders (expected root/<class>/image.jpg)")
    names = _read_classnames(classnames, classes)
    if "train" in split_dirs:
        scanned = {s: _scan(d, classes, required=(s == "train")) for s, d in split_dirs.items()}
    else:
        scanned = {"all": _scan(root, classes, required=True)}
    paths, labels = scanned.get("train", scanned.get("all"))
    carve = [s for s in ("test", "val") if s not in scanned]
    counts = np.bincount(labels, minlength=len(classes))
    if carve and counts.min() < len(carve) + 1:
        short = classes[int(np.argmin(counts))]
        raise ValueError(f"class folder {display_path(base / short)} has {counts.min()} image(s): too few to split "
                         f"into train and {' and '.join(carve)} (at least {len(carve) + 1} needed)")
    index, remaining = np.arange(len(labels)), 1.0
    splits: dict[str, ImageSet] = {}
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in scanned:
            splits[split] = ImageSet(*scanned[split], names, f"{name}/{split}")
            continue
        share = fraction / remaining
        size = share if np.ceil(share * len(index)) >= len(classes) else len(classes)
        index, held = train_test_split(index, test_size=size, stratify=labels[index], random_state=seed)
        remaining -= fraction
        held = np.sort(held)
        splits[split] = ImageSet([paths[i] for i in held], labels[held], names, f"{name}/{split}")
    index = np.sort(index)
    splits["train"] = ImageSet([paths[i] for i in index], labels[index], names, f"{name}/train")
    return Dataset(name, names, tuple(templates) if not isinstance(templates, Mapping) else templates, splits, root)
