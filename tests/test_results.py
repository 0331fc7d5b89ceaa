"""Result rows and tables: metrics from scikit-learn, seed-wise averages, bad lines reported by number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adaptkit.protocol import compare
from adaptkit.results import (
    classification_metrics,
    csv_table,
    markdown_tables,
    reference_table,
    summarize,
)
from helpers import small_recipe


@pytest.mark.parametrize("line,problem", [
    ("42", "not a JSON object"), ("{}", "results format 1"), ('{"format_version": 2, "acc1": "n/a"}', "is missing"),
    (b"\xff\xfe not utf-8", "not UTF-8 text"), ('{"accuracy": 93.0, "adaptkit": "0.1.0"}', "results format 1"),
])
def test_bad_result_lines_are_reported_by_number_and_moved_aside_once(tmp_path, line, problem):
    recipe = small_recipe(tmp_path, shots=[1], seeds=[1], adapters=["zero_shot"], grids={})
    compare(recipe, progress=False)
    path = Path(recipe.output) / "results.jsonl"
    good = path.read_bytes()
    raw = line if isinstance(line, bytes) else line.encode()
    path.write_bytes(good + raw + b"\n")
    result = compare(recipe, progress=False)
    assert result.problems and result.problems[0][0] == 2 and problem in result.problems[0][1]
    assert path.read_bytes() == good and len(result.rows) == 1
    (moved,) = [json.loads(text) for text in (path.parent / "results.rejected.jsonl").read_text().splitlines()]
    assert moved["line"] == 2 and problem in moved["problem"]
    assert moved["text"] == raw.decode("utf-8", "backslashreplace")
    assert compare(recipe, progress=False).problems == []


def test_average_column_is_the_seedwise_mean_over_datasets():
    rows = []
    for dataset, base in (("a", 0.50), ("b", 0.70)):
        for seed, delta in ((1, 0.0), (2, 0.04), (3, 0.08)):
            rows.append({"dataset": dataset, "backbone": {"model": "m", "weights": "w"}, "adapter": "gda",
                         "shots": 4, "seed": seed, "acc1": base + delta * (1 if dataset == "a" else -1),
                         "acc5": 1.0, "mean_per_class_recall": 0.5})
    cells = summarize(rows)["m (w)", 4, "gda"]
    seedwise = [np.mean([0.50 + d, 0.70 - d]) for d in (0.0, 0.04, 0.08)]
    assert cells["Average"] == pytest.approx((np.mean(seedwise), np.std(seedwise, ddof=1), 3))
    assert cells["a"] == pytest.approx((0.54, 0.04, 3))
    assert "| gda | 54.00 ± 4.00 | 66.00 ± 4.00 | 60.00 ± 0.00 |" in markdown_tables(rows)
    assert "m (w),4,gda,Average,0.600000,0.000000,1.000000,0.000000,0.500000,0.000000,3" in csv_table(rows)
    reference = reference_table(rows).splitlines()
    assert "| gda | published | 62.19 | 66.19 | 69.77 | 73.31 | 76.05 |" in reference
    assert "| gda | m (w) | – | – | 60.00 | – | – |" in reference


def test_metrics_are_scikit_learns():
    from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 8)), rng.integers(0, 8, 50)
    metrics = classification_metrics(logits, labels)
    assert metrics["acc1"] == pytest.approx((logits.argmax(1) == labels).mean())
    assert metrics["acc5"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=np.arange(8)))
    assert metrics["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)))
    assert classification_metrics(logits[:, :4], labels % 4)["acc5"] == 1.0

