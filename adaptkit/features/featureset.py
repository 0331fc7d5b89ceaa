"""The FeatureSet value (features, labels, class names, provenance) and its file: one checksummed
safetensors file written by :func:`save_features` and read by :func:`load_features`."""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..storage import UntrustedFileError, expand_path, peek_format, read_checked, write_checked
from .store import STORAGE_DTYPES, as_storage_dtype

logger = logging.getLogger("adaptkit")

FILE_FORMAT = "adaptkit-features"
FILE_FORMAT_VERSION = 1


@dataclass
class FeatureSet:
    """Encoded images of one set.

    features : float32, (N, D) for one view per image, (N, V, D) for ``V`` augmented views;
        rows L2-normalised.
    labels : int64 (N,).
    classnames : class names, index = label.
    metadata : what produced the features (backbone identity, set name, views, seed, cache key,
        and ``skipped``: the images left out with ``on_error="skip"``, with their reasons).
    """

    features: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.features, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise TypeError(f"features and labels must be torch tensors; got {type(self.features).__name__} and "
                            f"{type(self.labels).__name__}")
        if isinstance(self.classnames, str) or not isinstance(self.classnames, (list, tuple)):
            raise TypeError(f"classnames must be a list of strings; got {type(self.classnames).__name__}")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata must be a dict; got {type(self.metadata).__name__} {self.metadata!r:.60}")
        self.classnames = list(self.classnames)
        _check_feature_set(self.features, self.labels, self.classnames, "FeatureSet", finite=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"FeatureSet({self.metadata.get('name', '?')!r}, features={tuple(self.features.shape)}, "
                f"{len(self.classnames)} classes)")

    @property
    def views(self) -> int:
        """Augmented views per image (1 for a 2-D feature matrix)."""
        return 1 if self.features.ndim == 2 else int(self.features.shape[1])

    def flat(self) -> FeatureSet:
        """Every view a row: features (N·V, D), labels repeated V times."""
        if self.features.ndim == 2:
            return self
        n, v, d = self.features.shape
        return FeatureSet(self.features.reshape(n * v, d), self.labels.repeat_interleave(v), self.classnames,
                          {**self.metadata, "views_flattened": v})

    def mean_views(self) -> FeatureSet:
        """One row per image: the renormalised mean of its views, (N, D)."""
        if self.features.ndim == 2:
            return self
        return FeatureSet(F.normalize(self.features.mean(dim=1), dim=-1), self.labels, self.classnames,
                          {**self.metadata, "views_averaged": self.views})

    def save(self, path: str | os.PathLike, dtype: str = "float32") -> None:
        """:func:`save_features` as a method."""
        save_features(self, path, dtype)


def _check_dtype(dtype) -> None:
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(STORAGE_DTYPES)}; got {dtype!r}")


def _check_feature_set(features, labels, classnames, where: str, finite: bool = True) -> None:
    """Shapes, dtypes, labels against class names and (unless ``finite=False``) finiteness, with
    ``where`` in the message."""
    if features.ndim not in (2, 3) or not features.is_floating_point():
        raise ValueError(f"{where}: features must be a float (N, D) or (N, V, D) tensor; got "
                         f"{features.dtype} {tuple(features.shape)}")
    if labels.dtype != torch.int64 or labels.shape != (features.shape[0],):
        raise ValueError(f"{where}: labels must be int64 of shape ({features.shape[0]},); got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if isinstance(classnames, str) or not all(isinstance(c, str) for c in classnames):
        raise ValueError(f"{where}: classnames must be a list of strings")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classnames)):
        raise ValueError(f"{where}: labels lie in [{int(labels.min())}, {int(labels.max())}] but there are "
                         f"{len(classnames)} class names")
    if finite and not bool(torch.isfinite(features).all()):
        raise ValueError(f"{where}: features hold NaN or infinite values")


def save_features(features: FeatureSet, path: str | os.PathLike, dtype: str = "float32") -> None:
    """Write a FeatureSet as one checksummed safetensors file (atomically); ``dtype`` is the
    storage dtype (``"float32"`` or ``"float16"``, which refuses values it cannot hold)."""
    if not isinstance(features, FeatureSet):
        raise TypeError(f"features must be a FeatureSet; got {type(features).__name__}")
    _check_dtype(dtype)
    path = expand_path(path)
    _check_feature_set(features.features, features.labels, features.classnames, "save_features")
    try:
        stored = as_storage_dtype(features.features.detach().cpu(), dtype)
    except ValueError as err:
        raise ValueError(f"save_features: {err}") from None
    try:
        json.dumps(features.metadata)
    except (TypeError, ValueError) as err:
        raise TypeError(f"save_features: metadata must be JSON-serialisable ({err})") from None
    header = {"format": FILE_FORMAT, "format_version": FILE_FORMAT_VERSION, "classnames": list(features.classnames),
              "metadata": features.metadata, "dtype": dtype}
    write_checked(path, {"features": stored, "labels": features.labels.detach().cpu().to(torch.int64)}, header)


def _load_legacy(path: Path) -> FeatureSet:
    """A file written by adaptkit 0.1 (safetensors + ``.json`` sidecar, no checksum)."""
    sidecar_path = path.with_name(path.name + ".json")
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        tensors = load_file(str(path))
        features, labels = tensors["features"].float().clone(), tensors["labels"].clone()
        shape_ok = list(features.shape) == sidecar["shape"] and labels.shape == (features.shape[0],)
    except (OSError, ValueError, SafetensorError, KeyError, TypeError) as err:
        raise ValueError(f"feature file {path} is unreadable or damaged ({err})") from err
    if not shape_ok:
        raise ValueError(f"feature file {path} does not match its sidecar {sidecar_path}")
    warnings.warn(f"{path} was written by adaptkit 0.1 and carries no checksum; re-save it with "
                  "save_features to protect it", UserWarning, stacklevel=3)
    _check_feature_set(features, labels, list(sidecar["classnames"]), str(path))
    return FeatureSet(features, labels, list(sidecar["classnames"]), sidecar["metadata"])


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Read a FeatureSet written by :func:`save_features` (checksum, shapes, labels against class
    names and finiteness verified; a damaged file raises ``ValueError`` naming it). Files of
    adaptkit 0.1 (with a ``.json`` sidecar) are read too, with a warning."""
    path = expand_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such feature file: {path}")
    if peek_format(path) is None and path.with_name(path.name + ".json").is_file():
        return _load_legacy(path)
    header, tensors = read_checked(path, FILE_FORMAT, FILE_FORMAT_VERSION, "a feature file")
    if set(tensors) != {"features", "labels"} or not isinstance(header.get("classnames"), list) or \
            not isinstance(header.get("metadata"), dict):
        raise UntrustedFileError(f"{path} is not a feature file adaptkit can trust: its header or tensors are "
                                 "not those of a FeatureSet")
    features = tensors["features"].float()
    _check_feature_set(features, tensors["labels"], header["classnames"], str(path))
    return FeatureSet(features, tensors["labels"], header["classnames"], header["metadata"])
