"""``adaptkit serve``: a saved adapter behind an HTTP endpoint (uvicorn, or Ray Serve replicas)."""

# The library is imported inside each command, so that `adaptkit --help` and the other commands
# start without it (start-up time).

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._options import SERVE_ENGINES
from .app import DEVICE, _choices, app, command

ServeEngine = _choices("ServeEngine", SERVE_ENGINES)


@app.command()
@command
def serve(
    adapter: Path = typer.Argument(..., help="adapter file written by adapter.save(path, backbone=...)"),
    backbone: Optional[str] = typer.Option(None, help="open_clip architecture (default: the one the file records)"),
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag or weights file"),
    host: str = typer.Option("127.0.0.1", help="address to bind; off loopback an API key is required"),
    port: int = typer.Option(8000, min=0, max=65535, help="port (0: any free port)"),
    max_batch: int = typer.Option(32, min=1, help="images encoded together at most"),
    max_wait_ms: float = typer.Option(5.0, min=0.0, help="how long a batch waits to fill (ms)"),
    max_queue: int = typer.Option(256, min=1, help="images waiting at most; beyond, 503 with Retry-After"),
    max_images: int = typer.Option(16, min=1, help="images per request at most"),
    max_body_mb: float = typer.Option(32.0, min=0.001, help="request body size at most (MiB)"),
    max_pixels: int = typer.Option(40_000_000, min=1, help="pixels per image at most"),
    api_key_file: Optional[Path] = typer.Option(None, help="file holding the API key clients send as a Bearer token"),
    cors_origin: list[str] = typer.Option([], help="allow this origin by CORS (repeatable); default: CORS off"),
    engine: ServeEngine = typer.Option("local", help="local (uvicorn) or ray (Ray Serve replicas)"),
    replicas: int = typer.Option(1, min=1, help="with --engine ray: replicas of the model"),
    address: Optional[str] = typer.Option(None, help="with --engine ray: the cluster to join (default: local Ray)"),
    device: str = DEVICE,
) -> None:
    """Serve a saved adapter: POST /v1/classify, GET /v1/model, /healthz, /readyz, /metrics, a page
    at / and the OpenAPI docs at /docs."""
    from ..serve import ServeConfig, load_predictor, run
    from ..serve.runner import check_binding
    from ..storage import read_text

    key = read_text(api_key_file, "API key file").strip() if api_key_file is not None else None
    config = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, max_images=max_images,
                         max_body_bytes=int(max_body_mb * 2 ** 20), max_pixels=max_pixels, api_key=key,
                         cors_origins=tuple(cors_origin))
    check_binding(host, config)
    if engine.value == "ray":
        from ..serve.ray_serve import run_ray

        run_ray(adapter, backbone=backbone, pretrained=pretrained, device=device, host=host, port=port, config=config,
                replicas=replicas, address=address)
        return
    predictor, sha256 = load_predictor(adapter, backbone=backbone, pretrained=pretrained, device=device)
    run(predictor, host=host, port=port, config=config, adapter_sha256=sha256)
