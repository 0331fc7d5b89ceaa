"""One loader for everything adaptkit saves."""

from __future__ import annotations

import os

from . import tta
from .adapters import load_adapter
from .features import load_features
from .index import SupportIndex
from .storage import expand_path, peek_format


def load(path: str | os.PathLike, **options):
    """Read what adaptkit saved at ``path``, by the format its header declares: an adapter
    (:func:`load_adapter`), a :class:`FeatureSet` (:func:`load_features`), a
    :class:`~adaptkit.support.SupportIndex`, or a :class:`~adaptkit.tta.TDA` / :class:`~adaptkit.tta.TCA`
    with its state. ``options`` go to that loader (e.g. ``device=``; ``backbone=`` for TCA).
    Every file is verified as its own loader verifies it."""
    path = expand_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    kind = peek_format(path)
    if kind == "adaptkit-adapter":
        return load_adapter(path, **options)
    if kind == "adaptkit-features" or (kind is None and path.with_name(path.name + ".json").is_file()):
        return load_features(path, **options)
    if kind == "adaptkit-support-index":
        return SupportIndex.load(path, **options)
    if kind in ("adaptkit-tda-state", "adaptkit-tca-state"):
        return (tta.TDA if kind == "adaptkit-tda-state" else tta.TCA).from_file(path, **options)
    raise ValueError(f"{path} is not a file adaptkit saved" + (f" (it declares format {kind!r})" if kind else
                                                                "; it has no adaptkit header"))
