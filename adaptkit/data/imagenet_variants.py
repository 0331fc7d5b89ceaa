"""ImageNet's out-of-distribution test sets, the benchmark of test-time adaptation (TDA, TCA).

Each is a test-only dataset in CoOp's layout under ``root``, with CoOp's ``classnames.txt``
(``wnid name`` per line, 1,000 lines) in its folder or in ``root/imagenet/``:

=================== ===================================================== ======= =========
name                images                                                classes images
=================== ===================================================== ======= =========
``imagenet_v2``     ``imagenetv2/imagenetv2-matched-frequency-format-val/``  1,000   10,000
                    ``<class index>/*.jpeg`` (matched frequency)
``imagenet_sketch`` ``imagenet-sketch/images/<wnid>/*.JPEG``                  1,000   50,889
``imagenet_a``      ``imagenet-adversarial/imagenet-a/<wnid>/*.jpg``          200     7,500
``imagenet_r``      ``imagenet-rendition/imagenet-r/<wnid>/*.jpg``            200     30,000
=================== ===================================================== ======= =========

ImageNet-A and -R cover 200 of the 1,000 classes: their class names are those 200, in ImageNet
order, and ``dataset.class_indices`` maps each to its ImageNet index, so a 1,000-class classifier
is evaluated by restricting its logits to those columns (``logits[:, dataset.class_indices]``).
Prompts are ImageNet's 7-template ensemble.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..storage import expand_path
from ..text import IMAGENET_TEMPLATES
from .base import Dataset, DatasetFilesMissing, ImageSet
from .decode import display_path
from .sources import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class VariantLayout:
    folder: str
    images: str
    by_index: bool
    source: str


VARIANTS: dict[str, VariantLayout] = {
    "imagenet_v2": VariantLayout("imagenetv2", "imagenetv2-matched-frequency-format-val", True,
                                 "ImageNetV2 matched-frequency: huggingface.co/datasets/vaishaal/ImageNetV2 "
                                 "(imagenetv2-matched-frequency.tar.gz)"),
    "imagenet_sketch": VariantLayout("imagenet-sketch", "images", False,
                                     "ImageNet-Sketch: github.com/HaohanWang/ImageNet-Sketch (ImageNet-Sketch.zip); "
                                     "rename its sketch/ folder to images/"),
    "imagenet_a": VariantLayout("imagenet-adversarial", "imagenet-a", False,
                                "ImageNet-A: people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar"),
    "imagenet_r": VariantLayout("imagenet-rendition", "imagenet-r", False,
                                "ImageNet-R: people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"),
}


def _imagenet_classnames(root: Path, folder: Path) -> tuple[list[str], list[str]]:
    """(wnids, names) from CoOp's classnames.txt in ``folder`` or ``root/imagenet``."""
    for candidate in (folder / "classnames.txt", root / "imagenet" / "classnames.txt"):
        if candidate.is_file():
            rows = [line.strip().split(" ", 1) for line in candidate.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
            if len(rows) != 1000 or not all(len(r) == 2 for r in rows):
                raise ValueError(f"{candidate}: expected 1,000 'wnid name' lines (CoOp's classnames.txt)")
            return [r[0] for r in rows], [r[1] for r in rows]
    raise ValueError(f"classnames.txt (CoOp's 'wnid name' list of ImageNet's 1,000 classes) not found in {folder} "
                     f"or {root / 'imagenet'}; copy it there (it is linked from CoOp's DATASETS.md)")


def load_imagenet_variant(name: str, root: str | os.PathLike) -> Dataset:
    """One of :data:`VARIANTS` from ``root`` (see the module docstring); a test-only dataset."""
    if name not in VARIANTS:
        raise ValueError(f"name must be one of {tuple(VARIANTS)}; got {name!r}")
    layout = VARIANTS[name]
    root = expand_path(root, "root")
    folder = root / layout.folder
    images_dir = folder / layout.images
    if not images_dir.is_dir():
        raise DatasetFilesMissing(f"{name}: image folder not found at {display_path(images_dir)}. Download it by "
                                  f"hand ({layout.source}) into {display_path(folder)}/ in CoOp's layout.", name, root)
    wnids, names = _imagenet_classnames(root, folder)
    if layout.by_index:
        present = sorted(int(d.name) for d in images_dir.iterdir() if d.is_dir() and d.name.isdigit())
        folders = {index: images_dir / str(index) for index in present}
    else:
        lookup = {w: i for i, w in enumerate(wnids)}
        present_wnids = sorted(d.name for d in images_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        unknown = [w for w in present_wnids if w not in lookup]
        if unknown:
            raise ValueError(f"{name}: folders {unknown[:5]} under {display_path(images_dir)} are not ImageNet wnids "
                             "of classnames.txt")
        folders = {lookup[w]: images_dir / w for w in present_wnids}
    if not folders:
        raise ValueError(f"{name}: {display_path(images_dir)} holds no class folders")
    indices = sorted(folders)
    paths, labels = [], []
    for label, index in enumerate(indices):
        files = sorted(str(p) for p in folders[index].iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        paths += files
        labels += [label] * len(files)
    classnames = [names[i] for i in indices]
    test = ImageSet(paths, np.asarray(labels, dtype=np.int64), classnames, f"{name}/test")
    return Dataset(name, classnames, IMAGENET_TEMPLATES, {"test": test}, root, np.asarray(indices, dtype=np.int64))
