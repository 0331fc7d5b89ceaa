"""TDA: training-free dynamic adapter for test-time adaptation (Karmanov et al., CVPR 2024).

Test samples arrive one at a time. A positive cache keeps, per zero-shot predicted class, the
``pos_capacity`` lowest-entropy features seen so far (a new sample replaces the class's
highest-entropy entry when its entropy is lower). A negative cache keeps, likewise per predicted
class, up to ``neg_capacity`` samples whose normalised entropy lies in ``neg_entropy``; its values
are 0/1 masks of the classes whose zero-shot probability lies in ``neg_mask``. Each sample first
updates the caches, then gets

    logits = 100 · x Tᵀ + α⁺ · exp(−β⁺ (1 − x K⁺ᵀ)) V⁺ − α⁻ · exp(−β⁻ (1 − x K⁻ᵀ)) M⁻

Entropy normalisation: the official code divides a natural-log entropy by log₂(C), so its
"normalised" entropy spans [0, ln 2] rather than [0, 1]; ``entropy_normalization="log2"`` (default)
reproduces that and the published band [0.2, 0.5]; ``"ln"`` divides by ln(C) for a true [0, 1]
scale (then choose the band accordingly).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .._validation import check_features, resolve_device
from ..adapters.base import LOGIT_SCALE
from ..storage import atomic_write


class TDA:
    """Streaming TDA over cached (or freshly encoded) image features.

    Parameters
    ----------
    text_weights : (C, D) zero-shot classifier.
    pos_capacity, pos_alpha, pos_beta : positive cache (official ImageNet defaults 3, 2.0, 5.0).
    neg_capacity, neg_alpha, neg_beta : negative cache (2, 0.117, 1.0).
    neg_entropy : (low, high) normalised-entropy band for negative samples, exclusive.
    neg_mask : (low, high) probability band that marks negative classes, exclusive.
    entropy_normalization : ``"log2"`` (official) or ``"ln"`` (see the module docstring).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, text_weights, *, pos_capacity: int = 3, pos_alpha: float = 2.0, pos_beta: float = 5.0,
                 neg_capacity: int = 2, neg_alpha: float = 0.117, neg_beta: float = 1.0,
                 neg_entropy: tuple[float, float] = (0.2, 0.5), neg_mask: tuple[float, float] = (0.03, 1.0),
                 entropy_normalization: str = "log2", device: str = "auto"):
        if entropy_normalization not in ("log2", "ln"):
            raise ValueError(f"entropy_normalization must be 'log2' or 'ln'; got {entropy_normalization!r}")
        for name, value in (("pos_capacity", pos_capacity), ("neg_capacity", neg_capacity)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.device = resolve_device(device)
        self.text_weights = F.normalize(check_features(text_weights, "text_weights", device=self.device), dim=-1)
        self.pos_capacity, self.pos_alpha, self.pos_beta = pos_capacity, pos_alpha, pos_beta
        self.neg_capacity, self.neg_alpha, self.neg_beta = neg_capacity, neg_alpha, neg_beta
        self.neg_entropy, self.neg_mask = tuple(neg_entropy), tuple(neg_mask)
        n_classes = self.text_weights.shape[0]
        self.max_entropy = math.log2(n_classes) if entropy_normalization == "log2" else math.log(n_classes)
        self.entropy_normalization = entropy_normalization
        self.reset()

    @property
    def n_classes(self) -> int:
        return self.text_weights.shape[0]

    def reset(self) -> None:
        """Empty both caches."""
        c, d = self.text_weights.shape
        z = dict(device=self.device)
        self.pos_keys = torch.zeros(c, self.pos_capacity, d, **z)
        self.pos_entropy = torch.full((c, self.pos_capacity), torch.inf, **z)
        self.neg_keys = torch.zeros(c, self.neg_capacity, d, **z)
        self.neg_entropy_values = torch.full((c, self.neg_capacity), torch.inf, **z)
        self.neg_masks = torch.zeros(c, self.neg_capacity, c, **z)

    @staticmethod
    def _insert(keys, entropies, extra, cls: int, feature, entropy: float, extra_value=None) -> None:
        """Fill the first empty slot of class ``cls``, else replace its highest-entropy entry when
        ``entropy`` is strictly lower (the official rule)."""
        slots = entropies[cls]
        empty = torch.nonzero(torch.isinf(slots)).flatten()
        if empty.numel():
            slot = int(empty[0])
        else:
            slot = int(torch.argmax(slots))
            if not entropy < float(slots[slot]):
                return
        keys[cls, slot], slots[slot] = feature, entropy
        if extra is not None:
            extra[cls, slot] = extra_value

    @staticmethod
    def _cache_term(x, keys, entropies, values, beta: float) -> torch.Tensor:
        filled = torch.isfinite(entropies).flatten()
        if not filled.any():
            return x.new_zeros(values.shape[-1])
        k, v = keys.flatten(0, 1)[filled], values.flatten(0, 1)[filled]
        return torch.exp(-beta * (1.0 - k @ x)) @ v

    def update_predict(self, X) -> torch.Tensor:
        """Process (N, D) features (or one (D,) feature) in order, updating the caches with each
        before predicting it; returns logits (N, C) on the cache device."""
        X = torch.as_tensor(X) if not isinstance(X, torch.Tensor) else X
        X = check_features(X[None] if X.ndim == 1 else X, "X", n_features=self.text_weights.shape[1],
                           device=self.device, estimator="TDA")
        X = F.normalize(X, dim=-1)
        zero_shot = LOGIT_SCALE * X @ self.text_weights.T
        probabilities = zero_shot.softmax(dim=-1)
        entropies = -(probabilities * torch.log(probabilities + 1e-10)).sum(dim=-1)
        eye = torch.eye(self.n_classes, device=self.device)
        out = torch.empty_like(zero_shot)
        for i in range(X.shape[0]):
            x, pred, h = X[i], int(zero_shot[i].argmax()), float(entropies[i])
            self._insert(self.pos_keys, self.pos_entropy, None, pred, x, h)
            if self.neg_entropy[0] < h / self.max_entropy < self.neg_entropy[1]:
                mask = ((probabilities[i] > self.neg_mask[0]) & (probabilities[i] < self.neg_mask[1])).float()
                self._insert(self.neg_keys, self.neg_entropy_values, self.neg_masks, pred, x, h, mask)
            positive = self._cache_term(x, self.pos_keys, self.pos_entropy, eye[:, None, :].expand(
                -1, self.pos_capacity, -1), self.pos_beta)
            negative = self._cache_term(x, self.neg_keys, self.neg_entropy_values, self.neg_masks, self.neg_beta)
            out[i] = zero_shot[i] + self.pos_alpha * positive - self.neg_alpha * negative
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The caches as tensors (infinite entropy marks an empty slot)."""
        return {"pos_keys": self.pos_keys, "pos_entropy": self.pos_entropy, "neg_keys": self.neg_keys,
                "neg_entropy": self.neg_entropy_values, "neg_masks": self.neg_masks}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore caches saved by :meth:`state_dict`; shapes must match this TDA's."""
        current = self.state_dict()
        for name, tensor in current.items():
            if name not in state or tuple(state[name].shape) != tuple(tensor.shape):
                raise ValueError(f"state[{name!r}] must have shape {tuple(tensor.shape)}; got "
                                 f"{None if name not in state else tuple(state[name].shape)}")
        self.pos_keys, self.pos_entropy = state["pos_keys"].to(self.device), state["pos_entropy"].to(self.device)
        self.neg_keys, self.neg_entropy_values = state["neg_keys"].to(self.device), state["neg_entropy"].to(self.device)
        self.neg_masks = state["neg_masks"].to(self.device)

    def save(self, path: str | os.PathLike) -> None:
        """Write the caches to a safetensors file (atomically)."""
        state = {k: v.contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(Path(path), lambda tmp: save_file(state, tmp))

    def load(self, path: str | os.PathLike) -> None:
        """Restore caches written by :meth:`save`."""
        self.load_state_dict(load_file(str(path)))
