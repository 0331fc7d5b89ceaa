"""Deployment: images in, class names and probabilities out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .adapters.base import Adapter
from .backbones import Backbone
from .data.sources import IMAGE_EXTENSIONS


def expand_images(images: Any) -> list:
    """A flat list of images from paths, folders (their image files, sorted), PIL images, or a
    preprocessed (N, 3, H, W) tensor (returned as is)."""
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        images = [images]
    out = []
    for image in images:
        if isinstance(image, (str, os.PathLike)) and Path(image).is_dir():
            out += sorted(str(p) for p in Path(image).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(image)
    return out


def check_backbone_matches(backbone: Backbone, identity: dict | None) -> None:
    """Raise unless ``backbone`` has the architecture and weights recorded in ``identity``."""
    if identity is None:
        return
    for key in ("model", "weights"):
        if identity.get(key) != backbone.identity[key]:
            raise ValueError(f"the adapter was fitted on features of {identity['model']} ({identity['weights']}), "
                             f"but the backbone is {backbone.identity['model']} ({backbone.identity['weights']}); "
                             "predictions would be meaningless")


class Predictor:
    """A frozen backbone and a fitted adapter behind ``predict(images)``.

    Parameters
    ----------
    backbone : the :class:`Backbone` whose features the adapter was fitted on (checked against the
        identity recorded in a saved adapter).
    adapter : a fitted adapter.
    classnames : names of the adapter's classes; default: those saved with the adapter, else the
        class labels as strings.
    batch_size : images per forward pass.
    """

    def __init__(self, backbone: Backbone, adapter: Adapter, classnames: Sequence[str] | None = None,
                 batch_size: int = 64):
        check_is_fitted(adapter)
        check_backbone_matches(backbone, getattr(adapter, "backbone_identity_", None))
        if backbone.embed_dim != adapter.n_features_in_:
            raise ValueError(f"the backbone's features have {backbone.embed_dim} dimensions but the adapter "
                             f"expects {adapter.n_features_in_}")
        names = classnames or getattr(adapter, "classnames_", None) or [str(c) for c in adapter.classes_]
        if len(names) != adapter.n_classes_:
            raise ValueError(f"classnames has {len(names)} names but the adapter has {adapter.n_classes_} classes")
        self.backbone, self.adapter, self.classnames, self.batch_size = backbone, adapter, list(names), batch_size

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities (N, C) for images given as paths, folders, PIL images or a tensor."""
        images = expand_images(images)
        if len(images) == 0:
            return np.zeros((0, len(self.classnames)), dtype=np.float32)
        return self.adapter.predict_proba(self.backbone.encode_images(images, batch_size=self.batch_size))

    def predict(self, images) -> list[str]:
        """The most probable class name per image."""
        return [self.classnames[i] for i in self.predict_proba(images).argmax(axis=1)]

    def top_k(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable (class name, probability) pairs per image."""
        proba = self.predict_proba(images)
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return [[(self.classnames[j], float(row[j])) for j in idx] for row, idx in zip(proba, order)]
