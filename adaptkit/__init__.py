"""adaptkit: training-free adaptation of frozen CLIP models.

A frozen open_clip :class:`Backbone` encodes images once (:func:`extract`, cached on disk); small
closed-form adapters (:mod:`adaptkit.adapters`) are fitted on the features in milliseconds and
their hyper-parameters are chosen on validation data only (:func:`tune`).
"""

from . import adapters
from . import data as datasets
from ._version import __version__
from .adapters import APE, GDA, CaptionCache, LinearProbe, ProKeR, TipAdapter, TipX, TransductiveGDA, ZeroShot
from .backbones import TINY, Backbone, list_backbones
from .features import FeatureSet, extract, load_features, save_features
from .ranking import Leaderboard, leaderboard
from .persistence import load_adapter, save_adapter
from .predictor import Predictor
from .tuning import tune

__all__ = ["APE", "Backbone", "CaptionCache", "FeatureSet", "GDA", "LinearProbe", "Predictor", "ProKeR", "TINY",
           "TipAdapter", "TipX", "TransductiveGDA", "ZeroShot", "__version__", "adapters", "datasets", "extract",
           "Leaderboard", "leaderboard", "list_backbones", "load_adapter", "load_features", "save_adapter", "save_features", "tune"]
