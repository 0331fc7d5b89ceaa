"""Test-time adaptation: methods that improve a frozen CLIP on an unlabeled test stream."""

from .condense import POLICIES, EViT, TCACondense, ToMe, default_layers, flops_per_image, make_policy
from .stream import StreamResult, evaluate_stream
from .tca import TCA
from .tda import TDA
from .tokens import TokenTrace, vit_forward

__all__ = ["EViT", "POLICIES", "StreamResult", "TCA", "TCACondense", "TDA", "ToMe", "TokenTrace", "default_layers",
           "evaluate_stream", "flops_per_image", "make_policy", "vit_forward"]
