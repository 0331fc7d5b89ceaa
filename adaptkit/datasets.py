"""``ak.datasets``: the name the datasets go by in the API (``ak.datasets.load("digits")``,
``from adaptkit.datasets import ImageSet``); the code lives in :mod:`adaptkit.data`."""

from .data import NAMES, Dataset, ImageSet, available, load

__all__ = ["NAMES", "Dataset", "ImageSet", "available", "load"]
