"""Figures for result rows: accuracy versus shots, and per-dataset bars at one shot count."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from .results import summarize


def accuracy_vs_shots(rows: Sequence[dict], backbone: str | None = None) -> plt.Figure:
    """One panel per dataset (and the average when there are several), one line per adapter,
    error bars = standard deviation over seeds."""
    summary = summarize(rows)
    backbone = backbone or sorted({b for b, _, _ in summary})[0]
    panels = sorted({d for (b, _, _), cells in summary.items() if b == backbone for d in cells} - {"Average"})
    if any("Average" in cells for (b, _, _), cells in summary.items() if b == backbone):
        panels.append("Average")
    columns = min(4, len(panels))
    figure, axes = plt.subplots(math.ceil(len(panels) / columns), columns, squeeze=False,
                                figsize=(4 * columns + 2, 3.2 * math.ceil(len(panels) / columns) + 0.4))
    adapters = list(dict.fromkeys(a for b, _, a in summary if b == backbone))
    for ax, panel in zip(axes.flat, panels):
        for adapter in adapters:
            points = sorted((k, summary[b, k, a][panel]) for b, k, a in summary
                            if b == backbone and a == adapter and panel in summary[b, k, a])
            if points:
                shots = [k for k, _ in points]
                ax.errorbar(shots, [100 * m for _, (m, _, _) in points], yerr=[100 * s for _, (_, s, _) in points],
                            marker="o", capsize=3, label=adapter)
                ax.set_xscale("log", base=2)
                ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_title(panel)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8)
    figure.suptitle(backbone, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1 - 1.9 / (4 * columns + 2), 1))
    return figure


def dataset_bars(rows: Sequence[dict], shots: int, backbone: str | None = None) -> plt.Figure:
    """Grouped bars: datasets on the x-axis, one bar per adapter, error bars over seeds."""
    summary = summarize(rows)
    backbone = backbone or sorted({b for b, _, _ in summary})[0]
    adapters = [a for b, k, a in summary if b == backbone and k == shots]
    datasets = sorted({d for a in adapters for d in summary[backbone, shots, a]})
    width = 0.8 / max(1, len(adapters))
    figure, ax = plt.subplots(figsize=(max(7, 1.2 * len(datasets) * max(1, len(adapters)) ** 0.5 + 3), 3.5))
    for i, adapter in enumerate(adapters):
        cells = summary[backbone, shots, adapter]
        xs = [j + i * width for j, d in enumerate(datasets) if d in cells]
        ax.bar(xs, [100 * cells[d][0] for d in datasets if d in cells], width,
               yerr=[100 * cells[d][1] for d in datasets if d in cells], capsize=2, label=adapter)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{backbone}, {shots} shot{'s' * (shots > 1)}", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def save_figures(rows: Sequence[dict], out: str | os.PathLike) -> list[Path]:
    """accuracy_vs_shots and per-dataset bars (at the largest shot count) for each backbone, as
    PNG and SVG under ``out``; returns the written paths."""
    if not rows:
        return []
    out = Path(out)
    written = []
    backbones = sorted({b for b, _, _ in summarize(rows)})
    for i, backbone in enumerate(backbones):
        suffix = "" if len(backbones) == 1 else f"_{i}"
        largest = max(k for b, k, _ in summarize(rows) if b == backbone)
        for name, figure in ((f"accuracy_vs_shots{suffix}", accuracy_vs_shots(rows, backbone)),
                             (f"datasets_{largest}shot{suffix}", dataset_bars(rows, largest, backbone))):
            for extension in ("png", "svg"):
                path = out / f"{name}.{extension}"
                figure.savefig(path, dpi=120)
                written.append(path)
            plt.close(figure)
    return written
