"""The same app on Ray Serve: each replica loads the predictor and serves ``create_app``'s routes
(``serve.ingress``), batching the images of concurrent requests with ``serve.batch``; Ray Serve's
proxy spreads requests over the replicas, on one machine or a cluster."""

from __future__ import annotations

import asyncio
import os

import torch
from ray import serve  # an optional dependency (the ray extra); this module is imported only for it

from .app import create_app, default_infer
from .config import ServeConfig
from .runner import load_predictor


@serve.deployment
@serve.ingress()
class AdaptkitReplica:
    """One replica: the predictor from the adapter file, the app, a ``serve.batch`` encoder."""

    def __init__(self, adapter_file: str, backbone: str | None, pretrained: str | None, device: str,
                 config: ServeConfig):
        self.predictor, self.sha256 = load_predictor(adapter_file, backbone=backbone, pretrained=pretrained,
                                                     device=device)
        self.infer, self.config = default_infer(self.predictor), config
        self.encode.set_max_batch_size(config.max_batch)
        self.encode.set_batch_wait_timeout_s(config.max_wait_ms / 1000.0)

    @serve.batch
    async def encode(self, images: list[torch.Tensor]) -> list:
        return list(await asyncio.to_thread(self.infer, torch.stack(images)))

    async def submit(self, images: list[torch.Tensor]) -> list:
        return list(await asyncio.gather(*(self.encode(image) for image in images)))

    def __serve_build_asgi_app__(self):
        return create_app(self.predictor, self.config, adapter_sha256=self.sha256, submit=self.submit)


def deployment(adapter_file: str | os.PathLike, *, backbone: str | None = None, pretrained: str | None = None,
               device: str = "auto", config: ServeConfig | None = None, replicas: int = 1):
    """The bound Ray Serve application (pass it to ``serve.run``)."""
    config = config or ServeConfig()
    return AdaptkitReplica.options(num_replicas=replicas, max_queued_requests=config.max_queue).bind(
        os.fspath(adapter_file), backbone, pretrained, device, config)


def run_ray(adapter_file, *, backbone=None, pretrained=None, device="auto", host="127.0.0.1", port=8000,
            config: ServeConfig | None = None, replicas: int = 1, address: str | None = None) -> None:
    """Serve on Ray Serve until interrupted: the cluster at ``address``, or a local Ray."""
    import ray

    if address is not None and ray.is_initialized():
        raise ValueError(f"Ray already runs in this process; cannot join the cluster at address={address!r}")
    if not ray.is_initialized():
        ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(adapter_file, backbone=backbone, pretrained=pretrained, device=device, config=config,
                         replicas=replicas), name="adaptkit", route_prefix="/", blocking=True)
