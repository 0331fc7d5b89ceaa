"""The cache engine shared by the key-value cache adapters (Tip-Adapter, TIP-X, the caption
cache, APE): affinities, neighbours, class sums and the batched grid evaluation.

A cache holds keys K (N_s, D), the view-averaged support features L2-normalised, grouped by
class, with their one-hot labels as values. :meth:`CacheAdapter._evaluate` scores many
hyper-parameter sets at once: per chunk of queries (its size depends only on the cache, so
``predict`` and ``tune`` see the same chunks) it computes the shared terms once
(:meth:`_shared`: the zero-shot logits, the neighbourhood and the affinity), then per distinct
value of ``cache_params`` one cache term (:meth:`_cache_term`), and all the linear weights of
that term in one broadcast step (:meth:`_combine`). When scoring, grid points that differ only in
α are scored as one sweep in closed form (:mod:`adaptkit.adapters.sweep`), with exactly the counts
of the combine. Keys grouped by class make the class
aggregation of a dense cache a segment sum; sparse caches scatter-add into their neighbours'
classes. Subclasses define the affinity (:meth:`_shared`), the cache term and the combination.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .._params import FLOAT32_MAX, Float
from .base import Adapter, correct_rows, count_correct, earlier_classes
from .sweep import MIN_SWEEP, sweep_counts

AFFINITY_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 24}
"""Query × key affinities held at once, per device type; sets the query chunk size. On CPU 4 MiB
of float32, so that a chunk stays in cache while each β sharpens it and sums it by class (with
64 MiB chunks the N_val = 10,000 search streamed every chunk through memory three times per β:
12.2 s against 6.1 s, one thread, C = 100, 1,600 keys); on a GPU 64 MiB, fewer and larger
kernels."""
BATCH_ELEMENTS = 1 << 21
"""Logit entries per broadcast step (8 MiB): small enough to stay in the CPU's cache."""

WEIGHT = [Float(0, FLOAT32_MAX)]
"""A non-negative weight or sharpness that float32 can hold."""


def linear_grid(low: float, high: float, steps: int) -> tuple[float, ...]:
    """``steps`` values from ``low`` towards ``high`` (left end included), as the official grids."""
    return tuple((low + np.arange(steps) * (high - low) / steps).tolist())


def _owner(cls: type, name: str) -> type:
    return next(klass for klass in cls.__mro__ if name in klass.__dict__)


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


class CacheAdapter(Adapter):
    """Base of the key-value cache adapters: the zero-shot logits plus weighted cache terms.

    Fitted attributes (keys grouped by class, in label order): ``support_features_`` (N_s, D)
    the view-averaged support features as given, ``keys_`` (N_s, D) those L2-normalised,
    ``key_labels_`` (N_s,).
    """

    training_views = "mean"
    fitted_tensors = {**Adapter.fitted_tensors, "support_features_": torch.float32, "keys_": torch.float32,
                      "key_labels_": torch.int64}
    cache_params: ClassVar[tuple[str, ...]] = ("beta",)
    """Hyper-parameters that shape the cache term (one term per distinct value in a grid)."""

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        order = torch.sort(y, stable=True).indices
        self._sort_order = order
        self.support_features_ = X[order]
        self.keys_ = F.normalize(self.support_features_, dim=-1)
        self.key_labels_ = y[order]
        self._segments = self._segment_layout()

    def _support_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.support_features_, self.key_labels_

    def _cache_width(self) -> int:
        """Keys each query is compared with (all of them for a dense cache)."""
        return self.keys_.shape[0]

    def _query_rows(self) -> int:
        """Queries per chunk: affinities of at most ``AFFINITY_ELEMENTS`` entries (for the
        keys' device type)."""
        budget = AFFINITY_ELEMENTS.get(self.keys_.device.type, AFFINITY_ELEMENTS["cuda"])
        return max(1, budget // max(1, self._cache_width()))

    def _shared(self, X: torch.Tensor) -> dict[str, Any]:
        """What every grid point of this chunk of queries (N_c, D) shares: at least the zero-shot
        logits, the neighbourhood and the affinity the cache term sharpens."""
        raise NotImplementedError

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
        if "_segments" not in self.__dict__:
            self._segments = self._segment_layout()
        return self._segments or None

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

    def _linear_base(self, shared: dict[str, Any], params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of :meth:`_combine` are base + α · cache: base (N_c, C) at ``params`` and a
        per-row bound (N_c,) of the magnitudes summed into it."""
        if "zero_shot_magnitude" not in shared:
            shared["zero_shot_magnitude"] = shared["zero_shot"].abs().amax(dim=1)
        return shared["zero_shot"], shared["zero_shot_magnitude"]

    def _sweeps_in_closed_form(self) -> bool:
        """Whether :meth:`_linear_base` describes this class's :meth:`_combine` (a subclass that
        redefines the combination without it is scored point by point)."""
        return issubclass(_owner(type(self), "_linear_base"), _owner(type(self), "_combine"))

    def _sweeps(self, params: list[dict[str, Any]], members: list[int]) -> tuple[list[list[int]], list[int]]:
        """Members split into sweeps (at least ``MIN_SWEEP`` points equal but for α) and the rest."""
        if not self._sweeps_in_closed_form():
            return [], members
        by_rest: dict[tuple, list[int]] = {}
        for i in members:
            by_rest.setdefault(tuple((k, v) for k, v in params[i].items() if k != "alpha"), []).append(i)
        sweeps = [group for group in by_rest.values() if len(group) >= MIN_SWEEP]
        swept = {i for group in sweeps for i in group}
        return sweeps, [i for i in members if i not in swept]

    def _sweep_correct(self, shared: dict[str, Any], cache: torch.Tensor, cache_magnitude: torch.Tensor,
                       params: list[dict[str, Any]], y: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """How many queries each point of one α sweep classifies right: (A,), equal to scoring the
        combine of each point (``cache_magnitude`` (N_c,): the cache term's largest |value| per
        query); at an α that leaves queries in doubt, the combine of that point (the very logits a
        point-by-point search computes) decides them."""
        base, magnitude = self._linear_base(shared, params[0])
        counts, doubt = sweep_counts(base, cache, magnitude, cache_magnitude, [p["alpha"] for p in params], y)
        for j in doubt.any(dim=1).nonzero().flatten().tolist():
            right = correct_rows(self._combine(shared, cache, [params[j]]), y, before)[0]
            counts[j] += right[doubt[j]].sum()
        return counts.cpu()

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
                sweeps, rest = ([], members) if y is None else self._sweeps(params, members)
                cache_magnitude = cache.abs().amax(dim=1) if sweeps else None  # shared by this term's sweeps
                for sweep in sweeps:
                    out[sweep] += self._sweep_correct(shared, cache, cache_magnitude, [params[i] for i in sweep],
                                                      y[start:stop], before)
                for b in range(0, len(rest), per_batch):
                    batch = rest[b:b + per_batch]
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
