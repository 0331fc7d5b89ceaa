"""Diagnostics of a feature set against its text classifier.

- modality gap: ‖mean of the image features − mean of the text weights‖ (both L2-normalised);
- text margin: mean over classes of 1 − max_{c'≠c} cos(t_c, t_c'), how far each class's text
  embedding is from its nearest rival (small margins predict zero-shot confusions);
- class-mean/text alignment: mean over classes of cos(μ_c, t_c), μ_c the mean image feature of
  class c (low alignment means the image clusters sit away from their prompts, where few-shot
  adapters gain most);
- per-class zero-shot accuracy (recall), mean per-class recall, and the most frequent confusion
  pairs (scikit-learn's ``confusion_matrix``).
These follow the quantities discussed by Chen et al. (ICLR 2024); the exact definitions are the
ones above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from ._validation import check_features, check_label_range, check_labels


def diagnose(features, labels, text_weights, classnames: Sequence[str] | None = None, top: int = 5) -> dict:
    """All diagnostics for (N, D) features with labels (N,) and (C, D) text weights, as a JSON-able dict."""
    X = F.normalize(check_features(features, "features"), dim=-1)
    T = F.normalize(check_features(text_weights, "text_weights", n_features=X.shape[1],
                                   estimator="the features"), dim=-1)
    y = check_labels(labels, X.shape[0], "labels")
    n_classes = T.shape[0]
    check_label_range(y, n_classes, "labels")
    names = list(classnames) if classnames is not None else [str(c) for c in range(n_classes)]
    similarity = T @ T.T
    similarity.fill_diagonal_(-torch.inf)
    counts = torch.bincount(y, minlength=n_classes)
    means = torch.zeros_like(T).index_add_(0, y, X)
    present = counts > 0
    alignment = F.cosine_similarity(means[present], T[present], dim=1)
    predicted = (X @ T.T).argmax(dim=1).numpy()
    truth = y.numpy()
    confusion = confusion_matrix(truth, predicted, labels=np.arange(n_classes))
    support = confusion.sum(axis=1)
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    flat = off_diagonal.ravel()
    pairs = np.argsort(-flat, kind="stable")[:top]
    return {
        "modality_gap": float((X.mean(dim=0) - T.mean(dim=0)).norm()),
        "text_margin": float((1.0 - similarity.max(dim=1).values).mean()),
        "class_text_alignment": float(alignment.mean()),
        "zero_shot_accuracy": float((predicted == truth).mean()),
        "zero_shot_mean_per_class_recall": float(balanced_accuracy_score(truth, predicted)),
        "per_class_zero_shot_accuracy": {names[c]: None if np.isnan(v) else float(v)
                                         for c, v in enumerate(per_class.tolist())},
        "confusions": [{"true": names[int(p) // n_classes], "predicted": names[int(p) % n_classes],
                        "count": int(flat[p])} for p in pairs if flat[p] > 0],
    }


def diagnostics_markdown(reports: dict[str, dict]) -> str:
    """A section with one row per "dataset / backbone" and its worst classes and confusions."""
    lines = ["\n## Diagnostics (test features vs. zero-shot text weights)\n",
             "| dataset / backbone | zero-shot acc. | modality gap | text margin | class-mean/text alignment |",
             "|---|---|---|---|---|"]
    for name, r in reports.items():
        lines.append(f"| {name} | {100 * r['zero_shot_accuracy']:.2f} | {r['modality_gap']:.3f} | "
                     f"{r['text_margin']:.3f} | {r['class_text_alignment']:.3f} |")
    for name, r in reports.items():
        measured = {k: v for k, v in r["per_class_zero_shot_accuracy"].items() if v is not None}
        worst = sorted(measured.items(), key=lambda kv: (kv[1], kv[0]))
        confusions = ", ".join(f"{c['true']} → {c['predicted']} ({c['count']})" for c in r["confusions"]) or "none"
        lines.append(f"\n**{name}**: weakest zero-shot classes: "
                     + ", ".join(f"{k} ({100 * v:.0f}%)" for k, v in worst[:3]) + f"; top confusions: {confusions}.")
    return "\n".join(lines) + "\n"
