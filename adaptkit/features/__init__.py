"""Features: the :class:`FeatureSet` value and its file, cached extraction (:func:`extract`), the
sharded store and the local and Ray engines."""

from .extraction import CACHE_FORMAT, FeatureEntry, cache_key, default_cache_dir, extract
from .featureset import FILE_FORMAT, FeatureSet, load_features, save_features

__all__ = ["CACHE_FORMAT", "FILE_FORMAT", "FeatureEntry", "FeatureSet", "cache_key", "default_cache_dir", "extract",
           "load_features", "save_features"]
