"""adaptkit as a service: an ASGI classification app with dynamic batching, limits, metrics and a
page to try the model; run locally with uvicorn or on Ray Serve replicas."""

from .app import create_app, model_card
from .config import ServeConfig, is_loopback
from .runner import load_predictor, run

__all__ = ["ServeConfig", "create_app", "is_loopback", "load_predictor", "model_card", "run"]
