"""Running the service: the predictor from an adapter file, and uvicorn on a host and port."""

from __future__ import annotations

import os

from .._params import Int, check_params
from ..adapters import load_adapter
from ..backbones import Backbone
from ..predictor import Predictor
from ..storage import expand_path, file_sha256
from .app import create_app
from .config import ServeConfig, is_loopback


def load_predictor(adapter_file: str | os.PathLike, *, backbone: str | None = None, pretrained: str | None = None,
                   device: str = "auto") -> tuple[Predictor, str]:
    """(predictor, adapter file SHA-256) for a saved adapter; the backbone is the one the file
    records unless ``backbone`` names another (which the predictor then checks against it)."""
    path = expand_path(adapter_file, "adapter_file")
    adapter = load_adapter(path, device=device)
    identity = adapter.backbone_identity_
    if backbone is None:
        if identity is None:
            raise ValueError(f"{path} records no backbone: pass backbone= (and pretrained=), or save the adapter "
                             "with adapter.save(path, backbone=backbone)")
        model = Backbone.from_identity(identity, pretrained=pretrained, device=device)
    else:
        model = Backbone(backbone, pretrained=pretrained, device=device)
    return Predictor(model, adapter, allow_unchecked_backbone=identity is None), file_sha256(path)


def check_binding(host: str, config: ServeConfig) -> None:
    """Off loopback a key is required: anyone who can reach the port could use the model."""
    if not is_loopback(host) and config.api_key is None:
        raise ValueError(f"host {host!r} is reachable from other machines: serving there requires an API key "
                         "(api_key=, or --api-key-file on the command line)")


def run(predictor: Predictor, *, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
        adapter_sha256: str | None = None, log_level: str = "info") -> None:
    """Serve ``predictor`` with uvicorn until SIGINT/SIGTERM (requests in flight finish first)."""
    import uvicorn  # deferred: only serving needs it

    config = config or ServeConfig()
    check_params("run", {"port": [Int(0, 65535)], "host": [str]}, {"port": port, "host": host})
    check_binding(host, config)
    app = create_app(predictor, config, adapter_sha256=adapter_sha256)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30,
                limit_concurrency=max(64, 4 * config.max_queue))
