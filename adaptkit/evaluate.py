"""The few-shot protocol runner and its result tables.

For each seed and shot count K: support = K images per class from train (``views`` augmented
views each), validation = min(K, 4) per class from val, test = the whole test split. Every adapter
is fitted on the support set, tuned on validation only, and scored once on test.

:func:`compare` runs a recipe over datasets × backbones and appends one JSON line per result row
to ``results.jsonl`` as soon as it exists, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ._version import __version__
from .adapters import ADAPTERS, Adapter, CaptionCache, TransductiveGDA, make_adapter
from .backbones import Backbone
from .data.base import Dataset
from .diagnostics import diagnose, diagnostics_markdown
from .features import extract
from .storage import atomic_write
from .tuning import tune

CAPTION_TEMPLATE = "a photo of a {}."
"""Stand-in caption of each support image for ``caption_cache`` when no captioner output is
given: the class-name prompt (support labels are known, so this uses no test information)."""

PUBLISHED_RN50 = {
    "zero_shot": {1: 58.89},
    "tip_adapter": {1: 62.33, 2: 64.62, 4: 66.54, 8: 68.50, 16: 70.32},
    "tip_x": {1: 62.87, 2: 65.29, 4: 67.64, 8: 69.37, 16: 71.40},
    "ape": {1: 65.13, 2: 67.19, 4: 69.47, 8: 71.58, 16: 73.36},
    "gda": {1: 62.19, 2: 66.19, 4: 69.77, 8: 73.31, 16: 76.05},
    "proker": {1: 63.77},
}
"""Published top-1 accuracy (%), average over the 11 CoOp datasets, RN50 with OpenAI weights."""


def _fit(adapter: Adapter, backbone: Backbone, dataset: Dataset, support, test, text) -> Adapter:
    """Fit ``adapter`` as its method prescribes: on the support set, with captions for the caption
    cache, and on the unlabeled test features for the transductive GDA."""
    if isinstance(adapter, TransductiveGDA):
        return adapter.fit(test.features, text_weights=text)
    extra = {}
    if isinstance(adapter, CaptionCache):
        captions = [CAPTION_TEMPLATE.format(dataset.classnames[label]) for label in support.labels.tolist()]
        extra = {"captions": captions, "backbone": backbone}
    return adapter.fit(support.features, support.labels, text_weights=text, **extra)


def run_protocol(backbone: Backbone, dataset: Dataset, adapters: Sequence[str], shots: Sequence[int],
                 seeds: Sequence[int], *, views: int = 10, grids: dict | None = None, cache_dir=None,
                 batch_size: int = 256, skip: Callable[[str, int, int], bool] = lambda *_: False,
                 on_row: Callable[[dict], None] = lambda row: None, progress: bool = True) -> list[dict]:
    """Run the protocol on one dataset and backbone; one row (a dict) per adapter × shots × seed,
    accuracy in %. ``skip(adapter, shots, seed)`` leaves finished rows out; ``on_row`` receives
    each row as soon as it is computed."""
    for name in adapters:
        make_adapter(name)
    grids = grids or {}
    options = {"cache_dir": cache_dir, "progress": progress, "batch_size": batch_size}
    test = extract(backbone, dataset.split("test"), **options)
    text = backbone.text_classifier(dataset.classnames, dataset.templates)
    rows = []
    combos = [(seed, k) for seed in seeds for k in shots if not all(skip(a, k, seed) for a in adapters)]
    for seed, k in tqdm(combos, desc=f"{dataset.name} / {backbone.name}", unit="run", disable=not progress):
        support = extract(backbone, dataset.few_shot(k, seed), views=views, seed=seed, **options)
        val = extract(backbone, dataset.few_shot(min(k, 4), seed, split="val"), **options)
        for name in adapters:
            if skip(name, k, seed):
                continue
            start = time.perf_counter()
            adapter = tune(_fit(make_adapter(name), backbone, dataset, support, test, text),
                           val.features, val.labels, grids.get(name))
            fitted = time.perf_counter()
            accuracy = 100.0 * adapter.score(test.features, test.labels)
            row = {"dataset": dataset.name, "backbone": backbone.identity, "adapter": name, "shots": k,
                   "seed": seed, "accuracy": accuracy, "params": adapter.tuning_results_["best_params"],
                   "val_accuracy": 100.0 * adapter.tuning_results_["best_score"],
                   "fit_seconds": fitted - start, "predict_seconds": time.perf_counter() - fitted}
            rows.append(row)
            on_row(row)
    return rows


def evaluate_few_shot(backbone: Backbone, dataset: Dataset, adapters: Sequence[str], shots: Sequence[int],
                      seeds: Sequence[int], *, views: int = 10, cache_dir=None, progress: bool = True) -> list[dict]:
    """:func:`run_protocol` with default grids, returning every row."""
    return run_protocol(backbone, dataset, adapters, shots, seeds, views=views, cache_dir=cache_dir,
                        progress=progress)


def backbone_label(identity: dict) -> str:
    """``"ViT-B-16 (tag:openai)"`` from a backbone identity."""
    return f"{identity['model']} ({identity['weights']})"


def row_key(row: dict) -> tuple:
    return (row["dataset"], backbone_label(row["backbone"]), row["adapter"], row["shots"], row["seed"],
            row["config_hash"])


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a results.jsonl; a torn last line (an interrupted write) is dropped, duplicates are
    removed (the first row of a key wins)."""
    path = Path(path)
    if not path.exists():
        return []
    rows, seen = [], set()
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row_key(row) not in seen:
            seen.add(row_key(row))
            rows.append(row)
    return rows


def _matches(row: dict, only: dict[str, set[str]]) -> bool:
    return all(str(row.get(field)) in values for field, values in only.items())


def compare(recipe, *, only: dict[str, set[str]] | None = None, progress: bool = True) -> list[dict]:
    """Run a :class:`adaptkit.recipes.Recipe`, resuming from its ``results.jsonl``; write the
    tables and figures; return every row (old and new) that passes ``only``.

    ``only`` filters by field, e.g. ``{"adapter": {"gda", "tip_adapter"}, "shots": {"16"}}``.
    """
    from .data import load
    from .plots import save_figures

    only = only or {}
    out = Path(recipe.output)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    existing = read_results(results)
    atomic_write(results, lambda tmp: Path(tmp).write_text("".join(json.dumps(row) + "\n" for row in existing)))
    done = {row_key(row) for row in existing}
    (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1))

    def append(row: dict) -> None:
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    backbones = [Backbone(spec.name, pretrained=spec.pretrained, device=recipe.device) for spec in recipe.backbones]
    datasets = {spec.name: load(spec.name, root=spec.root) for spec in recipe.datasets}
    for backbone in backbones:
        label = backbone_label(backbone.identity)
        for dataset_spec in recipe.datasets:
            if "dataset" in only and dataset_spec.name not in only["dataset"]:
                continue
            adapters = [a for a in recipe.adapters if "adapter" not in only or a in only["adapter"]]
            shots = [k for k in recipe.shots if "shots" not in only or str(k) in only["shots"]]
            seeds = [s for s in recipe.seeds if "seed" not in only or str(s) in only["seed"]]
            if not (adapters and shots and seeds):
                continue
            dataset = datasets[dataset_spec.name]

            def finished(adapter, k, seed, _name=dataset.name):
                return (_name, label, adapter, k, seed, recipe.config_hash(adapter)) in done

            def record(row):
                row.update(config_hash=recipe.config_hash(row["adapter"]), adaptkit=__version__,
                           views=recipe.views)
                append(row)

            run_protocol(backbone, dataset, adapters, shots, seeds, views=recipe.views, grids=recipe.grids,
                         cache_dir=recipe.cache_dir, batch_size=recipe.batch_size, skip=finished, on_row=record,
                         progress=progress)
    rows = [row for row in read_results(results) if _matches(row, only)]
    reports = {}
    for backbone in backbones:
        for dataset in datasets.values():
            test = extract(backbone, dataset.split("test"), cache_dir=recipe.cache_dir, progress=False,
                           batch_size=recipe.batch_size)
            text = backbone.text_classifier(dataset.classnames, dataset.templates)
            reports[f"{dataset.name} / {backbone.name}"] = diagnose(test.features, test.labels, text, dataset.classnames)
    (out / "diagnostics.json").write_text(json.dumps(reports, indent=1))
    (out / "table.md").write_text(markdown_tables(rows) + diagnostics_markdown(reports))
    (out / "table.csv").write_text(csv_table(rows))
    save_figures(rows, out)
    return rows


def summarize(rows: Iterable[dict]) -> dict:
    """{(backbone, shots, adapter): {dataset or "Average": (mean, std, n_seeds)}}.

    Per dataset: mean and sample standard deviation (ddof=1; 0 for one seed) of the accuracy over
    seeds. "Average": for each seed, the mean over datasets; then mean ± std of those over seeds
    (only seeds that have every dataset count).
    """
    by_seed: dict = defaultdict(dict)
    for row in rows:
        key = (backbone_label(row["backbone"]), row["shots"], row["adapter"])
        by_seed[key].setdefault(row["dataset"], {})[row["seed"]] = row["accuracy"]
    summary = {}
    for key, datasets in by_seed.items():
        cells = {name: _mean_std(list(seeds.values())) for name, seeds in sorted(datasets.items())}
        common = set.intersection(*(set(seeds) for seeds in datasets.values()))
        if len(datasets) > 1 and common:
            cells["Average"] = _mean_std([np.mean([datasets[d][s] for d in datasets]) for s in sorted(common)])
        summary[key] = cells
    return summary


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)


def markdown_tables(rows: Sequence[dict]) -> str:
    """One table per backbone and shot count: adapters × datasets (+ Average), ``mean ± std``."""
    summary = summarize(rows)
    blocks = ["Top-1 test accuracy (%), mean ± std over seeds; hyper-parameters tuned on validation "
              "data only (ImageNet: held-out training images, never the test set)."]
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
                f"{cells[c][0]:.2f} ± {cells[c][1]:.2f}" if c in cells else "–" for c in columns) + " |")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def csv_table(rows: Sequence[dict]) -> str:
    """Long format: backbone, shots, adapter, dataset (or Average), mean, std, seeds."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["backbone", "shots", "adapter", "dataset", "mean", "std", "seeds"])
    for (backbone, shots, adapter), cells in sorted(summarize(rows).items()):
        for dataset, (mean, std, n) in cells.items():
            writer.writerow([backbone, shots, adapter, dataset, f"{mean:.4f}", f"{std:.4f}", n])
    return buffer.getvalue()


def summary_table(rows: Sequence[dict], value: str = "accuracy") -> str:
    """Markdown table: one row per adapter, one column per shot count, cells ``mean ± std`` over
    seeds (sample standard deviation, ddof=1; 0 for a single seed)."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in rows:
        cells[row["adapter"], row["shots"]].append(row[value])
    adapters = list(dict.fromkeys(row["adapter"] for row in rows))
    shots = sorted({row["shots"] for row in rows})
    lines = ["| adapter | " + " | ".join(f"{k} shot{'s' * (k > 1)}" for k in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for name in adapters:
        formatted = []
        for k in shots:
            mean, std, _ = _mean_std(cells.get((name, k), [np.nan]))
            formatted.append(f"{mean:.2f} ± {std:.2f}")
        lines.append(f"| {name} | " + " | ".join(formatted) + " |")
    return "\n".join(lines)


def reference_table(rows: Sequence[dict]) -> str:
    """Published RN50 11-dataset averages next to the measured averages over the datasets in ``rows``."""
    measured: dict = defaultdict(list)
    for (backbone, shots, adapter), cells in summarize(rows).items():
        measured[adapter, shots].append((backbone, cells.get("Average", next(iter(cells.values())))[0]))
    shots = sorted({k for table in PUBLISHED_RN50.values() for k in table} | {row["shots"] for row in rows})
    lines = ["Published: RN50 (OpenAI), average over the 11 CoOp datasets. Measured: this run's datasets "
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
                f"{values[k]:.2f}" if k in values else "–" for k in shots) + " |")
    return "\n".join(lines)
