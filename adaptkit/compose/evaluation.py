"""Benchmarks for compositional matching: Winoground-style 2×2 items and pairwise accuracy.

CSV formats (header row required):

- pairwise (ComVG / SVO style): ``image,positive,negative`` — an image, its caption, a caption that
  swaps or changes a part; correct when the positive scores higher;
- Winoground style: ``image_0,image_1,caption_0,caption_1`` — caption k describes image k.

Every row counts: a row whose image cannot be read is a failure, scored as wrong and reported
(the official scripts skip failing examples, which changes the denominator).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..storage import expand_path, read_text


def winoground_scores(scores: np.ndarray) -> dict[str, float]:
    """Text, image and group scores for (M, 2, 2) scores indexed [item, caption, image].

    text: both images prefer their own caption; image: both captions prefer their own image;
    group: both hold.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 3 or s.shape[1:] != (2, 2):
        raise ValueError(f"scores must have shape (M, 2, 2) [item, caption, image]; got {s.shape}")
    text = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    image = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    return {"text": float(text.mean()), "image": float(image.mean()), "group": float((text & image).mean())}


def pairwise_accuracy(positive: np.ndarray, negative: np.ndarray) -> float:
    """Share of rows whose positive caption scores strictly higher."""
    return float((np.asarray(positive) > np.asarray(negative)).mean())


def _resolve(path: str, root: Path) -> str:
    return str(path if os.path.isabs(path) else root / path)


FORMATS = {"pairwise": (["image"], ["positive", "negative"]),
           "winoground": (["image_0", "image_1"], ["caption_0", "caption_1"])}


def read_benchmark(path: str | os.PathLike) -> tuple[str, list[dict]]:
    """(format, rows) of a benchmark CSV, checked: UTF-8, a known header, at least one row, no empty
    cell. Cheap, so callers check it before building a backbone."""
    path = expand_path(path)
    rows = list(csv.DictReader(io.StringIO(read_text(path, "benchmark CSV"), newline="")))
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    header = set(rows[0])
    kind = next((k for k, (images, captions) in FORMATS.items() if set(images + captions) <= header), None)
    if kind is None:
        raise ValueError(f"{path}: header must be image,positive,negative or image_0,image_1,caption_0,caption_1; "
                         f"got {','.join(sorted(h for h in header if h))}")
    for number, row in enumerate(rows, 2):
        empty = [key for key in sum(FORMATS[kind], []) if not (row.get(key) or "").strip()]
        if empty:
            raise ValueError(f"{path}: line {number} has no {', '.join(empty)}")
    return kind, rows


def evaluate_csv(path: str | os.PathLike, comclip, root: str | os.PathLike | None = None) -> dict:
    """CLIP and ComCLIP on a benchmark CSV (format detected from its header).

    Returns ``{"format", "rows", "failures": [(row, reason)], "clip": metrics, "comclip": metrics}``.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    kind, rows = read_benchmark(path)
    image_keys, caption_keys = FORMATS[kind]
    shape = (len(rows), len(caption_keys), len(image_keys))
    clip, composed = np.full(shape, np.nan), np.full(shape, np.nan)
    failures = []
    for r, row in enumerate(rows):
        images = [_resolve(row[k], root) for k in image_keys]
        captions = [row[k] for k in caption_keys]
        try:
            clip[r] = comclip.clip_score(images, captions).T
            composed[r] = comclip.score(images, captions).T
        except (OSError, ValueError) as err:
            failures.append((r, str(err)))
    results = {"format": kind, "rows": len(rows), "failures": failures}
    for name, scores in (("clip", clip), ("comclip", composed)):
        filled = np.nan_to_num(scores, nan=0.0)
        if kind == "pairwise":
            ok = filled[:, 0, 0] > filled[:, 1, 0]
            results[name] = {"accuracy": float(ok.mean())}
        else:
            results[name] = winoground_scores(filled)
    return results
