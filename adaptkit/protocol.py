"""The few-shot protocol runner: a recipe in; results.jsonl, tables, figures and diagnostics out.

For each seed and shot count K: support = K images per class from train (``views`` augmented
views each), validation = min(K, 4) per class from val, test = the whole test split. Every adapter
is fitted on the support set and tuned on validation only (:func:`adaptkit.leaderboard`), then
scored once on test. The transductive GDA fits on the unlabeled test features, as the method
prescribes; labels of test images are only ever used for scoring.

:func:`compare` runs a recipe over datasets × backbones. It holds a lock on its output folder (a
second run on the same folder waits, then finds every row done), appends one validated row to
``results.jsonl`` the moment it exists (an interrupted run resumes where it stopped) and never
rewrites that file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ._version import __version__
from .adapters import ADAPTERS
from .backbones import Backbone
from .data.base import Dataset, DatasetFilesMissing
from .diagnostics import diagnose, diagnostics_markdown
from .features import extract
from .leaderboard import leaderboard
from .plots import save_figures
from .progress import progress_bar
from .report import build_report
from .results import (
    RESULTS_FORMAT_VERSION,
    append_row,
    backbone_label,
    classification_metrics,
    csv_table,
    markdown_tables,
    per_class_accuracy,
    read_results,
    report_problems,
    row_key,
)
from .storage import file_lock, json_sha256, write_text
from .text import prompts_sha256

logger = logging.getLogger("adaptkit")

CAPTION_TEMPLATE = "a photo of a {}."
"""Stand-in caption of each support image for ``caption_cache`` when no captioner output is
given: the class-name prompt (support labels are known, so this uses no test information)."""

ONLY_FIELDS = ("dataset", "adapter", "shots", "seed")
PROTOCOL_INPUTS = ("captions", "unlabeled", "backbone")
"""The extra fit inputs the protocol supplies: a class-name caption per support image, the
unlabeled test features, and the backbone. An adapter that requires another is skipped, with a warning."""


def run_protocol(backbone: Backbone, dataset: Dataset, adapters: Sequence[str], shots: Sequence[int],
                 seeds: Sequence[int], *, views: int = 10, grids: dict | None = None, params: dict | None = None,
                 cache_dir=None, batch_size: int = 256, num_workers: int | str = "auto", on_error: str = "raise",
                 skip: Callable[[str, int, int], bool] = lambda *_: False,
                 on_row: Callable[[dict], None] = lambda row: None, progress: bool = True) -> tuple[list[dict], dict]:
    """Run the protocol on one dataset and backbone: (rows, diagnostics). One row per adapter ×
    shots × seed, metrics as fractions. ``params`` fixes constructor values per adapter name (a
    row's ``params`` holds them with the chosen grid point). ``skip(adapter, shots, seed)`` leaves
    finished rows out; ``on_row`` receives each row as soon as it is computed."""
    for name in adapters:
        if name not in ADAPTERS:
            raise ValueError(f"adapter must be one of {sorted(ADAPTERS)}; got {name!r}")
    grids, params = grids or {}, params or {}
    options = {"cache_dir": cache_dir, "progress": progress, "batch_size": batch_size, "num_workers": num_workers,
               "on_error": on_error}
    test = extract(backbone, dataset.split("test"), **options)
    text = backbone.text_classifier(dataset.classnames, dataset.templates)
    prompts = prompts_sha256(dataset.classnames, dataset.templates)
    report = diagnose(test.features, test.labels, text, dataset.classnames)
    rows = []
    combos = [(seed, k) for seed in seeds for k in shots if not all(skip(a, k, seed) for a in adapters)]
    for seed, k in progress_bar(combos, progress=progress, desc=f"{dataset.name} / {backbone.name}", unit="run",
                                leave=False):
        names = [a for a in adapters if not skip(a, k, seed)]
        support = extract(backbone, dataset.few_shot(k, seed), views=views, seed=seed, **options)
        val = extract(backbone, dataset.few_shot(min(k, 4), seed, split="val"), **options)
        captions = [CAPTION_TEMPLATE.format(dataset.classnames[label]) for label in support.labels.tolist()]
        board = leaderboard(support.features, support.labels, val.features, val.labels, text_weights=text,
                            adapters=[ADAPTERS[n](device=str(backbone.device), **params[n]) if n in params else n
                                      for n in names],
                            grids={n: grids[n] for n in names if n in grids}, captions=captions,
                            unlabeled=test.features, backbone=backbone, device=str(backbone.device), progress=False)
        for name, why in board.skipped.items():
            logger.warning("%s, %d shots, seed %d: %s skipped: %s", dataset.name, k, seed, name, why)
        for entry in sorted(board.rows, key=lambda e: names.index(e["adapter"])):
            adapter = board.adapters[entry["adapter"]]
            start = time.perf_counter()
            logits = adapter.logits(test.features)
            row = {"format_version": RESULTS_FORMAT_VERSION, "dataset": dataset.name, "backbone": backbone.identity,
                   "adapter": entry["adapter"], "shots": k, "seed": seed,
                   **classification_metrics(logits.cpu().numpy(), test.labels.numpy()),
                   "per_class_accuracy": per_class_accuracy(logits.cpu().numpy(), test.labels.numpy()),
                   "val_accuracy": entry["val_accuracy"], "params": {**params.get(entry["adapter"], {}), **entry["params"]},
                   "fit_seconds": entry["fit_seconds"] + entry["tune_seconds"],
                   "predict_seconds": time.perf_counter() - start, "views": views, "prompts_sha256": prompts,
                   "adaptkit": __version__, "config_hash": ""}
            rows.append(row)
            on_row(row)
    return rows, report


def evaluate_few_shot(backbone: Backbone, dataset: Dataset, adapters: Sequence[str], shots: Sequence[int],
                      seeds: Sequence[int], *, views: int = 10, cache_dir=None, num_workers: int | str = "auto",
                      on_error: str = "raise", progress: bool = True) -> list[dict]:
    """:func:`run_protocol` with default grids, returning every row."""
    return run_protocol(backbone, dataset, adapters, shots, seeds, views=views, cache_dir=cache_dir,
                        num_workers=num_workers, on_error=on_error, progress=progress)[0]


@dataclass
class Comparison:
    """What :func:`compare` did: the rows that pass ``only`` (old and new), how many were new, the
    rows in the results file, the lines it left out, and the files it wrote."""

    rows: list[dict]
    new_rows: int
    rows_in_file: int
    output: Path
    problems: list[tuple[int, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    filtered: bool = False
    writable: bool = True
    stale_rows: int = 0


def _check_only(recipe, only: dict[str, set[str]]) -> None:
    """Every ``only`` value must name something the recipe has."""
    existing = {"dataset": [d.label for d in recipe.datasets], "adapter": list(recipe.adapters),
                "shots": [str(k) for k in recipe.shots], "seed": [str(s) for s in recipe.seeds]}
    for name, values in only.items():
        if name not in existing:
            raise ValueError(f"only filters by {', '.join(ONLY_FIELDS)}; got {name!r}")
        unknown = sorted(set(values) - set(existing[name]))
        if unknown:
            raise ValueError(f"only: {name} {', '.join(unknown)} matches nothing in {recipe.source}; its {name} values "
                             f"are {', '.join(existing[name])}")


def check_split_sizes(dataset: Dataset, shots: Sequence[int]) -> None:
    """Refuse a dataset whose train split has fewer than max(shots) images of a class, or whose
    validation split fewer than the protocol's min(max(shots), 4), naming the split and classes."""
    largest = max(shots)
    for split, needed in (("train", largest), ("val", min(largest, 4))):
        n_short, listed = dataset.split(split).classes_short_of(needed)
        if n_short:
            why = f"shots up to {largest}" + (" (validation takes min(shots, 4) per class)" if split == "val" else "")
            raise ValueError(f"its {split} split has fewer than {needed} images in {n_short} class(es): {listed}"
                             f"; {why} needs {needed}: lower the recipe's shots, or give the dataset more "
                             "images" + (" (or a larger val_fraction for an image folder)" if split == "val" else ""))


def load_datasets(recipe, labels: set[str] | None = None) -> dict[str, Dataset]:
    """The recipe's datasets (those of ``labels`` when given), each checked before any backbone
    is built (files, prompts against class names, split sizes against the shots); the problems
    of all of them are reported together."""
    datasets, problems, missing = {}, [], []
    for spec in recipe.datasets:
        if labels is not None and spec.label not in labels:
            continue
        try:
            datasets[spec.label] = spec.load()
            check_split_sizes(datasets[spec.label], recipe.shots)
        except (ValueError, TypeError, FileNotFoundError) as err:
            text = str(err)
            problems.append(text if text.startswith(f"{spec.label}:") else f"{spec.label}: {text}")
            if isinstance(err, DatasetFilesMissing):
                missing.extend(err.missing)
    if problems:
        message = f"{len(problems)} dataset(s) of {recipe.source} cannot be loaded:\n  " + "\n  ".join(problems)
        raise DatasetFilesMissing(message, missing=missing) if missing and len(missing) == len(problems) else \
            ValueError(message)
    return datasets


def dataset_sha256(dataset: Dataset) -> str:
    """The identity of a dataset's data: every split's fingerprint (image identities, labels,
    class names), so that edited images or another ``split_seed`` change it."""
    return json_sha256({name: images.fingerprint() for name, images in sorted(dataset.splits.items())})


def compare(recipe, *, only: dict[str, set[str]] | None = None, output: str | None = None,
            progress: bool = True) -> Comparison:
    """Run a :class:`adaptkit.recipes.Recipe` (resuming from its ``results.jsonl``) and, unless
    filtered by ``only``, write the tables, figures and diagnostics next to it.

    ``only`` filters by field, e.g. ``{"adapter": {"gda", "tip_adapter"}, "shots": {"16"}}``; a
    value that matches nothing in the recipe is an error. A filtered run computes and returns its
    subset but never overwrites the full run's tables and figures.
    """
    only = {k: set(v) for k, v in (only or {}).items()}
    _check_only(recipe, only)
    datasets = load_datasets(recipe, only.get("dataset"))
    out = Path(output or recipe.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the compare output folder {out}: {err.strerror or err}") from err
    results = out / "results.jsonl"
    writable = os.access(out, os.W_OK)
    # A folder this process may not write is read as it is, without a lock: its tables print when
    # it holds every row asked for.
    with file_lock(out / ".compare.lock", f"the compare output folder {out}") if writable else nullcontext():
        existing, problems = read_results(results)
        report_problems(results, problems, set_aside=writable)
        done = {row_key(row) for row in existing}
        current = set()
        new = []
        if writable:
            write_text(out / "recipe.json", json.dumps(recipe.to_dict(), indent=1))
        reports = {}
        for spec in recipe.backbones:
            backbone = Backbone(spec.name, pretrained=spec.pretrained, device=recipe.device, precision=spec.precision)
            label = backbone_label(backbone.identity)
            for dataset_spec in recipe.datasets:
                if dataset_spec.label not in datasets:  # filtered out by --only dataset=
                    continue
                dataset = datasets[dataset_spec.label]
                prompts = prompts_sha256(dataset.classnames, dataset.templates)
                data = dataset_sha256(dataset)
                hashes = {a: recipe.config_hash(a, prompts, data) for a in recipe.adapters}
                current |= {(dataset.name, label, a, k, seed, hashes[a]) for a in recipe.adapters
                            for k in recipe.shots for seed in recipe.seeds}
                adapters = [a for a in recipe.adapters if "adapter" not in only or a in only["adapter"]]
                shots = [k for k in recipe.shots if "shots" not in only or str(k) in only["shots"]]
                seeds = [s for s in recipe.seeds if "seed" not in only or str(s) in only["seed"]]

                def finished(adapter, k, seed, _name=dataset.name, _label=label, _hashes=hashes):
                    return (_name, _label, adapter, k, seed, _hashes[adapter]) in done

                if not writable:
                    missing = sum(not finished(a, k, seed) for a in adapters for k in shots for seed in seeds)
                    if missing:
                        raise PermissionError(f"the compare output folder {out} cannot be written, and {missing} "
                                              f"row(s) of {dataset.name} / {backbone.name} are not in it; pass "
                                              "--output (output=) a writable folder")
                    continue

                def record(row, _hashes=hashes, _data=data):
                    row["config_hash"], row["data_sha256"] = _hashes[row["adapter"]], _data
                    append_row(results, row)
                    new.append(row)

                _, reports[f"{dataset.name} / {backbone.name}"] = run_protocol(
                    backbone, dataset, adapters, shots, seeds, views=recipe.views, grids=recipe.grids, params=recipe.params,
                    cache_dir=recipe.cache_dir, batch_size=recipe.batch_size, num_workers=recipe.workers,
                    on_error=recipe.on_error,
                    skip=finished, on_row=record, progress=progress)
        in_file, _ = read_results(results)  # its bad lines were reported (and moved aside) above
        # The tables describe the recipe as it is now: rows of earlier configurations or of data
        # that has changed since stay in results.jsonl, counted, never mixed into a cell.
        rows = [row for row in in_file if row_key(row) in current]
        stale = len(in_file) - len(rows)
        note = "" if not stale else (f"\n\n{stale} row(s) of {results.name} from another configuration of this recipe "
                                     "(views, grids, fixed parameters, prompts) or from data that has changed since "
                                     "are not in these tables.\n")
        selected = [row for row in rows if all(str(row.get(f)) in v for f, v in only.items())]
        written = []
        if not only and writable:
            write_text(out / "diagnostics.json", json.dumps(reports, indent=1))
            write_text(out / "table.md", markdown_tables(rows) + note + diagnostics_markdown(reports))
            write_text(out / "table.csv", csv_table(rows))
            written = [out / "diagnostics.json", out / "table.md", out / "table.csv", *save_figures(rows, out),
                       build_report(out)]
    return Comparison(selected, len(new), len(in_file), out, problems, written, bool(only), writable, stale)
