"""faiss-backed support memories and retrieval-built support sets."""

from ..index import KINDS, SupportIndex, gpu_available
from .build import build_support_set, class_queries

__all__ = ["KINDS", "SupportIndex", "build_support_set", "class_queries", "gpu_available"]
