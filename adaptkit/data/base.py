"""``ImageSet`` (labelled images of one split) and ``Dataset`` (class names, templates, splits)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .._params import NON_NEGATIVE_INT, POSITIVE_INT, check_params
from .sources import WEBDATASET_IMAGE_KEYS, ArraySource, ImageSource, ParquetSource, PathSource, WebDatasetSource


class DatasetFilesMissing(ValueError):
    """Datasets' folders or files are not where their layouts put them (``adaptkit data prepare``
    sets them up): ``missing`` lists (dataset, root) pairs."""

    def __init__(self, message: str, dataset: str | None = None, root=None, *, missing=None):
        super().__init__(message)
        self.missing = list(missing) if missing is not None else [(dataset, root)]
        self.dataset, self.root = self.missing[0]


class ImageSet:
    """Labelled images of one split.

    Parameters
    ----------
    images : file paths, a uint8 array of shape (N, H, W, 3), or an
        :class:`~adaptkit.data.sources.ImageSource` (webdataset shards, parquet tables, ...).
    labels : (N,) integer class indices in [0, len(classnames)).
    classnames : the class names, index = label.
    name : what the set is, e.g. ``"oxford_pets/test"`` or ``"digits/train/16shot-seed1"``.
    """

    def __init__(self, images: Sequence[str | os.PathLike] | np.ndarray | ImageSource, labels,
                 classnames: Sequence[str], name: str):
        labels = np.asarray(labels)
        if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
            raise ValueError(f"labels must be a 1-D integer array; got dtype {labels.dtype}, shape {labels.shape}")
        if isinstance(classnames, str) or not all(isinstance(c, str) for c in classnames):
            raise TypeError("classnames must be a list of strings")
        if isinstance(images, ImageSource):
            source = images
        elif isinstance(images, np.ndarray):
            source = ArraySource(images)
        elif isinstance(images, (str, os.PathLike)):
            raise TypeError("images must be a list of paths, an array or an ImageSource; got a single path "
                            "(wrap it in a list, or use adaptkit.data.load('imagefolder', root=...) for a folder)")
        else:
            source = PathSource(images)
        if len(source) != len(labels):
            raise ValueError(f"images ({len(source)}) and labels ({len(labels)}) must have the same length")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classnames)):
            raise ValueError(f"labels must lie in [0, {len(classnames)}) (one per class name); "
                             f"got [{labels.min()}, {labels.max()}]")
        self.source = source
        self.labels = labels.astype(np.int64)
        self.classnames = list(classnames)
        self.name = name

    @classmethod
    def from_webdataset(cls, urls: str | Sequence[str], classnames: Sequence[str] | None = None, *,
                        name: str | None = None, label_key: str | None = "cls",
                        image_keys: Sequence[str] = WEBDATASET_IMAGE_KEYS) -> ImageSet:
        """Images in webdataset tar shards (local paths or brace patterns such as
        ``"pool/{000000..000099}.tar"``), read in place, never unpacked. Labels come from each
        sample's ``label_key`` member (an integer, as img2dataset and webdataset write them);
        ``label_key=None`` gives an unlabeled pool (every label 0, one class ``"unlabeled"``)."""
        source, texts = WebDatasetSource.index(urls, image_keys=image_keys, label_key=label_key)
        if label_key is None:
            labels, classnames = np.zeros(len(source), dtype=np.int64), list(classnames or ["unlabeled"])
        else:
            missing = [source.describe(i) for i, t in enumerate(texts) if t is None]
            if missing:
                raise ValueError(f"{len(missing)} sample(s) have no .{label_key} member, e.g. {missing[0]}; pass "
                                 "label_key=None for an unlabeled pool")
            try:
                labels = np.asarray([int(t) for t in texts], dtype=np.int64)
            except ValueError as err:
                raise ValueError(f"the .{label_key} members must hold integer class indices ({err})") from None
            classnames = list(classnames) if classnames is not None else [str(c) for c in range(labels.max() + 1)]
        return cls(source, labels, classnames, name or f"webdataset:{source.shards[0]}")

    @classmethod
    def from_parquet(cls, paths: str | os.PathLike | Sequence[str | os.PathLike], classnames: Sequence[str] | None = None,
                     *, name: str | None = None, image_column: str = "image",
                     label_column: str | None = "label") -> ImageSet:
        """Images stored as bytes in parquet files (the Hugging Face datasets layout: a struct
        column with ``bytes``, or plain binary), read a row group at a time. Class names default
        to the ClassLabel names the files record; ``label_column=None`` gives an unlabeled pool."""
        source, labels, recorded = ParquetSource.open(paths, image_column, label_column)
        if labels is None:
            labels, classnames = np.zeros(len(source), dtype=np.int64), list(classnames or ["unlabeled"])
        else:
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"column {label_column!r} must hold integer class indices; got {labels.dtype}")
            classnames = list(classnames or recorded or [str(c) for c in range(int(labels.max()) + 1)])
        return cls(source, labels, classnames, name or f"parquet:{source.files[0]}")

    @property
    def images(self) -> list[str] | np.ndarray | ImageSource:
        """The paths (file sets), the array (in-memory sets) or the source itself."""
        if isinstance(self.source, PathSource):
            return self.source.paths
        if isinstance(self.source, ArraySource):
            return self.source.array
        return self.source

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {len(self)} images, {len(self.classnames)} classes)"

    def load(self, index: int) -> Image.Image:
        """The image at ``index`` as an RGB PIL image (see :mod:`adaptkit.data.decode`)."""
        return self.source.load(index)

    def describe(self, index: int) -> str:
        """What errors call the image at ``index`` (its path, or shard and member)."""
        return self.source.describe(index)

    def subset(self, indices, name: str) -> ImageSet:
        """The images at ``indices``, in that order, under a new name."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(self.source.take(indices), self.labels[indices], self.classnames, name)

    def classes_short_of(self, needed: int) -> tuple[int, str]:
        """(how many classes have fewer than ``needed`` images, the first five listed with their
        counts: "'cat' (2), 'dog' (1)"); (0, "") when none do."""
        counts = np.bincount(self.labels, minlength=len(self.classnames))
        short = np.flatnonzero(counts < needed)
        listed = ", ".join(f"{self.classnames[c]!r} ({counts[c]})" for c in short[:5])
        return int(short.size), listed + (f" and {short.size - 5} more" if short.size > 5 else "")

    def few_shot(self, shots: int, seed: int, name: str | None = None) -> ImageSet:
        """Exactly ``shots`` images per class, drawn without replacement; the same seed gives the
        same images. Raises ``ValueError`` naming the classes that have fewer images."""
        check_params("few_shot", {"shots": [POSITIVE_INT], "seed": [NON_NEGATIVE_INT]}, {"shots": shots, "seed": seed})
        n_short, listed = self.classes_short_of(shots)
        if n_short:
            raise ValueError(f"shots={shots} but {n_short} class(es) of {self.name} have fewer images: {listed}")
        counts = np.bincount(self.labels, minlength=len(self.classnames))
        order = np.random.default_rng(seed).permutation(len(self))
        order = order[np.argsort(self.labels[order], kind="stable")]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(order)) - starts[self.labels[order]]
        return self.subset(order[rank < shots], name or f"{self.name}/{shots}shot-seed{seed}")

    def fingerprint(self) -> str:
        """SHA-256 over everything that identifies the set's content: image identities (path, size,
        mtime for files; pixel bytes for arrays; shard and member or file and row otherwise),
        labels and class names."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.classnames).encode())
        digest.update(self.labels.tobytes())
        source = self.source
        if isinstance(source, ArraySource):
            digest.update(str(source.array.shape).encode())
            digest.update(np.ascontiguousarray(source.array).tobytes())
        elif isinstance(source, PathSource):
            for i in range(len(source)):
                digest.update(source.identity(i) + b"\n")
        else:
            digest.update(source.kind.encode())
            for i in range(len(source)):
                digest.update(source.identity(i) + b"\n")
        return digest.hexdigest()


@dataclass
class Dataset:
    """A classification dataset: class names, prompts and named splits.

    ``templates`` are prompt templates (``{}`` or ``{c}``) or a dict {class name: [prompts]}.
    ``class_indices`` maps each class to its index in a larger label space when the dataset is a
    subset of one (ImageNet-A and -R: 200 of ImageNet's 1,000 classes), else ``None``.
    """

    name: str
    classnames: list[str]
    templates: tuple[str, ...] | dict[str, list[str]]
    splits: dict[str, ImageSet] = field(repr=False)
    root: Path | None = None
    class_indices: np.ndarray | None = field(default=None, repr=False)

    def split(self, name: str) -> ImageSet:
        """The full split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)} for {self.name}; got {name!r}")
        return self.splits[name]

    def few_shot(self, shots: int, seed: int, split: str = "train") -> ImageSet:
        """``shots`` images per class from ``split``, deterministic per ``seed`` (see
        :meth:`ImageSet.few_shot`). The protocol's validation set is
        ``few_shot(min(shots, 4), seed, split="val")``."""
        return self.split(split).few_shot(shots, seed)

    def with_classnames(self, classnames: Sequence[str]) -> Dataset:
        """The same dataset (images, labels, prompts) under other class names, one per class."""
        names = list(classnames)
        if isinstance(classnames, str) or not all(isinstance(c, str) for c in names):
            raise TypeError("classnames must be a list of strings")
        if len(names) != len(self.classnames):
            raise ValueError(f"classnames has {len(names)} names for the {len(self.classnames)} classes of {self.name}")
        splits = {s: ImageSet(i.source, i.labels, names, i.name) for s, i in self.splits.items()}
        return dataclasses.replace(self, classnames=names, splits=splits)
