"""Shared fixtures: the tiny random-init backbone, the digits dataset, CLIP-like synthetic features."""

from __future__ import annotations

import numpy as np
import pytest

import adaptkit as ak
import user_adapter  # noqa: F401  (registers an adapter from a user's module, as a user's import does)
from helpers import clip_like


@pytest.fixture(scope="session")
def tiny() -> ak.Backbone:
    return ak.Backbone(ak.TINY, device="cpu")


@pytest.fixture
def tune_calls(monkeypatch) -> list:
    """The (X_val, y_val) of every ``tune`` call made by ``leaderboard`` (and so by ``compare``),
    as torch tensors: a spy that proves which data tuning saw."""
    import importlib

    import torch

    board = importlib.import_module("adaptkit.leaderboard")  # the module: ak.leaderboard is the function
    calls, real_tune = [], board.tune

    def spy(adapter, X_val, y_val, grid=None):
        calls.append((torch.as_tensor(np.asarray(X_val)).clone(), torch.as_tensor(np.asarray(y_val)).clone()))
        return real_tune(adapter, X_val, y_val, grid)

    monkeypatch.setattr(board, "tune", spy)
    return calls


@pytest.fixture(scope="session")
def digits() -> ak.datasets.Dataset:
    return ak.datasets.load("digits")


@pytest.fixture
def clip_data():
    return clip_like()
