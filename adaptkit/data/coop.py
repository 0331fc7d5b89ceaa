"""The 11 datasets of the CoOp few-shot protocol, read from CoOp's folder layout.

Each dataset lives in ``root/<folder>`` with its images and CoOp's split file
``split_zhou_<Name>.json`` (``{"train"|"val"|"test": [[relpath, label, classname], ...]}``).
FGVC-Aircraft uses its ``images_variant_<split>.txt`` lists, as CoOp does. ImageNet uses
``images/train/<wnid>/`` and ``images/val/<wnid>/`` with ``classnames.txt``; since ImageNet has
no validation split, adaptkit holds out every 10th training image of each class (sorted by
file name) as ``val`` and never tunes on ``test``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..storage import expand_path
from ..text import DATASET_TEMPLATES
from .base import Dataset, DatasetFilesMissing, ImageSet
from .sources import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class CoOpLayout:
    """Where a dataset's files lie under ``root``."""

    folder: str
    image_dir: str
    split_file: str


LAYOUTS: dict[str, CoOpLayout] = {
    "caltech101": CoOpLayout("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": CoOpLayout("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": CoOpLayout("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": CoOpLayout("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": CoOpLayout("food-101", "images", "split_zhou_Food101.json"),
    "fgvc_aircraft": CoOpLayout("fgvc_aircraft", "images", "images_variant_{split}.txt"),
    "sun397": CoOpLayout("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": CoOpLayout("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": CoOpLayout("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": CoOpLayout("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    "imagenet": CoOpLayout("imagenet", "images", "classnames.txt"),
}

COOP_DATASETS = tuple(LAYOUTS)
SPLITS = ("train", "val", "test")


def _missing(path: Path, what: str, name: str) -> DatasetFilesMissing:
    root = path
    while root.name != LAYOUTS[name].folder and root.parent != root:
        root = root.parent
    return DatasetFilesMissing(f"{name}: {what} not found at {path}. Prepare the dataset in CoOp's layout "
                               f"(root/{LAYOUTS[name].folder}/...), or give as root the folder that contains it.",
                               name, root.parent)


def _from_split_json(name: str, base: Path) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    layout = LAYOUTS[name]
    split_path = base / layout.split_file
    if not split_path.is_file():
        raise _missing(split_path, "split file", name)
    try:
        table = json.loads(split_path.read_text())
        entries = {s: table[s] for s in SPLITS}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{name}: {split_path} is not a CoOp split file with train/val/test lists") from err
    names: dict[int, str] = {}
    for rows in entries.values():
        for _, label, classname in rows:
            names.setdefault(int(label), classname)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{name}: labels in {split_path} are not 0..C-1")
    classnames = [names[i] for i in range(len(names))]
    image_dir = base / layout.image_dir
    splits = {s: ([str(image_dir / rel) for rel, _, _ in rows], np.array([int(r[1]) for r in rows], dtype=np.int64))
              for s, rows in entries.items()}
    return classnames, splits


def _from_fgvc_lists(base: Path) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    variants_path = base / "variants.txt"
    if not variants_path.is_file():
        raise _missing(variants_path, "variants.txt", "fgvc_aircraft")
    classnames = [line.strip() for line in variants_path.read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classnames)}
    splits = {}
    for split in SPLITS:
        path = base / LAYOUTS["fgvc_aircraft"].split_file.format(split=split)
        if not path.is_file():
            raise _missing(path, f"{split} list", "fgvc_aircraft")
        rows = [line.strip().split(" ", 1) for line in path.read_text().splitlines() if line.strip()]
        splits[split] = ([str(base / "images" / f"{image_id}.jpg") for image_id, _ in rows],
                         np.array([index[variant] for _, variant in rows], dtype=np.int64))
    return classnames, splits


def _from_imagenet_folders(base: Path) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    names_path = base / "classnames.txt"
    if not names_path.is_file():
        raise _missing(names_path, "classnames.txt", "imagenet")
    wnids, classnames = zip(*(line.strip().split(" ", 1) for line in names_path.read_text().splitlines()
                              if line.strip()))

    def scan(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
        if not folder.is_dir():
            raise _missing(folder, "image folder", "imagenet")
        paths, labels, rank = [], [], []
        for label, wnid in enumerate(wnids):
            files = sorted(f for f in os.listdir(folder / wnid) if f.lower().endswith(IMAGE_EXTENSIONS))
            paths += [str(folder / wnid / f) for f in files]
            labels += [label] * len(files)
            rank += range(len(files))
        return paths, np.asarray(labels, dtype=np.int64), np.asarray(rank)

    train_paths, train_labels, rank = scan(base / "images" / "train")
    held = rank % 10 == 0
    test_paths, test_labels, _ = scan(base / "images" / "val")
    pick = lambda keep: ([p for p, k in zip(train_paths, keep) if k], train_labels[keep])  # noqa: E731
    return list(classnames), {"train": pick(~held), "val": pick(held), "test": (test_paths, test_labels)}


def load_coop(name: str, root: str | os.PathLike) -> Dataset:
    """One of :data:`COOP_DATASETS` from ``root`` (the folder holding e.g. ``oxford_pets/``)."""
    if name not in LAYOUTS:
        raise ValueError(f"name must be one of {COOP_DATASETS}; got {name!r}")
    root = expand_path(root, "root")
    base = root / LAYOUTS[name].folder
    if not base.is_dir():
        raise _missing(base, "dataset folder", name)
    if name == "fgvc_aircraft":
        classnames, splits = _from_fgvc_lists(base)
    elif name == "imagenet":
        classnames, splits = _from_imagenet_folders(base)
    else:
        classnames, splits = _from_split_json(name, base)
    sets = {s: ImageSet(paths, labels, classnames, f"{name}/{s}") for s, (paths, labels) in splits.items()}
    return Dataset(name, classnames, DATASET_TEMPLATES[name], sets, root)
