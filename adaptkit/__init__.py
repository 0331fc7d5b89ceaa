"""adaptkit: training-free adaptation of frozen CLIP models.

A frozen open_clip :class:`Backbone` encodes images once (:func:`extract`, cached on disk); small
closed-form adapters (:mod:`adaptkit.adapters`) are fitted on the features in milliseconds and
their hyper-parameters are chosen on validation data only (:func:`tune`); :func:`leaderboard`
ranks the whole family. ``ak.support`` (faiss support sets), ``ak.tta`` (test-time adaptation)
and ``ak.compose`` (compositional matching) are imported on first use.
"""

import importlib

from . import progress  # noqa: F401  (first: imports tqdm.auto without its notebook warning)

from . import adapters
from . import data as datasets
from ._version import __version__
from .adapters import APE, GDA, CaptionCache, LinearProbe, ProKeR, TipAdapter, TipX, TransductiveGDA, ZeroShot
from .adapters import load_adapter, save_adapter
from .backbones import TINY, Backbone, list_backbones
from .features import FeatureSet, extract, load_features, save_features
from .leaderboard import Leaderboard, leaderboard
from .loading import load
from .predictor import Predictor
from .tuning import tune

_LAZY = {"support", "tta", "compose", "protocol", "plots", "recipes"}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'adaptkit' has no attribute {name!r}")


__all__ = ["APE", "Backbone", "CaptionCache", "FeatureSet", "GDA", "Leaderboard", "LinearProbe", "Predictor",
           "ProKeR", "TINY", "TipAdapter", "TipX", "TransductiveGDA", "ZeroShot", "__version__", "adapters",
           "compose", "datasets", "extract", "leaderboard", "list_backbones", "load", "load_adapter", "load_features",
           "save_adapter", "save_features", "support", "tta", "tune"]
