"""An adapter written the way a user writes one: one class in a module of their own.

Nothing in adaptkit lists it; conftest imports this module before collection, the way a user
imports theirs, and every registry-parametrised test (round trip, tuning invariant, API and bad
inputs) then covers it, as do leaderboard and compare (tests/test_extension.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptkit._params import Float
from adaptkit.adapters import Adapter, FitInput

LOGIT_SCALE = 100.0


class SoftCentroids(Adapter):
    """Zero-shot plus α · 100 · cosine to class centroids refined on unlabeled features:
    centroid_c = normalise(mean of class c's support features + λ · mean of the unlabeled
    features nearest to c's support mean). Stores per-class counts as a list (a non-tensor
    fitted attribute) and declares ``unlabeled`` as an extra fit input."""

    name = "soft_centroids"
    fit_inputs = {"unlabeled": FitInput("unlabeled features (M, D), e.g. the test set's", rows="features")}
    param_grid = {"alpha": (0.0, 0.5, 1.0, 2.0), "blend": (0.0, 0.5)}
    _parameter_constraints = {**Adapter._parameter_constraints, "alpha": [Float(0, 1e6)], "blend": [Float(0, 10)]}
    state_params = frozenset({"blend"})
    training_views = "mean"
    fitted_tensors = {**Adapter.fitted_tensors, "centroids_": torch.float32, "support_": torch.float32,
                      "support_labels_": torch.int64}
    fitted_attributes = {**Adapter.fitted_attributes, "class_counts_": list}

    def __init__(self, alpha: float = 1.0, blend: float = 0.5, device: str = "auto"):
        self.alpha = alpha
        self.blend = blend
        self.device = device

    def _take_inputs(self, X, unlabeled=None):
        unlabeled = torch.as_tensor(unlabeled, dtype=torch.float32, device=X.device)
        if unlabeled.ndim != 2 or unlabeled.shape[1] != X.shape[1]:
            raise ValueError(f"unlabeled must have shape (M, {X.shape[1]}); got {tuple(unlabeled.shape)}")
        self._unlabeled = F.normalize(unlabeled, dim=-1)

    def _fit(self, X, y):
        self.support_, self.support_labels_ = X, y
        counts = torch.bincount(y, minlength=self.n_classes_)
        means = torch.zeros(self.n_classes_, X.shape[1], device=X.device).index_add_(0, y, F.normalize(X, dim=-1))
        means = means / counts.clamp_min(1)[:, None]
        nearest = (self._unlabeled @ F.normalize(means, dim=-1).T).argmax(dim=1)
        pulled = torch.zeros_like(means).index_add_(0, nearest, self._unlabeled)
        pulled = pulled / torch.bincount(nearest, minlength=self.n_classes_).clamp_min(1)[:, None]
        self.centroids_ = F.normalize(means + self.blend * pulled, dim=-1)
        self.class_counts_ = counts.tolist()

    def _support_inputs(self):
        return self.support_, self.support_labels_

    def _grid_logits(self, X, candidates):
        affinity = LOGIT_SCALE * F.normalize(X, dim=-1) @ self.centroids_.T
        alphas = torch.tensor([c.get("alpha", self.alpha) for c in candidates], dtype=X.dtype, device=X.device)
        return torch.addcmul(self._zero_shot_logits(X), alphas.view(-1, 1, 1), affinity)
