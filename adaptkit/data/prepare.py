"""Preparing and checking dataset folders in CoOp's layout.

``prepare`` downloads the images of every dataset torchvision can fetch and links them where
CoOp's layout expects them; the split files (``split_zhou_<Name>.json``) come from the CoOp
repository's DATASETS.md and are fetched by hand, as are the datasets torchvision cannot download.
``check`` reports what is missing under a root.
"""

from __future__ import annotations

import os

from ..storage import expand_path
from .coop import LAYOUTS, load_coop
from .imagenet_variants import VARIANTS, load_imagenet_variant

COOP_DATASETS_DOC = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"

TORCHVISION_SOURCES = {
    "caltech101": ("Caltech101", {}, "caltech101/101_ObjectCategories"),
    "oxford_pets": ("OxfordIIITPet", {}, "oxford-iiit-pet/images"),
    "oxford_flowers": ("Flowers102", {}, "flowers-102/jpg"),
    "food101": ("Food101", {}, "food-101/images"),
    "fgvc_aircraft": ("FGVCAircraft", {}, "fgvc-aircraft-2013b/data"),
    "sun397": ("SUN397", {}, "SUN397"),
    "dtd": ("DTD", {}, "dtd/dtd/images"),
    "eurosat": ("EuroSAT", {}, "eurosat/2750"),
}
"""CoOp name -> (torchvision class, options, where torchvision leaves the images under root/_downloads)."""

BY_HAND = {
    "stanford_cars": "Stanford Cars: torchvision's download link is dead. Get cars_train/, cars_test/ and "
                     "devkit/ (e.g. from the Kaggle mirror 'stanford-cars-dataset') into root/stanford_cars/.",
    "ucf101": "UCF101: CoOp uses one middle frame per video. Download UCF-101-midframes.zip (link in CoOp's "
              "DATASETS.md) and unpack it to root/ucf101/UCF-101-midframes/.",
    "imagenet": "ImageNet: download ILSVRC2012 train and val from image-net.org (registration), arrange "
                "root/imagenet/images/train/<wnid>/ and root/imagenet/images/val/<wnid>/, and put CoOp's "
                "classnames.txt in root/imagenet/.",
}


PREPARABLE = tuple(LAYOUTS) + tuple(VARIANTS)


def expected_layout(name: str) -> str:
    """The folder layout :func:`adaptkit.data.load` expects for ``name``, as text."""
    if name in VARIANTS:
        variant = VARIANTS[name]
        inner = "<class index>" if variant.by_index else "<wnid>"
        return f"root/{variant.folder}/{{{variant.images}/{inner}/*, classnames.txt}}"
    layout = LAYOUTS[name]
    if name == "imagenet":
        return "root/imagenet/{classnames.txt, images/train/<wnid>/*.JPEG, images/val/<wnid>/*.JPEG}"
    if name == "fgvc_aircraft":
        return "root/fgvc_aircraft/{images/*.jpg, variants.txt, images_variant_{train,val,test}.txt}"
    images = f"{layout.image_dir}/..." if layout.image_dir else "<images>"
    return f"root/{layout.folder}/{{{images}, {layout.split_file}}}"


def prepare(name: str, root: str | os.PathLike) -> list[str]:
    """Download what torchvision can and link it into CoOp's layout; return what remains to do by
    hand (empty when the dataset is complete). Raises ``ValueError`` for unknown names and when a
    download fails (e.g. no network)."""
    if name not in PREPARABLE:
        raise ValueError(f"name must be one of {PREPARABLE}; got {name!r}")
    root = expand_path(root, "root")
    if name in VARIANTS:
        variant = VARIANTS[name]
        steps = [f"Download {variant.source} and unpack it to {root / variant.folder / variant.images}/."]
        if not (root / variant.folder / "classnames.txt").is_file() and \
                not (root / "imagenet" / "classnames.txt").is_file():
            steps.append(f"Copy CoOp's ImageNet classnames.txt (linked from {COOP_DATASETS_DOC}) to "
                         f"{root / variant.folder / 'classnames.txt'}.")
        return [] if (root / variant.folder / variant.images).is_dir() and len(steps) == 1 else steps
    todo = []
    if name in BY_HAND:
        todo.append(BY_HAND[name])
    else:
        import torchvision.datasets as tv  # deferred: only downloads need it, and it is slow to import

        class_name, options, downloaded = TORCHVISION_SOURCES[name]
        staging = root / "_downloads"
        try:
            getattr(tv, class_name)(str(staging), download=True, **options)
        except Exception as err:  # torchvision raises URLError, RuntimeError, OSError... for one cause
            raise ValueError(f"{name}: downloading with torchvision.datasets.{class_name} failed ({err}). "
                             f"Without network, fetch it by hand into {expected_layout(name)}") from err
        layout = LAYOUTS[name]
        target = root / layout.folder if name == "fgvc_aircraft" else root / layout.folder / layout.image_dir
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to((staging / downloaded).resolve(), target_is_directory=True)
    if name not in ("fgvc_aircraft", "imagenet"):
        split = root / LAYOUTS[name].folder / LAYOUTS[name].split_file
        if not split.is_file():
            todo.append(f"Download {LAYOUTS[name].split_file} (CoOp's split, linked from {COOP_DATASETS_DOC}) "
                        f"to {split}.")
    return todo


def check(name: str, root: str | os.PathLike) -> dict:
    """Load ``name`` from ``root`` and count the images each split lists that are missing on disk.

    Returns ``{"ok": bool, "problem": str | None, "splits": {split: {"images": n, "missing": m,
    "examples": [...]}}}``; a missing folder or split file is reported in ``problem``.
    """
    if name not in PREPARABLE:
        raise ValueError(f"name must be one of {PREPARABLE}; got {name!r}")
    try:
        dataset = load_imagenet_variant(name, root) if name in VARIANTS else load_coop(name, root)
    except ValueError as err:
        return {"ok": False, "problem": f"{err}\nExpected layout: {expected_layout(name)}", "splits": {}}
    splits, ok = {}, True
    for split, images in dataset.splits.items():
        missing = [p for p in images.images if not os.path.isfile(p)]
        splits[split] = {"images": len(images), "missing": len(missing), "examples": missing[:3]}
        ok = ok and not missing and len(images) > 0
    return {"ok": ok, "problem": None, "splits": splits}
