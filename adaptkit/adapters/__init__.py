"""Closed-form adapters with one scikit-learn API (see :class:`Adapter`)."""

from .ape import APE
from .base import LOGIT_SCALE, Adapter
from .caption_cache import CaptionCache
from .gda import GDA, TransductiveGDA, synthesize_new_classes
from .linear_probe import LinearProbe
from .proker import ProKeR
from .tip_adapter import TipAdapter, tip_grid
from .tip_x import TipX
from .zero_shot import ZeroShot

ADAPTERS: dict[str, type[Adapter]] = {
    "zero_shot": ZeroShot,
    "linear_probe": LinearProbe,
    "gda": GDA,
    "tip_adapter": TipAdapter,
    "tip_x": TipX,
    "ape": APE,
    "proker": ProKeR,
    "caption_cache": CaptionCache,
    "gda_transductive": TransductiveGDA,
}
"""The family by the names recipes, ``compare`` and :func:`adaptkit.leaderboard` use."""


def make_adapter(name: str, **params) -> Adapter:
    """An adapter by its registry name (:data:`ADAPTERS`), with constructor ``params``."""
    if name not in ADAPTERS:
        raise ValueError(f"adapter must be one of {sorted(ADAPTERS)}; got {name!r}")
    return ADAPTERS[name](**params)


__all__ = ["ADAPTERS", "APE", "Adapter", "CaptionCache", "GDA", "LinearProbe", "ProKeR", "TipAdapter", "TipX",
           "TransductiveGDA", "ZeroShot", "LOGIT_SCALE", "make_adapter", "synthesize_new_classes", "tip_grid"]
