"""Result rows of the protocol: their schema, the ``results.jsonl`` file, metrics and tables.

A row is one (dataset, backbone, adapter, shots, seed) result. Machine-readable outputs
(``results.jsonl``, ``table.csv``, ``diagnostics.json``) hold fractions: ``acc1`` (top-1
accuracy), ``acc5`` (top-5) and ``mean_per_class_recall``, as CLIP_benchmark reports them;
Markdown tables show percent and say so. Every row carries ``format_version``; rows of another
version, and lines that are not valid rows (a torn line left by a kill), are reported with their
line numbers, and ``compare`` moves them once to ``results.rejected.jsonl`` beside the file, with
those numbers, so that later runs do not report them again.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, top_k_accuracy_score

from .storage import atomic_write

logger = logging.getLogger("adaptkit")

RESULTS_FORMAT_VERSION = 2
"""Version 2: fractions (acc1, acc5, mean_per_class_recall). Version 1 (adaptkit 0.1) held
percentages under ``accuracy``."""

METRICS = ("acc1", "acc5", "mean_per_class_recall")

ROW_SCHEMA = {"format_version": int, "dataset": str, "backbone": dict, "adapter": str, "shots": int, "seed": int,
              "acc1": float, "acc5": float, "mean_per_class_recall": float, "val_accuracy": float, "params": dict,
              "fit_seconds": float, "predict_seconds": float, "config_hash": str, "adaptkit": str,
              "prompts_sha256": str, "views": int}

PUBLISHED_RN50 = {
    "zero_shot": {1: 58.89},
    "tip_adapter": {1: 62.33, 2: 64.62, 4: 66.54, 8: 68.50, 16: 70.32},
    "tip_x": {1: 62.87, 2: 65.29, 4: 67.64, 8: 69.37, 16: 71.40},
    "ape": {1: 65.13, 2: 67.19, 4: 69.47, 8: 71.58, 16: 73.36},
    "gda": {1: 62.19, 2: 66.19, 4: 69.77, 8: 73.31, 16: 76.05},
    "proker": {1: 63.77},
}
"""Published top-1 accuracy (%), average over the 11 CoOp datasets, RN50 with OpenAI weights: Tip-Adapter
(Zhang et al., ECCV 2022), TIP-X (Udandarao et al., ICCV 2023), APE (Zhu et al., ICCV 2023), GDA
(Wang et al., ICLR 2024), ProKeR (Bendou et al., CVPR 2025); zero-shot CLIP as those papers report it."""


def classification_metrics(logits, labels) -> dict[str, float]:
    """acc1, acc5 (top-min(5, C)) and mean per-class recall, by scikit-learn, from logits (N, C)."""
    scores = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    n_classes = scores.shape[1]
    predicted = scores.argmax(axis=1)
    acc5 = 1.0 if n_classes <= 5 else float(top_k_accuracy_score(labels, scores, k=5, labels=np.arange(n_classes)))
    return {"acc1": float(accuracy_score(labels, predicted)), "acc5": acc5,
            "mean_per_class_recall": float(balanced_accuracy_score(labels, predicted))}


def per_class_accuracy(logits, labels) -> list[float]:
    """Recall of each class (N, C) -> (C,) fractions, by scikit-learn; a class without test images is 0."""
    scores = np.asarray(logits)
    labels = np.asarray(labels)
    return recall_score(labels, scores.argmax(axis=1), labels=np.arange(scores.shape[1]), average=None,
                        zero_division=0.0).astype(float).tolist()


def backbone_label(identity: dict) -> str:
    """``"ViT-B-16 (tag:openai)"`` from a backbone identity."""
    return f"{identity['model']} ({identity['weights']})"


def row_key(row: dict) -> tuple:
    return (row["dataset"], backbone_label(row["backbone"]), row["adapter"], row["shots"], row["seed"],
            row["config_hash"])


def check_row(row) -> str | None:
    """Why ``row`` is not a result row of this format, or ``None`` when it is."""
    if not isinstance(row, dict):
        return f"not a JSON object ({type(row).__name__})"
    version = row.get("format_version")
    if version != RESULTS_FORMAT_VERSION:
        return (f"results format {version or 1} (adaptkit {row.get('adaptkit', '0.1')}); this adaptkit reads format "
                f"{RESULTS_FORMAT_VERSION}: start a new output folder (--output) or move the file aside")
    for key, kind in ROW_SCHEMA.items():
        value = row.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            return f"{key!r} is missing or not a {kind.__name__}"
    for metric in (*METRICS, "val_accuracy"):
        if not 0.0 <= row[metric] <= 1.0:
            return f"{metric!r} = {row[metric]} is not a fraction in [0, 1]"
    if not {"model", "weights", "precision"} <= set(row["backbone"]):
        return "'backbone' is not a backbone identity"
    return None


def read_results(path: str | os.PathLike) -> tuple[list[dict], list[tuple[int, str]]]:
    """(valid rows, [(line number, problem)]) of a results.jsonl. Duplicates keep the first row of a
    key. The file is only read, never rewritten."""
    path = Path(path)
    if not path.exists():
        return [], []
    rows, problems, seen = [], [], set()
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problems.append((number, "not UTF-8 text"))
                continue
            except json.JSONDecodeError:
                if raw.strip():
                    problems.append((number, "not valid JSON (a torn or edited line)"))
                continue
            problem = check_row(row)
            if problem:
                problems.append((number, problem))
                continue
            if row_key(row) not in seen:
                seen.add(row_key(row))
                rows.append(row)
    return rows, problems


def report_problems(path: str | os.PathLike, problems: list[tuple[int, str]], set_aside: bool = False) -> None:
    """Log the lines of a results file that were left out, with their numbers; with
    ``set_aside``, move them to ``results.rejected.jsonl`` (line number, problem, text) so that
    later runs do not report them again."""
    if not problems:
        return
    listed = "; ".join(f"line {n}: {why}" for n, why in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    if set_aside:
        side = set_aside_lines(path, problems)
        logger.warning("%s: %d line(s) are not result rows: %s%s; moved to %s with their line numbers", path,
                       len(problems), listed, more, side)
    else:
        logger.warning("%s: %d line(s) are not result rows and were left out (the file is unchanged): %s%s",
                       path, len(problems), listed, more)


def set_aside_lines(path: str | os.PathLike, problems: list[tuple[int, str]]) -> Path:
    """Move the numbered lines of ``problems`` out of ``path`` into ``<stem>.rejected.jsonl``
    beside it (appended first, then ``path`` rewritten atomically without them)."""
    path = Path(path)
    side = path.with_name(f"{path.stem}.rejected.jsonl")
    reasons = dict(problems)
    lines = path.read_bytes().splitlines(keepends=True)
    moved = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    records = [json.dumps({"line": n, "problem": reasons[n], "moved": moved,
                           "text": line.decode("utf-8", "backslashreplace").rstrip("\r\n")})
               for n, line in enumerate(lines, 1) if n in reasons]
    append_lines(side, "".join(f"{record}\n" for record in records))
    kept = b"".join(line if line.endswith(b"\n") else line + b"\n"
                    for n, line in enumerate(lines, 1) if n not in reasons)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(kept))
    return side


def append_row(path: str | os.PathLike, row: dict) -> None:
    """Append one row durably (fsync). A torn last line stays on its own line."""
    path = Path(path)
    problem = check_row(row)
    if problem:
        raise ValueError(f"refusing to write an invalid result row: {problem}")
    append_lines(path, json.dumps(row) + "\n")


def append_lines(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` (whole lines) durably (fsync), after a newline when the file ends in a torn
    line; an ``OSError`` naming the file when it cannot be written."""
    try:
        with open(path, "ab+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    text = "\n" + text
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise OSError(f"cannot append to {path}: {err.strerror or err}") from err


def summarize(rows: Iterable[dict], metric: str = "acc1") -> dict:
    """{(backbone, shots, adapter): {dataset or "Average": (mean, std, n_seeds)}} of ``metric``
    (a fraction).

    Per dataset: mean and sample standard deviation (ddof=1; 0 for one seed) over seeds.
    "Average": for each seed, the mean over datasets; then mean ± std of those over seeds (only
    seeds that have every dataset count).
    """
    by_seed: dict = defaultdict(dict)
    for row in rows:
        key = (backbone_label(row["backbone"]), row["shots"], row["adapter"])
        by_seed[key].setdefault(row["dataset"], {})[row["seed"]] = row[metric]
    summary = {}
    for key, datasets in by_seed.items():
        cells = {name: mean_std(list(seeds.values())) for name, seeds in sorted(datasets.items())}
        common = set.intersection(*(set(seeds) for seeds in datasets.values()))
        if len(datasets) > 1 and common:
            cells["Average"] = mean_std([np.mean([datasets[d][s] for d in datasets]) for s in sorted(common)])
        summary[key] = cells
    return summary


def mean_std(values: list[float]) -> tuple[float, float, int]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)


def markdown_tables(rows: Sequence[dict]) -> str:
    """One table per backbone and shot count: adapters × datasets (+ Average), ``mean ± std``, percent."""
    summary = summarize(rows)
    imagenet = any(str(row.get("dataset", "")).startswith("imagenet") for row in rows)
    blocks = ["Top-1 test accuracy (%), mean ± std over seeds; hyper-parameters tuned on validation data only" +
              (" (ImageNet: held-out training images, never the test set)." if imagenet else ".")]
    for backbone, shots in sorted({(b, k) for b, k, _ in summary}):
        adapters = [a for b, k, a in summary if (b, k) == (backbone, shots)]
        columns = sorted({d for a in adapters for d in summary[backbone, shots, a]} - {"Average"})
        if any("Average" in summary[backbone, shots, a] for a in adapters):
            columns.append("Average")
        lines = [f"\n### {backbone}, {shots} shot{'s' * (shots > 1)}\n",
                 "| adapter | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for adapter in adapters:
            cells = summary[backbone, shots, adapter]
            lines.append(f"| {adapter} | " + " | ".join(
                f"{100 * cells[c][0]:.2f} ± {100 * cells[c][1]:.2f}" if c in cells else "–" for c in columns) + " |")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def csv_table(rows: Sequence[dict]) -> str:
    """Long format, fractions: backbone, shots, adapter, dataset (or Average), then mean and std of
    each metric, and the number of seeds."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["backbone", "shots", "adapter", "dataset", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")),
                     "seeds"])
    summaries = {metric: summarize(rows, metric) for metric in METRICS}
    for (backbone, shots, adapter), cells in sorted(summaries["acc1"].items()):
        for dataset, (_, _, n) in cells.items():
            values = []
            for metric in METRICS:
                mean, std, _ = summaries[metric][backbone, shots, adapter][dataset]
                values += [f"{mean:.6f}", f"{std:.6f}"]
            writer.writerow([backbone, shots, adapter, dataset, *values, n])
    return buffer.getvalue()


def summary_table(rows: Sequence[dict], metric: str = "acc1") -> str:
    """Markdown table in percent: one row per adapter, one column per shot count, cells
    ``mean ± std`` over seeds (sample standard deviation, ddof=1; 0 for a single seed)."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in rows:
        cells[row["adapter"], row["shots"]].append(row[metric])
    adapters = list(dict.fromkeys(row["adapter"] for row in rows))
    shots = sorted({row["shots"] for row in rows})
    lines = ["| adapter | " + " | ".join(f"{k} shot{'s' * (k > 1)}" for k in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for name in adapters:
        formatted = []
        for k in shots:
            values = cells.get((name, k))
            if not values:
                formatted.append("–")
                continue
            mean, std, _ = mean_std(values)
            formatted.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
        lines.append(f"| {name} | " + " | ".join(formatted) + " |")
    return "\n".join(lines)


def reference_table(rows: Sequence[dict]) -> str:
    """Published RN50 11-dataset averages next to the measured averages over the datasets in ``rows``
    (percent)."""
    measured: dict = defaultdict(list)
    for (backbone, shots, adapter), cells in summarize(rows).items():
        measured[adapter, shots].append((backbone, cells.get("Average", next(iter(cells.values())))[0]))
    shots = sorted({k for table in PUBLISHED_RN50.values() for k in table} | {row["shots"] for row in rows})
    lines = ["Published: RN50 (OpenAI), average over the 11 CoOp datasets, top-1 %. Measured: this run's datasets "
             "and backbones (mean over seeds).", "",
             "| adapter | source | " + " | ".join(f"{k}" for k in shots) + " |", "|---|---|" + "---|" * len(shots)]
    for adapter in dict.fromkeys(list(PUBLISHED_RN50) + [row["adapter"] for row in rows]):
        published = PUBLISHED_RN50.get(adapter, {})
        if published:
            lines.append(f"| {adapter} | published | " + " | ".join(
                f"{published[k]:.2f}" if k in published else "–" for k in shots) + " |")
        for backbone in sorted({b for (a, _), entries in measured.items() if a == adapter for b, _ in entries}):
            values = {k: v for (a, k), entries in measured.items() if a == adapter for b, v in entries if b == backbone}
            lines.append(f"| {adapter} | {backbone} | " + " | ".join(
                f"{100 * values[k]:.2f}" if k in values else "–" for k in shots) + " |")
    return "\n".join(lines)
