"""Zero-shot CLIP: logits = 100 · X Tᵀ."""

from __future__ import annotations

import torch

from .base import Adapter


class ZeroShot(Adapter):
    """Zero-shot CLIP classifier from the text weights; the support set is only checked.

    Parameters
    ----------
    device : where the text weights live; ``"auto"`` picks CUDA when present.
    """

    name = "zero_shot"
    needs_text = True
    fitted_attributes = {**Adapter.fitted_attributes, "is_fitted_": bool}

    def __init__(self, device: str = "auto"):
        self.device = device

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.is_fitted_ = True

    def _grid_logits(self, X: torch.Tensor, candidates) -> torch.Tensor:
        return self._zero_shot_logits(X).unsqueeze(0).expand(len(candidates), -1, -1)
