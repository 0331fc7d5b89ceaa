"""Deployment: images in, class names and probabilities out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._params import POSITIVE_INT, Int, check_params
from .adapters.base import Adapter
from .backbones import Backbone
from .data.decode import display_path, load_image
from .data.pools import expand_images


def check_backbone_matches(backbone: Backbone, identity: dict | None) -> None:
    """Raise unless ``backbone`` has the architecture and weights recorded in ``identity``."""
    if identity is None:
        return
    for key in ("model", "weights"):
        if identity.get(key) != backbone.identity[key]:
            raise ValueError(f"the adapter was fitted on features of {identity['model']} ({identity['weights']}), "
                             f"but the backbone is {backbone.identity['model']} ({backbone.identity['weights']}); "
                             "predictions would be meaningless")


@dataclass
class Prediction:
    """One input of :meth:`Predictor.classify`: its name, its ranked (class, probability) pairs,
    or why it could not be classified."""

    image: str
    top: list[tuple[str, float]] | None
    error: str | None = None


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
    allow_unchecked_backbone : an adapter that records no backbone (fitted in this session, or
        saved without ``backbone=``) cannot be checked; by default that gives a warning, ``True``
        accepts it silently.
    """

    def __init__(self, backbone: Backbone, adapter: Adapter, classnames: Sequence[str] | None = None,
                 batch_size: int = 64, allow_unchecked_backbone: bool = False):
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be an adaptkit.Backbone; got {type(backbone).__name__}")
        if not isinstance(adapter, Adapter):
            raise TypeError(f"adapter must be an adaptkit adapter; got {type(adapter).__name__}")
        check_params("Predictor", {"batch_size": [POSITIVE_INT]}, {"batch_size": batch_size})
        check_is_fitted(adapter)
        identity = getattr(adapter, "backbone_identity_", None)
        if identity is None and not allow_unchecked_backbone:
            warnings.warn("the adapter records no backbone, so adaptkit cannot check that this backbone encodes "
                          "images as its features were encoded; save it with adapter.save(path, backbone=backbone), "
                          "or pass allow_unchecked_backbone=True", UserWarning, stacklevel=2)
        check_backbone_matches(backbone, identity)
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

    def _check_k(self, k) -> int:
        check_params("Predictor", {"k": [Int(1, len(self.classnames))]}, {"k": k})
        return int(k)

    def _ranked(self, proba: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return [[(self.classnames[j], float(row[j])) for j in idx] for row, idx in zip(proba, order)]

    def top_k(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable (class name, probability) pairs per image, 1 ≤ k ≤ C."""
        k = self._check_k(k)
        return self._ranked(self.predict_proba(images), k)

    def classify(self, images, k: int = 1) -> list[Prediction]:
        """Each input on its own: a :class:`Prediction` per image (paths and folders expanded),
        with its top ``k`` classes, or the reason it could not be read. One bad file never stops
        the others."""
        k = self._check_k(k)
        items = expand_images(images)
        if isinstance(items, torch.Tensor):
            return [Prediction(f"tensor[{i}]", top) for i, top in enumerate(self.top_k(items, k))]
        results: list[Prediction | None] = [None] * len(items)
        for start in range(0, len(items), self.batch_size):
            pixels, owners = [], []
            for index in range(start, min(len(items), start + self.batch_size)):
                item = items[index]
                name = display_path(item) if isinstance(item, (str, os.PathLike)) else f"image[{index}]"
                try:
                    pixels.append(self.backbone.preprocess(load_image(item)))
                    owners.append((index, name))
                except (ValueError, OSError, TypeError) as err:
                    results[index] = Prediction(name, None, str(err))
            if pixels:
                proba = self.adapter.predict_proba(self.backbone.encode_batch(torch.stack(pixels)))
                for (index, name), top in zip(owners, self._ranked(proba, k)):
                    results[index] = Prediction(name, top)
        return results
