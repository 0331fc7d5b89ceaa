"""Tip-Adapter (Zhang et al., ECCV 2022), training-free, and the cache engine its family shares.

A key-value cache of the support set: keys K (N_s, D) are the view-averaged support features,
values their one-hot labels. Affinities are cosine similarities (queries and keys are
L2-normalised, a no-op for CLIP features), clamped to [−1, 1].
logits = 100 · X Tᵀ + α · exp(−β (1 − X Kᵀ)) V, the exponent computed as β · A − β.

Large caches use sparse affinities: with ``top_k`` set, each query sees only its k nearest keys,
found by a faiss :class:`adaptkit.support.SupportIndex` (exact inner product), and the cache term
sums over those keys alone. ``top_k`` equal to the number of keys gives the dense result.

The engine (:meth:`TipAdapter._evaluate`) scores many hyper-parameter sets at once: per chunk of
queries (its size depends only on the cache, so ``predict`` and ``tune`` see the same chunks) it
computes the affinities once, then per distinct cache-shaping value (β; APE's γ; the caption
cache's δ) one cache term, and all the linear weights (α; TIP-X's γ) of that term in one
broadcast step. Keys are stored grouped by class, so the class aggregation of a dense cache is a
segment sum; sparse caches scatter-add into their neighbours' classes. TIP-X, APE and the caption
cache extend the shared terms (:meth:`_shared`), the cache term (:meth:`_cache_term`) and the
combination (:meth:`_combine`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import StrOptions

from .._params import FLOAT32_MAX, Float, Int
from .base import Adapter, count_correct, earlier_classes

DENSE_LIMIT = 16384
"""With ``top_k="auto"``, caches up to this many keys are dense; larger ones use ``AUTO_TOP_K``."""
AUTO_TOP_K = 256
AFFINITY_ELEMENTS = 1 << 24
"""Query × key affinities held at once (64 MiB of float32); sets the query chunk size."""
BATCH_ELEMENTS = 1 << 21
"""Logit entries per broadcast step (8 MiB): small enough to stay in the CPU's cache."""

WEIGHT = [Float(0, FLOAT32_MAX)]
"""A non-negative weight or sharpness that float32 can hold."""


def tip_grid(beta_scale: float = 7.0, alpha_scale: float = 3.0, beta_steps: int = 200,
             alpha_steps: int = 20) -> dict[str, tuple[float, ...]]:
    """The official search space: β over ``beta_steps`` values from 0.1 towards ``beta_scale``,
    α over ``alpha_steps`` values from 0.1 towards ``alpha_scale`` (left end included)."""
    betas = 0.1 + np.arange(beta_steps) * (beta_scale - 0.1) / beta_steps
    alphas = 0.1 + np.arange(alpha_steps) * (alpha_scale - 0.1) / alpha_steps
    return {"beta": tuple(betas.tolist()), "alpha": tuple(alphas.tolist())}


def gathered_dot(queries: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor,
                 max_elements: int = 1 << 24) -> torch.Tensor:
    """out[n, j] = queries[n] · rows[positions[n, j]]: (N, k), in query chunks of bounded memory."""
    chunk = max(1, max_elements // (positions.shape[1] * rows.shape[1]))
    return torch.cat([torch.einsum("nd,nkd->nk", queries[i:i + chunk], rows[positions[i:i + chunk]])
                      for i in range(0, queries.shape[0], chunk)])


def sharpen(affinity: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(−β (1 − A)) = exp(β A − β), elementwise, as a new tensor."""
    return torch.mul(affinity, beta).sub_(beta).exp_()


class Neighbours:
    """The keys each query sees: all of them (``positions is None``) or its k nearest.

    similarities : (N, k) cosine similarities to those keys (sparse case only).
    positions : (N, k) key indices, or ``None`` for the dense cache.
    """

    def __init__(self, similarities: torch.Tensor | None = None, positions: torch.Tensor | None = None):
        self.similarities, self.positions = similarities, positions


class TipAdapter(Adapter):
    """Tip-Adapter cache classifier.

    Parameters
    ----------
    alpha : weight of the cache logits (residual ratio), ≥ 0.
    beta : sharpness of the affinity exp(−β (1 − cosine)), ≥ 0.
    top_k : ``None`` (dense cache), an int k ≥ 1 (each query uses its k nearest keys, through
        faiss), or ``"auto"``: dense up to 16,384 keys, k = 256 beyond.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Fitted attributes (keys grouped by class, in label order): ``support_features_`` (N_s, D)
    the view-averaged support features as given, ``keys_`` (N_s, D) those L2-normalised,
    ``key_labels_`` (N_s,).
    """

    param_grid = tip_grid()
    training_views = "mean"
    _parameter_constraints = {**Adapter._parameter_constraints, "alpha": WEIGHT, "beta": WEIGHT,
                              "top_k": [Int(1, None, closed="left"), StrOptions({"auto"}), None]}
    state_params = frozenset({"top_k"})
    fitted_tensors = {**Adapter.fitted_tensors, "support_features_": torch.float32, "keys_": torch.float32,
                      "key_labels_": torch.int64}
    cache_params: tuple[str, ...] = ("beta",)
    """Hyper-parameters that shape the cache term (one term per distinct value in a grid)."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, top_k: int | str | None = "auto",
                 device: str = "auto"):
        self.alpha = alpha
        self.beta = beta
        self.top_k = top_k
        self.device = device

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        order = torch.sort(y, stable=True).indices
        self._sort_order = order
        self.support_features_ = X[order]
        self.keys_ = F.normalize(self.support_features_, dim=-1)
        self.key_labels_ = y[order]
        self._index = None
        self._segments = self._segment_layout()

    def _support_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, "support_features_", self.keys_), self.key_labels_

    def __getstate__(self):
        """Copies and pickles leave the faiss index behind; it is rebuilt from ``keys_`` on use."""
        state = super().__getstate__()
        state["_index"] = None
        return state

    # --- the shared terms of one chunk of queries ---------------------------------------------

    def _neighbours(self, X: torch.Tensor) -> Neighbours:
        """Dense (all keys) or the k nearest keys of each query, by ``top_k``."""
        top_k, n_keys = getattr(self, "top_k", None), self.keys_.shape[0]
        if top_k == "auto":
            top_k = None if n_keys <= DENSE_LIMIT else AUTO_TOP_K
        if top_k is None:
            return Neighbours()
        if getattr(self, "_index", None) is None:
            from ..support.index import SupportIndex

            device = "cuda" if self.device_.type == "cuda" else "cpu"
            self._index = SupportIndex(self.keys_.shape[1], "flat", device=device).add(self.keys_)
        similarities, positions = self._index.search(X, min(int(top_k), n_keys))
        return Neighbours(similarities.to(X.device).clamp_(-1.0, 1.0), positions.to(X.device))

    def _query_rows(self) -> int:
        """Queries per chunk: affinities of at most ``AFFINITY_ELEMENTS`` entries."""
        top_k = getattr(self, "top_k", None)
        width = self.keys_.shape[0] if top_k in (None, "auto") else min(int(top_k), self.keys_.shape[0])
        return max(1, AFFINITY_ELEMENTS // max(1, width))

    def _shared(self, X: torch.Tensor) -> dict[str, Any]:
        """What every grid point of this chunk of queries (N_c, D) shares: normalised queries,
        the zero-shot logits, the neighbourhood and the cosine affinity to the keys."""
        queries = F.normalize(X, dim=-1)
        near = self._neighbours(X)
        affinity = (queries @ self.keys_.T).clamp_(-1.0, 1.0) if near.positions is None else near.similarities
        return {"queries": queries, "zero_shot": self._zero_shot_logits(X), "near": near, "affinity": affinity}

    # --- aggregation over the keys of each class ----------------------------------------------

    def _segment_layout(self) -> int:
        """k when the keys are grouped by class with k keys for every class (a segment sum is a
        reshape), else 0 (scatter-add by label)."""
        labels = self.key_labels_
        counts = torch.bincount(labels, minlength=self.n_classes_)
        grouped = bool((labels[1:] >= labels[:-1]).all()) if labels.numel() > 1 else True
        equal = bool((counts == counts[0]).all()) and int(counts[0]) > 0
        return int(counts[0]) if grouped and equal else 0

    def _class_segments(self) -> int | None:
        segments = getattr(self, "_segments", None)
        return (self._segment_layout() if segments is None else segments) or None

    def _class_sum(self, values: torch.Tensor, near: Neighbours, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_j values_ij · w_j over the keys j of each class: (N, C) from (N, N_s) or (N, k)."""
        n, n_classes = values.shape[0], self.n_classes_
        if near.positions is not None:
            if weights is not None:
                values = values * weights[near.positions]
            out = values.new_zeros(n, n_classes)
            return out.scatter_add_(1, self.key_labels_[near.positions], values)
        per_class = self._class_segments()
        if per_class is None:
            if weights is not None:
                values = values * weights
            return values.new_zeros(n, n_classes).index_add_(1, self.key_labels_, values)
        grouped = values.view(n, n_classes, per_class)
        if weights is None:
            return grouped.sum(dim=-1)
        # One weight vector at a time, in the batched spelling that torch contracts fastest.
        return torch.einsum("nck,gck->gnc", grouped, weights.view(1, n_classes, per_class))[0]

    # --- terms and their combination ----------------------------------------------------------

    def _cache_term(self, shared: dict[str, Any], params: dict[str, Any]) -> torch.Tensor:
        """exp(−β (1 − A)) V for one value of the cache parameters: (N_c, C)."""
        return self._class_sum(sharpen(shared["affinity"], params["beta"]), shared["near"])

    def _combine(self, shared: dict[str, Any], cache: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
        """Logits (g, N_c, C) of grid points sharing one cache term: zero-shot + α · cache."""
        alphas = torch.tensor([p["alpha"] for p in params], dtype=cache.dtype, device=cache.device)
        return torch.addcmul(shared["zero_shot"], alphas.view(-1, 1, 1), cache)

    def _term_scales(self, shared: dict[str, Any], cache: torch.Tensor) -> dict[str, float]:
        """The largest magnitude of each term :meth:`_combine` adds (for the overflow bound)."""
        if not bool(torch.isfinite(cache).all()):
            raise ValueError(f"{type(self).__name__}'s cache term overflows float32 for these features")
        return {"zero_shot": float(shared["zero_shot"].abs().max()), "cache": float(cache.abs().max())}

    def _logit_bound(self, scales: dict[str, float], params: dict[str, Any]) -> float:
        """An upper bound of |logit| at ``params``, computed in float64."""
        return scales["zero_shot"] + abs(params["alpha"]) * scales["cache"]

    # --- the engine ---------------------------------------------------------------------------

    def _evaluate(self, X: torch.Tensor, candidates: list[dict[str, Any]], y: torch.Tensor | None):
        """Logits (G, N, C) of every candidate, or with labels ``y`` the number each gets right (G,)."""
        own = self.get_params(deep=False)
        params = [{**own, **c} for c in candidates]
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(tuple(p[name] for name in self.cache_params), []).append(i)
        n, n_classes = X.shape[0], self.n_classes_
        rows = self._query_rows()
        per_batch = max(1, BATCH_ELEMENTS // (min(rows, n) * n_classes))
        if y is None:
            out = X.new_empty(len(params), n, n_classes)
        else:
            out = torch.zeros(len(params), dtype=torch.int64)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            shared = self._shared(X[start:stop])
            before = None if y is None else earlier_classes(y[start:stop], n_classes, X.dtype)
            for key, members in groups.items():
                cache = self._cache_term(shared, dict(zip(self.cache_params, key)))
                scales = self._term_scales(shared, cache)
                for i in members:
                    if self._logit_bound(scales, params[i]) > FLOAT32_MAX:
                        self._overflow(candidates[i])
                for b in range(0, len(members), per_batch):
                    batch = members[b:b + per_batch]
                    logits = self._combine(shared, cache, [params[i] for i in batch])
                    if y is None:
                        out[batch, start:stop] = logits
                    else:
                        out[batch] += count_correct(logits, y[start:stop], before).cpu()
        return out if y is None else out.numpy()

    def _grid_logits(self, X, candidates):
        return self._evaluate(X, candidates, None)

    def _grid_correct(self, X, y, candidates):
        return self._evaluate(X, candidates, y)
