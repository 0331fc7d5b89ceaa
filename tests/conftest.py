"""Shared fixtures: the tiny random-init backbone, the digits dataset, CLIP-like synthetic features."""

from __future__ import annotations

import numpy as np
import pytest

import adaptkit as ak


@pytest.fixture(scope="session")
def tiny() -> ak.Backbone:
    return ak.Backbone(ak.TINY, device="cpu")


@pytest.fixture
def tune_calls(monkeypatch) -> list:
    """The (X_val, y_val) of every ``tune`` call made by ``leaderboard`` (and so by ``compare``),
    as torch tensors: a spy that proves which data tuning saw."""
    import adaptkit.ranking
    import torch

    calls, real_tune = [], adaptkit.ranking.tune

    def spy(adapter, X_val, y_val, grid=None):
        calls.append((torch.as_tensor(np.asarray(X_val)).clone(), torch.as_tensor(np.asarray(y_val)).clone()))
        return real_tune(adapter, X_val, y_val, grid)

    monkeypatch.setattr(adaptkit.ranking, "tune", spy)
    return calls


@pytest.fixture(scope="session")
def digits() -> ak.datasets.Dataset:
    return ak.datasets.load("digits")


def normalize(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def clip_like(n_classes: int = 12, dim: int = 64, per_class: int = 8, n_test: int = 120, spread: float = 0.6,
              text_noise: float = 0.8, seed: int = 0):
    """L2-normalised class clusters on the sphere plus noisy text weights.

    Returns (X_train (N, D), y_train, X_test (M, D), y_test, text (C, D)), float32 / int64.
    """
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(n_classes, dim)))
    y_train = np.repeat(np.arange(n_classes), per_class)
    y_test = rng.integers(0, n_classes, size=n_test)

    def sample(labels):
        return normalize(centres[labels] + spread * rng.normal(size=(len(labels), dim)) / np.sqrt(dim) * 4)

    text = normalize(centres + text_noise * rng.normal(size=centres.shape) / np.sqrt(dim) * 4)
    f32 = np.float32
    return sample(y_train).astype(f32), y_train, sample(y_test).astype(f32), y_test, text.astype(f32)


@pytest.fixture
def clip_data():
    return clip_like()


def write_jpegs(root, n_classes: int = 3, per_class: int = 8, size=(24, 32), seed: int = 0,
                quality: int = 90) -> list[str]:
    """A class-folder tree of random JPEGs under ``root``; returns the sorted file paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for c in range(n_classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, quality=quality)
            paths.append(str(path))
    return sorted(paths)


def image_set(paths, name: str = "files"):
    """An ImageSet over ``paths`` labelled by their class folder ``class_<c>``."""
    labels = [int(p.split("class_")[1].split("/")[0]) for p in paths]
    return ak.datasets.ImageSet(paths, labels, [f"class {c}" for c in range(max(labels) + 1)], name)
