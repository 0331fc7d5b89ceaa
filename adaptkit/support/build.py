"""Retrieval-built support sets (SuS-X style): K images per class from an unlabeled feature pool.

Each class is queried with a text embedding (its prompt, optionally followed by a caption or
description: ``"a photo of a {class}. {caption}"``); the ``shots`` most similar pool images become
that class's support set. With ``exclusive=True`` a pool image goes to at most one class, the one it
matches best. The result is a :class:`adaptkit.FeatureSet` whose metadata records the provenance
(pool identity, query strings, shots, options) and the chosen pool positions and paths, so the set
can be rebuilt and audited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .._params import POSITIVE_INT, check_params
from .._validation import check_features
from .._version import __version__
from ..features import FeatureSet
from ..index import SupportIndex
from ..text import prompts


def class_queries(classnames: Sequence[str], template: str = "a photo of a {}.",
                  captions: Mapping[str, str] | Sequence[str] | None = None) -> list[str]:
    """One query string per class: the template filled as prompts are (``{}`` or ``{c}``), followed
    by the class's caption if given."""
    if not isinstance(template, str):
        raise TypeError(f"template must be a string such as 'a photo of a {{}}.'; got {type(template).__name__}")
    queries = [group[0] for group in prompts(classnames, [template])]
    if captions is None:
        return queries
    if isinstance(captions, Mapping):
        captions = [captions.get(name, "") for name in classnames]
    if len(captions) != len(classnames):
        raise ValueError(f"captions must give one caption per class ({len(classnames)}); got {len(captions)}")
    return [f"{query} {caption}".strip() for query, caption in zip(queries, captions)]


def _pool_index(pool) -> tuple[SupportIndex, dict]:
    if isinstance(pool, SupportIndex):
        return pool, {"kind": "index", "keys": len(pool), **pool.metadata}
    if isinstance(pool, FeatureSet):
        features = pool.features if pool.features.ndim == 2 else pool.mean_views().features
        index = SupportIndex(features.shape[1], "flat", device="cpu").add(
            features, ids=_pool_positions(pool), paths=pool.metadata.get("paths"))
        return index, {"kind": "features", "keys": len(pool), "name": pool.metadata.get("name"),
                       "key": pool.metadata.get("key")}
    raise TypeError(f"pool must be a FeatureSet or SupportIndex; got {type(pool).__name__}")


def _pool_positions(pool: FeatureSet) -> np.ndarray:
    """The pool position of each row: rows skip the images left out while encoding."""
    skipped = [entry["position"] for entry in pool.metadata.get("skipped", [])]
    return np.setdiff1d(np.arange(len(pool) + len(skipped)), skipped)


def build_support_set(pool, query_weights, shots: int, *, classnames: Sequence[str], queries: Sequence[str] | None = None,
                      exclusive: bool = True, oversample: int = 4) -> FeatureSet:
    """Pick ``shots`` pool images per class by similarity to the class's query embedding.

    Parameters
    ----------
    pool : a :class:`FeatureSet` (unlabeled images) or a :class:`SupportIndex`.
    query_weights : (C, D) query embeddings, e.g. ``backbone.encode_texts(class_queries(names))``.
    shots : images per class.
    classnames : the C class names.
    queries : the query strings (recorded in the provenance).
    exclusive : give each pool image to at most one class: pairs are assigned greedily by
        decreasing similarity while the class has room.
    oversample : candidates searched first per class = ``shots × oversample``; the search widens
        (×4 each time, up to the whole pool) until every class is full.

    Returns a FeatureSet of (C·shots, D) features with labels, whose metadata holds the provenance
    and ``pool_positions`` (positions in the pool, counting images skipped while encoding; and
    ``paths`` when the pool has them). Raises ``ValueError`` when a class
    cannot get ``shots`` distinct images (a pool smaller than ``shots × classes`` when exclusive).
    """
    index, pool_identity = _pool_index(pool)
    Q = check_features(query_weights, "query_weights", n_features=index.dim, estimator="the pool")
    n_classes = Q.shape[0]
    if len(classnames) != n_classes:
        raise ValueError(f"classnames has {len(classnames)} names but query_weights has {n_classes} rows")
    check_params("build_support_set", {"shots": [POSITIVE_INT]}, {"shots": shots})
    if len(index) < shots or (exclusive and len(index) < shots * n_classes):
        raise ValueError(f"the pool holds {len(index)} images, fewer than the {shots} per class "
                         f"{'× ' + str(n_classes) + ' classes ' if exclusive else ''}asked for")
    width = min(len(index), shots * max(1, oversample) if exclusive else shots)
    while True:
        similarities, positions = (t.cpu().numpy() for t in index.search(Q, width))
        picks = _assign(similarities, positions, shots) if exclusive else [np.arange(shots)] * n_classes
        if all(len(p) == shots for p in picks) or width == len(index):
            break
        width = min(len(index), width * 4)
    chosen = [positions[c, p] for c, p in enumerate(picks)]
    scores = [similarities[c, p] for c, p in enumerate(picks)]
    chosen, scores = np.concatenate(chosen), np.concatenate(scores)
    features = _pool_features(pool, index, chosen)
    labels = torch.arange(n_classes).repeat_interleave(shots)
    query_hash = hashlib.sha256(Q.cpu().numpy().tobytes()).hexdigest()
    metadata = {
        "name": f"retrieved/{shots}shot",
        "provenance": {"pool": pool_identity, "queries": list(queries) if queries else None,
                       "query_weights_sha256": query_hash, "shots": shots, "exclusive": exclusive,
                       "oversample": oversample, "adaptkit": __version__},
        "pool_positions": np.asarray(index.ids)[chosen].tolist(),
        "similarities": scores.tolist(),
    }
    if index.paths:
        metadata["paths"] = [index.paths[p] for p in chosen]
    return FeatureSet(features, labels, list(classnames), metadata)


def _assign(similarities: np.ndarray, positions: np.ndarray, shots: int) -> list[np.ndarray]:
    """Greedy exclusive assignment: candidate pairs (class, pool image) in order of decreasing
    similarity; a pair is kept while its class has room and its image is still free.
    Returns, per class, the kept candidate columns (best first)."""
    n_classes, width = positions.shape
    taken, picks = set(), [[] for _ in range(n_classes)]
    for flat in np.argsort(-similarities, axis=None, kind="stable"):
        c, j = divmod(int(flat), width)
        if len(picks[c]) < shots and positions[c, j] not in taken:
            picks[c].append(j)
            taken.add(positions[c, j])
    return [np.asarray(p, dtype=np.int64) for p in picks]


def _pool_features(pool, index: SupportIndex, positions: np.ndarray) -> torch.Tensor:
    if isinstance(pool, FeatureSet):
        return pool.features[torch.from_numpy(positions)]
    return index.reconstruct(positions)
