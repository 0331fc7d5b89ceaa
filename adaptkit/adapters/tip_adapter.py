"""Tip-Adapter (Zhang et al., ECCV 2022), training-free: a key-value cache of the support set.

Keys K (N_s, D) are the view-averaged support features, values their one-hot labels. Affinities
are cosine similarities (queries and keys are L2-normalised, a no-op for CLIP features), clamped
to [−1, 1]. logits = 100 · X Tᵀ + α · exp(−β (1 − X Kᵀ)) V, the exponent computed as β · A − β.
The batched grid evaluation is the cache engine's (:class:`adaptkit.adapters.cache.CacheAdapter`).

Large caches use sparse affinities: with ``top_k`` set, each query sees only its k nearest keys,
found by a faiss :class:`adaptkit.index.SupportIndex` (exact inner product), and the cache term
sums over those keys alone. ``top_k`` equal to the number of keys gives the dense result.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._params import Int, StrOptions
from ..index import SupportIndex
from .cache import WEIGHT, CacheAdapter, Neighbours, linear_grid

DENSE_LIMIT = 16384
"""With ``top_k="auto"``, caches up to this many keys are dense; larger ones use ``AUTO_TOP_K``."""
AUTO_TOP_K = 256


def tip_grid(beta_scale: float = 7.0, alpha_scale: float = 3.0, beta_steps: int = 200,
             alpha_steps: int = 20) -> dict[str, tuple[float, ...]]:
    """The official search space: β over ``beta_steps`` values from 0.1 towards ``beta_scale``,
    α over ``alpha_steps`` values from 0.1 towards ``alpha_scale`` (left end included)."""
    return {"beta": linear_grid(0.1, beta_scale, beta_steps), "alpha": linear_grid(0.1, alpha_scale, alpha_steps)}


class TipAdapter(CacheAdapter):
    """Tip-Adapter cache classifier.

    Parameters
    ----------
    alpha : weight of the cache logits (residual ratio), ≥ 0.
    beta : sharpness of the affinity exp(−β (1 − cosine)), ≥ 0.
    top_k : ``None`` (dense cache), an int k ≥ 1 (each query uses its k nearest keys, through
        faiss), or ``"auto"``: dense up to 16,384 keys, k = 256 beyond.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Fitted attributes: those of :class:`~adaptkit.adapters.cache.CacheAdapter`.
    """

    name = "tip_adapter"
    param_grid = tip_grid()
    _parameter_constraints = {**CacheAdapter._parameter_constraints, "alpha": WEIGHT, "beta": WEIGHT,
                              "top_k": [Int(1, None, closed="left"), StrOptions({"auto"}), None]}
    state_params = frozenset({"top_k"})

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, top_k: int | str | None = "auto",
                 device: str = "auto"):
        self.alpha = alpha
        self.beta = beta
        self.top_k = top_k
        self.device = device

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        super()._fit(X, y)
        self._index = None

    def __getstate__(self):
        """Copies and pickles leave the faiss index behind; it is rebuilt from ``keys_`` on use."""
        state = super().__getstate__()
        state["_index"] = None
        return state

    # --- the shared terms of one chunk of queries ---------------------------------------------

    def _top_k(self) -> int | None:
        """The neighbours each query sees: ``None`` (all keys) or k."""
        n_keys = self.keys_.shape[0]
        if self.top_k == "auto":
            return None if n_keys <= DENSE_LIMIT else AUTO_TOP_K
        return None if self.top_k is None else min(int(self.top_k), n_keys)

    def _cache_width(self) -> int:
        top_k = self._top_k()
        return self.keys_.shape[0] if top_k is None else top_k

    def _neighbours(self, X: torch.Tensor) -> Neighbours:
        """Dense (all keys) or the k nearest keys of each query, by ``top_k``."""
        top_k = self._top_k()
        if top_k is None:
            return Neighbours()
        if self.__dict__.get("_index") is None:
            device = "cuda" if self.device_.type == "cuda" else "cpu"
            self._index = SupportIndex(self.keys_.shape[1], "flat", device=device).add(self.keys_)
        similarities, positions = self._index.search(X, top_k)
        return Neighbours(similarities.to(X.device).clamp_(-1.0, 1.0), positions.to(X.device))

    def _shared(self, X: torch.Tensor) -> dict[str, Any]:
        """What every grid point of this chunk of queries (N_c, D) shares: normalised queries,
        the zero-shot logits, the neighbourhood and the cosine affinity to the keys."""
        queries = F.normalize(X, dim=-1)
        near = self._neighbours(X)
        affinity = (queries @ self.keys_.T).clamp_(-1.0, 1.0) if near.positions is None else near.similarities
        return {"queries": queries, "zero_shot": self._zero_shot_logits(X), "near": near, "affinity": affinity}
