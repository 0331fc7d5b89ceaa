"""Closed-form adapters with one scikit-learn API (see :class:`Adapter`); each registers itself
in :data:`ADAPTERS` under its ``name`` when its class is defined."""
# Imported in the family's order: registration order is the leaderboard's default order and the
# tables' row order (isort is off for this file in pyproject.toml).

from .._clip import LOGIT_SCALE
from .base import Adapter
from .cache import CacheAdapter
from .file import load_adapter, save_adapter
from .registry import ADAPTERS, FitInput, adapter_class, make_adapter
from .zero_shot import ZeroShot
from .linear_probe import LinearProbe
from .gda import GDA, synthesize_new_classes
from .tip_adapter import TipAdapter, tip_grid
from .tip_x import TipX
from .ape import APE
from .proker import ProKeR
from .caption_cache import CaptionCache
from .gda_transductive import TransductiveGDA

__all__ = ["ADAPTERS", "APE", "Adapter", "CacheAdapter", "CaptionCache", "FitInput", "GDA", "LOGIT_SCALE",
           "LinearProbe", "ProKeR", "TipAdapter", "TipX", "TransductiveGDA", "ZeroShot", "adapter_class",
           "load_adapter", "make_adapter", "save_adapter", "synthesize_new_classes", "tip_grid"]
