"""CapS-style caption cache (Wang et al., 2024, "CapS-Adapter"): TIP-X whose keys are both the
support images and captions of them.

Affinity A_δ = (1 − δ) · X K_imgᵀ + δ · X K_capᵀ feeds the cache term; the KL-signature term of
:class:`TipX` is kept. The official repository computes the "signatures" as a softmax of the raw
image features over feature channels (the class-similarity product is computed and then
discarded), while the paper uses image-to-class similarity distributions; adaptkit follows the
paper: softmax(X Tᵀ / τ) over classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._params import Float
from .._validation import check_features
from .cache import gathered_dot, sharpen
from .registry import FitInput
from .tip_x import TipX


class CaptionCache(TipX):
    """Caption-augmented cache adapter.

    Parameters
    ----------
    alpha, beta, gamma, tau, top_k : as in :class:`TipX` (neighbours are found among the image keys).
    delta : weight of the caption keys in the affinity, in [0, 1].
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    ``fit(X, y, *, text_weights, captions, backbone=None)``: ``captions`` holds one caption per
    support image, as (N, D) text features or as strings encoded with ``backbone``.
    Fitted attributes: those of :class:`TipX` plus ``caption_keys_`` (N_s, D), in key order.
    """

    name = "caption_cache"
    fit_inputs = {"captions": FitInput("one caption per support image: (N, D) text features, or strings together "
                                       "with backbone="),
                  "backbone": FitInput("the adaptkit.Backbone that encodes captions given as strings", required=False,
                                       rows=None)}
    param_grid = {"beta": tuple((0.1 + np.arange(25) * 6.9 / 25).tolist()),
                  "delta": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                  "alpha": tuple((0.1 + np.arange(10) * 2.9 / 10).tolist()),
                  "gamma": (0.0, 0.25, 1.0)}
    _parameter_constraints = {**TipX._parameter_constraints, "delta": [Float(0, 1)]}
    fitted_tensors = {**TipX.fitted_tensors, "caption_keys_": torch.float32}
    cache_params = ("beta", "delta")

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.1, delta: float = 0.5,
                 tau: float = 0.5, top_k: int | str | None = "auto", device: str = "auto"):
        super().__init__(alpha=alpha, beta=beta, gamma=gamma, tau=tau, top_k=top_k, device=device)
        self.delta = delta

    def _take_inputs(self, X: torch.Tensor, captions=None, backbone=None) -> None:
        if isinstance(captions, Sequence) and captions and all(isinstance(c, str) for c in captions):
            if backbone is None:
                raise ValueError("captions given as strings need backbone= to encode them")
            captions = backbone.encode_texts(list(captions))
        captions = check_features(captions, "captions", n_features=self.n_features_in_, device=self.device_)
        if captions.shape[0] != X.shape[0]:
            raise ValueError(f"captions must hold one caption per support image ({X.shape[0]}); "
                             f"got {captions.shape[0]}")
        self._captions = F.normalize(captions, dim=-1)

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """The caption keys follow the image keys' order; a refit (tuning ``top_k`` or ``tau``)
        receives the keys already in that order and keeps them."""
        super()._fit(X, y)
        captions = self.__dict__.pop("_captions", None)
        if captions is not None:
            self.caption_keys_ = captions[self._sort_order].contiguous()

    def _shared(self, X: torch.Tensor) -> dict[str, Any]:
        shared = super()._shared(X)
        queries, near = shared["queries"], shared["near"]
        if near.positions is None:
            captions = queries @ self.caption_keys_.T
        else:
            captions = gathered_dot(queries, self.caption_keys_, near.positions)
        shared["caption_affinity"] = captions.clamp_(-1.0, 1.0)
        return shared

    def _cache_term(self, shared: dict[str, Any], params: dict[str, Any]) -> torch.Tensor:
        """(1 − δ) · image affinity + δ · caption affinity, sharpened and summed per class."""
        delta = params["delta"]
        affinity = torch.lerp(shared["affinity"], shared["caption_affinity"], float(delta))
        return self._class_sum(sharpen(affinity, params["beta"]), shared["near"])
