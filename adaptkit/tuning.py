"""Validation-only hyper-parameter search over an adapter's whole grid in batched products."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._params import check_params
from .adapters.base import Adapter

NOT_TUNABLE = frozenset({"device"})


def grid_axes(adapter: Adapter | type[Adapter], grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Validate a search space: known parameter names, non-empty 1-D axes (lists, tuples, numpy
    arrays), every value allowed by the adapter's constraints. Returns {name: [values]}."""
    cls = adapter if isinstance(adapter, type) else type(adapter)
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a mapping of parameter name to a list of values; got {type(grid).__name__}")
    known = set(cls._parameter_constraints)
    axes = {}
    for name, values in grid.items():
        if name in NOT_TUNABLE:
            raise ValueError(f"grid names {name!r}, which is where {cls.__name__} computes, not a hyper-parameter")
        if name not in known:
            raise ValueError(f"grid names {name!r}, which is not a parameter of {cls.__name__} "
                             f"(parameters: {sorted(known - NOT_TUNABLE)})")
        if isinstance(values, np.ndarray):
            if values.ndim != 1:
                raise ValueError(f"grid[{name!r}] must be a 1-D list of values; got an array of shape {values.shape}")
            values = values.tolist()
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"grid[{name!r}] must be a non-empty list of values; got {values!r}")
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
        for position, value in enumerate(values):
            try:
                check_params(cls.__name__, {name: cls._parameter_constraints[name]}, {name: value})
            except ValueError as err:
                raise type(err)(f"grid[{name!r}][{position}]: {err}") from None
        axes[name] = list(values)
    return axes


def tune(adapter: Adapter, X_val, y_val, grid: Mapping[str, Sequence[Any]] | None = None) -> Adapter:
    """Choose hyper-parameters on validation data only.

    Scores every point of ``grid`` (default: ``adapter.param_grid``; an empty grid scores the
    adapter as it is) by validation accuracy and returns a fitted copy of ``adapter`` at the best
    point (the first one on ties, in grid order). Axes may be lists, tuples or 1-D numpy arrays;
    every value is checked against the adapter's declared constraints before any work.

    Hyper-parameters that only re-weight fitted terms are scored many at a time from shared
    products; those that shape fitted state (``adapter.state_params``: ProKeR's β and λ, APE's
    channels, TIP-X's temperature, ``top_k``, the linear probe's C, ...) are refitted from the
    adapter's support set, or evaluated by the adapter's exact batched equivalent. The returned
    adapter is the evaluated state at the chosen point, so its ``score(X_val, y_val)`` equals
    ``tuning_results_["best_score"]`` and its logits equal a fresh ``fit`` with those parameters.

    The copy carries ``tuning_results_``: ``{"params": [...], "val_accuracy": ndarray,
    "best_params": {...}, "best_score": float}``. ``adapter`` itself is left unchanged.
    """
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be an adaptkit adapter; got {type(adapter).__name__}")
    check_is_fitted(adapter)
    axes = grid_axes(adapter, adapter.param_grid if grid is None else grid)
    names = list(axes)
    candidates = [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]
    X = adapter._check_X(X_val)
    y = adapter._encode_labels(y_val, X.shape[0], "y_val").to(X.device)

    refit = adapter.state_params - adapter.batched_params
    groups: dict[tuple, list[int]] = {}
    for i, candidate in enumerate(candidates):
        groups.setdefault(tuple((n, candidate[n]) for n in names if n in refit), []).append(i)
    correct = np.zeros(len(candidates), dtype=np.int64)
    best_model, best_key = None, None
    for state, members in groups.items():
        model = adapter._with_params(dict(state))
        rest = [{n: v for n, v in candidates[i].items() if n not in refit} for i in members]
        correct[members] = model._grid_correct(X, y, rest)
        top = members[int(np.argmax(correct[members]))]
        key = (-correct[top], top)
        if best_key is None or key < best_key:
            best_model, best_key = model, key
    best = best_key[1]
    accuracy = correct / X.shape[0]
    tuned = copy.deepcopy(best_model)._with_params({n: v for n, v in candidates[best].items() if n not in refit})
    tuned.tuning_results_ = {"params": candidates, "val_accuracy": accuracy,
                             "best_params": candidates[best], "best_score": float(accuracy[best])}
    return tuned
