"""A dataset split streamed through a test-time method, scored against zero-shot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..backbones import Backbone
from ..data.base import Dataset
from ..features import extract
from ..progress import progress_bar
from .tca import TCA
from .tda import TDA


@dataclass
class StreamResult:
    """images : how many were streamed; zero_shot, accuracy : fractions; flops : (condensed,
    dense) per image for TCA, else ``None``."""

    images: int
    zero_shot: float
    accuracy: float
    flops: tuple[int, int] | None = None


def evaluate_stream(method: str, backbone: Backbone, dataset: Dataset, split: str = "test", *, limit: int | None = None,
                    seed: int = 1, batch_size: int = 16, condense: str = "tca", keep: float = 0.9, cache_dir=None,
                    num_workers: int | str = "auto", device: str = "auto", progress: bool = True) -> StreamResult:
    """Stream ``split`` in a seeded random order (the first ``limit`` images) through ``method``
    (``"tda"`` on cached features, or ``"tca"`` on images), ``batch_size`` images per step; the
    samples still update the caches one at a time, in stream order."""
    if method not in ("tda", "tca"):
        raise ValueError(f"method must be 'tda' or 'tca'; got {method!r}")
    images = dataset.split(split)
    order = np.random.default_rng(seed).permutation(len(images))[:limit]
    stream = images.subset(order, f"{images.name}/stream-seed{seed}")
    text = backbone.text_classifier(dataset.classnames, dataset.templates)
    labels = torch.from_numpy(stream.labels)
    if method == "tda":
        features = extract(backbone, stream, cache_dir=cache_dir, num_workers=num_workers, progress=progress).features
        runner = TDA(text, device=device)
        batches = [features[i:i + batch_size] for i in range(0, len(stream), batch_size)]
        zero_shot = (features @ text.T).argmax(dim=1)
    else:
        runner = TCA(backbone, text, condense=condense, keep=keep)
        batches = [[stream.load(j) for j in range(i, min(i + batch_size, len(stream)))]
                   for i in range(0, len(stream), batch_size)]
        zero_shot = (backbone.encode_images([stream.load(j) for j in range(len(stream))]) @ text.T).argmax(dim=1)
    predictions = torch.cat([runner.update_predict(b).argmax(dim=1).cpu()
                             for b in progress_bar(batches, progress=progress, desc=method, unit="batch")])
    return StreamResult(len(stream), float((zero_shot.cpu() == labels).float().mean()),
                        float((predictions == labels).float().mean()), runner.flops() if method == "tca" else None)
