"""Rank the adapter family on one support set, by validation accuracy alone.

:func:`leaderboard` fits every adapter that applies, tunes it on the validation set
(:func:`adaptkit.tune`), and returns a :class:`Leaderboard`: rows best first, the tuned adapters,
the best one ready for ``predict``/``save``, and what was skipped and why. Test data never enters.
Adapters receive their declared extra ``fit`` inputs (captions, unlabeled features, ...) by name
from the keywords of :func:`leaderboard`; an adapter whose required input is absent is skipped.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

from .adapters import ADAPTERS, Adapter
from .progress import progress_bar
from .tuning import grid_axes, tune


@dataclass
class Leaderboard:
    """The result of :func:`leaderboard`.

    rows : one dict per adapter, best first: ``adapter`` (name), ``params`` (chosen
        hyper-parameters), ``val_accuracy`` (fraction), ``approximation`` (what the adapter
        approximates, e.g. ``"Nyström, rank 1024"``; ``None`` when exact), ``fit_seconds``,
        ``tune_seconds``.
    adapters : name -> the fitted, tuned adapter.
    skipped : name -> why the adapter did not run (no text weights, a missing declared input, an
        exact solve too large for the support set).
    """

    rows: list[dict[str, Any]]
    adapters: dict[str, Adapter]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> Adapter:
        """The fitted, tuned adapter with the highest validation accuracy (the first on ties)."""
        if not self.rows:
            raise ValueError("the leaderboard is empty: no adapter applied to these inputs "
                             f"(skipped: {self.skipped})")
        return self.adapters[self.rows[0]["adapter"]]

    def to_markdown(self) -> str:
        """A Markdown table, validation accuracy in percent, and the skipped adapters."""
        lines = ["| rank | adapter | val accuracy (%) | chosen hyper-parameters | fit (s) | tune (s) |",
                 "|---|---|---|---|---|---|"]
        for rank, row in enumerate(self.rows, 1):
            params = ", ".join(f"{k}={_short(v)}" for k, v in row["params"].items()) or "–"
            lines.append(f"| {rank} | {_labelled(row)} | {100 * row['val_accuracy']:.2f} | {params} | "
                         f"{row['fit_seconds']:.3f} | {row['tune_seconds']:.3f} |")
        text = "\n".join(lines)
        if self.skipped:
            text += "\n\nSkipped: " + "; ".join(f"{name} ({why})" for name, why in self.skipped.items())
        return text

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td>{rank}</td><td>{html.escape(_labelled(row))}</td><td>{100 * row['val_accuracy']:.2f}</td>"
            f"<td>{html.escape(', '.join(f'{k}={_short(v)}' for k, v in row['params'].items()) or '–')}</td>"
            f"<td>{row['fit_seconds']:.3f}</td><td>{row['tune_seconds']:.3f}</td></tr>"
            for rank, row in enumerate(self.rows, 1))
        skipped = "".join(f"<li>{html.escape(n)}: {html.escape(w)}</li>" for n, w in self.skipped.items())
        return ("<table><thead><tr><th>rank</th><th>adapter</th><th>val accuracy (%)</th><th>chosen "
                "hyper-parameters</th><th>fit (s)</th><th>tune (s)</th></tr></thead><tbody>" + cells +
                "</tbody></table>" + (f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else ""))

    def __repr__(self) -> str:
        return self.to_markdown()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _labelled(row: dict[str, Any]) -> str:
    """The adapter's name, with what it approximates."""
    return row["adapter"] if row["approximation"] is None else f"{row['adapter']} (approximate: {row['approximation']})"


def _name_of(adapter: Adapter) -> str:
    return type(adapter).name or type(adapter).__name__


def _why_not(adapter: Adapter, n_rows: int, text_weights, inputs: Mapping[str, Any]) -> str | None:
    """Why ``adapter`` cannot or should not be fitted with these inputs on ``n_rows`` support
    rows (views flattened), or ``None``."""
    if adapter.needs_text and text_weights is None:
        return "needs text_weights"
    for name, spec in type(adapter).fit_inputs.items():
        if spec.required and inputs.get(name) is None:
            return f"needs {name}: {spec.description}"
    return adapter._skip_reason(n_rows)


def leaderboard(X, y, X_val, y_val, *, text_weights=None, adapters: Sequence[str | Adapter] | None = None,
                grids: Mapping[str, Mapping[str, Sequence]] | None = None, device: str = "auto",
                progress: bool = True, **inputs) -> Leaderboard:
    """Fit, tune on validation and rank the adapter family.

    Parameters
    ----------
    X, y : support features (N, D) or (N, V, D) and labels (N,).
    X_val, y_val : validation features and labels: the only data the ranking sees.
    text_weights : (C, D) zero-shot classifier; adapters that need it are skipped without it.
    adapters : names (:data:`adaptkit.adapters.ADAPTERS`) or configured adapter instances;
        default: the whole family that applies.
    grids : name -> search space for :func:`adaptkit.tune` (default: each adapter's own).
    device : where adapters named by string compute.
    progress : a bar over the adapters.
    **inputs : the extra ``fit`` inputs adapters declare (``fit_inputs``), by name:
        ``captions`` (one per support image) and ``backbone`` (encodes caption strings) for the
        caption cache, ``unlabeled`` features for the transductive GDA, or those of an adapter of
        your own. Each adapter receives the ones it declares; one naming no adapter's input is an error.
    """
    if isinstance(adapters, (str, Adapter)):
        raise TypeError("adapters must be a list of names or adapter instances")
    explicit = adapters is not None
    chosen = list(ADAPTERS) if adapters is None else list(adapters)
    grids = dict(grids or {})
    entries: list[tuple[str, Adapter]] = []
    for item in chosen:
        if isinstance(item, str):
            if item not in ADAPTERS:
                raise ValueError(f"adapters names {item!r}; known: {sorted(ADAPTERS)}")
            entries.append((item, ADAPTERS[item](device=device)))
        elif isinstance(item, Adapter):
            entries.append((_name_of(item), clone(item)))
        else:
            raise TypeError(f"adapters must hold names or adapter instances; got {type(item).__name__}")
    declared = {name for cls in [*ADAPTERS.values(), *(type(a) for _, a in entries)] for name in cls.fit_inputs}
    unknown = sorted(set(inputs) - declared)
    if unknown:
        raise TypeError(f"leaderboard got inputs {unknown} that no adapter declares; declared: {sorted(declared)}")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"adapters lists one adapter twice: {names}")
    for name, grid in grids.items():
        if name not in names:
            raise ValueError(f"grids names {name!r}, which is not among the adapters {names}")
        grid_axes(dict(entries)[name], grid)

    rows, tuned, skipped = [], {}, {}
    runnable = []
    shape = getattr(X, "shape", None)
    n_rows = int(np.prod(shape[:-1])) if shape is not None and len(shape) >= 2 else len(X)
    for name, adapter in entries:
        why = _why_not(adapter, n_rows, text_weights, inputs)
        if why is None:
            runnable.append((name, adapter))
        else:
            skipped[name] = why
    for name, adapter in progress_bar(runnable, progress=progress, desc="leaderboard", unit="adapter"):
        start = time.perf_counter()
        own = {k: v for k, v in inputs.items() if k in type(adapter).fit_inputs and v is not None}
        adapter.fit(X, y, text_weights=text_weights, **own)
        fitted = time.perf_counter()
        best = tune(adapter, X_val, y_val, grids.get(name))
        rows.append({"adapter": name, "params": best.tuning_results_["best_params"],
                     "val_accuracy": best.tuning_results_["best_score"], "approximation": best._approximation(),
                     "fit_seconds": fitted - start,
                     "tune_seconds": time.perf_counter() - fitted})
        tuned[name] = best
    if explicit and not rows:
        raise ValueError(f"none of the adapters could run: {skipped}")
    rows.sort(key=lambda row: -row["val_accuracy"])
    return Leaderboard(rows, tuned, skipped)
