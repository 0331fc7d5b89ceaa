"""adaptkit: training-free adaptation of frozen CLIP models.

A frozen open_clip :class:`Backbone` encodes images once (:func:`extract`, cached on disk); small
closed-form adapters (:mod:`adaptkit.adapters`) are fitted on the features in milliseconds and
their hyper-parameters are chosen on validation data only (:func:`tune`); :func:`leaderboard`
ranks the whole family. Every name below is imported on first use, so ``import adaptkit`` (and
the ``adaptkit`` command's start) costs no torch import until something needs it.
"""

from . import progress  # noqa: F401  (first: imports tqdm.auto without its notebook warning)
from ._lazy import install
from ._version import __version__

_PUBLIC = {
    "adapters": ("adapters", None), "datasets": ("datasets", None), "support": ("support", None), "tta": ("tta", None),
    "compose": ("compose", None), "protocol": ("protocol", None), "plots": ("plots", None),
    "recipes": ("recipes", None), "serve": ("serve", None), "report": ("report", None),
    "APE": ("adapters", "APE"), "GDA": ("adapters", "GDA"), "CaptionCache": ("adapters", "CaptionCache"),
    "LinearProbe": ("adapters", "LinearProbe"), "ProKeR": ("adapters", "ProKeR"), "TipAdapter": ("adapters", "TipAdapter"),
    "TipX": ("adapters", "TipX"), "TransductiveGDA": ("adapters", "TransductiveGDA"), "ZeroShot": ("adapters", "ZeroShot"),
    "load_adapter": ("adapters", "load_adapter"), "save_adapter": ("adapters", "save_adapter"),
    "synthesize_new_classes": ("adapters", "synthesize_new_classes"),
    "TINY": ("backbones", "TINY"), "Backbone": ("backbones", "Backbone"), "list_backbones": ("backbones", "list_backbones"),
    "FeatureSet": ("features", "FeatureSet"), "extract": ("features", "extract"),
    "load_features": ("features", "load_features"), "save_features": ("features", "save_features"),
    "Leaderboard": ("leaderboard", "Leaderboard"), "leaderboard": ("leaderboard", "leaderboard"),
    "load": ("loading", "load"), "Predictor": ("predictor", "Predictor"), "tune": ("tuning", "tune"),
}
"""Public name -> (module, attribute or None for the module itself), resolved on first access."""


install(__name__, _PUBLIC)

__all__ = ["APE", "Backbone", "CaptionCache", "FeatureSet", "GDA", "Leaderboard", "LinearProbe", "Predictor",
           "ProKeR", "TINY", "TipAdapter", "TipX", "TransductiveGDA", "ZeroShot", "__version__", "adapters",
           "compose", "datasets", "extract", "leaderboard", "list_backbones", "load", "load_adapter", "load_features",
           "save_adapter", "save_features", "support", "synthesize_new_classes", "tta", "tune"]
