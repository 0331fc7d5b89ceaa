"""The classification service as an ASGI app (FastAPI): ``create_app(predictor, config)``.

``POST /v1/classify`` (multipart ``images``, optional ``top_k``): per image its top-k classes with
probabilities, or an error naming the part; ``GET /v1/model``: the model card; ``/healthz``,
``/readyz``; ``/metrics`` (Prometheus text); ``/`` a page to try the model; ``/docs`` OpenAPI.
Images are decoded in threads, off the event loop, and encoded in dynamic batches
(:class:`~adaptkit.serve.batching.Batcher`). Every client error is a 4xx JSON body
``{"error": ..., "field": ...}``; a full queue is 503 with ``Retry-After``. No endpoint reads a
server-side path or fetches a URL.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .._version import __version__
from ..data.decode import decode_image
from ..predictor import Predictor
from .batching import Batcher, QueueFull
from .config import ServeConfig
from .metrics import Metrics
from .page import PAGE

FORM_FIELDS = ("images", "top_k")
OPEN_PATHS = ("/", "/healthz", "/readyz", "/docs", "/openapi.json")


class ClientError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message, "field": field}``."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


ENDPOINTS = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/classify")


class Guard:
    """Pure ASGI middleware: the API key (constant-time comparison) on every path but the open
    ones, and the request metrics (count by endpoint and status, latency)."""

    def __init__(self, app, config: ServeConfig, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self.expected = None if config.api_key is None else f"Bearer {config.api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 500}

        async def recorded(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.expected is not None and path not in OPEN_PATHS:
                given = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(given, self.expected):
                    response = _error(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                      "Authorization", {"WWW-Authenticate": "Bearer"})
                    return await response(scope, receive, recorded)
            await self.app(scope, receive, recorded)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _error(413, f"the request body exceeds {self.limit} bytes", "body")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ClientError(413, f"the request body exceeds {self.limit} bytes", "body")
            return message

        try:
            await self.app(scope, limited, send)
        except ClientError as err:
            await _error(err.status, err.message, err.field)(scope, receive, send)


def model_card(predictor: Predictor, adapter_sha256: str | None = None) -> dict:
    """What ``GET /v1/model`` answers: classes, adapter, backbone identity, file checksum, version."""
    adapter = predictor.adapter
    params = {k: v for k, v in adapter.get_params(deep=False).items() if k != "device"}
    return {"adapter": type(adapter).name or type(adapter).__name__, "params": params,
            "classes": list(predictor.classnames), "backbone": predictor.backbone.identity,
            "adapter_sha256": adapter_sha256, "adaptkit": __version__}


def prepare(predictor: Predictor, data: bytes, name: str, max_pixels: int) -> torch.Tensor | str:
    """Preprocessed pixels (3, H, W) of one upload, or why it cannot be classified."""
    if not data:
        return f"{name}: empty upload"
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:
        return f"{name}: too many pixels (a decompression bomb?); the limit is {max_pixels}"
    except Exception:  # noqa: BLE001  (anything Pillow cannot open is a bad upload, named)
        return f"{name}: not an image file Pillow can read (empty, damaged or another format)"
    if width * height > max_pixels:
        return f"{name}: {width}×{height} = {width * height} pixels exceeds the limit of {max_pixels}"
    try:
        return predictor.backbone.preprocess(decode_image(data, name))
    except (ValueError, OSError) as err:
        return str(err)


def default_infer(predictor: Predictor) -> Callable[[torch.Tensor], np.ndarray]:
    """(B, 3, H, W) pixels -> (B, C) probabilities, as :meth:`Predictor.predict_proba` computes them."""
    return lambda pixels: predictor.adapter.predict_proba(predictor.backbone.encode_batch(pixels))


def create_app(predictor: Predictor, config: ServeConfig | None = None, *, adapter_sha256: str | None = None,
               submit: Callable | None = None) -> FastAPI:
    """The ASGI app serving ``predictor`` under ``config``'s limits.

    ``submit`` (async, list of (3, H, W) tensors -> list of (C,) probabilities) replaces the
    built-in dynamic batcher (Ray Serve passes its ``serve.batch`` method)."""
    if not isinstance(predictor, Predictor):
        raise TypeError(f"predictor must be an adaptkit.Predictor; got {type(predictor).__name__}")
    config = config or ServeConfig()
    if not isinstance(config, ServeConfig):
        raise TypeError(f"config must be an adaptkit.serve.ServeConfig; got {type(config).__name__}")
    batcher = Batcher(default_infer(predictor), config.max_batch, config.max_wait_ms, config.max_queue)
    # Decoding runs in a pool of its own, off the event loop; a fixed pool keeps torch's per-thread
    # state (the preprocessing runs torch ops) instead of paying for it in a new thread each time.
    decoder = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="adaptkit-decode")
    metrics = Metrics(lambda: batcher.depth)
    batcher.observe_batch = metrics.observe_batch
    card = model_card(predictor, adapter_sha256)
    state = {"ready": submit is not None}

    @asynccontextmanager
    async def lifespan(_):
        if submit is None:
            batcher.start()
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.stop()
        decoder.shutdown(wait=False)

    app = FastAPI(title="adaptkit", version=__version__, lifespan=lifespan,
                  description="Training-free CLIP adapters as a classification service.")
    app.state.metrics, app.state.batcher, app.state.config = metrics, batcher, config
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    app.add_middleware(Guard, config=config, metrics=metrics)

    @app.exception_handler(HTTPException)
    async def http_error(_, err: HTTPException):
        return _error(err.status_code, str(err.detail), None, getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
        return _error(422, first.get("msg", "invalid request"), field)

    @app.exception_handler(ClientError)
    async def client_error(_, err: ClientError):
        return _error(err.status, err.message, err.field, err.headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE

    @app.get("/healthz")
    async def healthz():
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """The model is loaded and the batcher runs."""
        if not state["ready"]:
            return _error(503, "not ready: starting or shutting down", None, {"Retry-After": "1"})
        return {"status": "ready", "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def metrics_text():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/model")
    async def model():
        """Classes, adapter name and parameters, backbone identity, adapter file checksum, version."""
        return card

    @app.post("/v1/classify")
    async def classify(request: Request):
        """Multipart form: ``images`` (one or more files), optional ``top_k``. Per image its top-k
        classes with probabilities, or an error; the other images of the request still succeed."""
        try:
            with batcher.expecting():
                prepared, names, top_k = await receive(request)
                good = [i for i, item in enumerate(prepared) if isinstance(item, torch.Tensor)]
                images = [prepared[i] for i in good]
                if images and submit is None:  # queued before the request stops counting as on its way
                    waiting = asyncio.gather(*batcher.enqueue(images))
            probabilities = await (waiting if submit is None else submit(images)) if images else []
        except QueueFull as err:
            metrics.images.labels("refused_queue_full").inc(len(good))
            raise ClientError(503, f"the server is busy ({err}); retry shortly", None, {"Retry-After": "1"}) from None
        by_index = dict(zip(good, probabilities))
        results = []
        for i, (name, item) in enumerate(zip(names, prepared)):
            if i in by_index:
                row = np.asarray(by_index[i])
                order = np.argsort(-row, kind="stable")[:top_k]
                results.append({"index": i, "filename": name,
                                "top": [{"class": card["classes"][j], "probability": float(row[j])} for j in order]})
            else:
                results.append({"index": i, "filename": name, "error": item})
        metrics.images.labels("classified").inc(len(good))
        metrics.images.labels("refused_bad_image").inc(len(prepared) - len(good))
        return JSONResponse({"results": results, "adapter": card["adapter"]})

    async def receive(request: Request) -> tuple[list, list[str], int]:
        """The request's images preprocessed (or why each cannot be), their names and top_k."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ClientError(415, f"expected a multipart/form-data body with 'images' files; got "
                                   f"{content_type or 'no Content-Type'!r}", "Content-Type")
        try:
            form = await request.form(max_files=config.max_images, max_fields=len(FORM_FIELDS),
                                      max_part_size=config.max_body_bytes)
        except ClientError:
            raise
        except Exception as err:  # noqa: BLE001  (starlette's multipart errors are the client's)
            detail = getattr(err, "detail", None) or getattr(err, "message", None) or str(err) or type(err).__name__
            raise ClientError(413 if "Too many" in str(detail) else 400,
                              f"malformed multipart body: {detail}", "images" if "files" in str(detail) else "body") from None
        try:
            unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
            if unknown:
                raise ClientError(422, f"unknown form fields {unknown}; expected {list(FORM_FIELDS)}", unknown[0])
            parts = form.getlist("images")
            if not parts:
                raise ClientError(422, "no images: send one or more files in the 'images' field", "images")
            top_k = _top_k(form.getlist("top_k"), config.top_k, len(card["classes"]))
            names = [part.filename or f"images[{i}]" if isinstance(part, UploadFile) else f"images[{i}]"
                     for i, part in enumerate(parts)]
            payloads = [await part.read() if isinstance(part, UploadFile) else None for part in parts]
        finally:
            await form.close()
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(*(
            loop.run_in_executor(decoder, prepare, predictor, data, name, config.max_pixels) if data is not None else
            _not_a_file(name) for data, name in zip(payloads, names)))
        return prepared, names, top_k

    return app


async def _not_a_file(name: str) -> str:
    return f"{name}: not a file upload (send the image as a file part)"


def _top_k(values: list, default: int, n_classes: int) -> int:
    if len(values) > 1:
        raise ClientError(422, "top_k given more than once", "top_k")
    if not values:
        return min(default, n_classes)
    value = values[0]
    text = value if isinstance(value, str) else None
    if text is None or not text.strip().isdigit() or not 1 <= int(text) <= n_classes:
        raise ClientError(422, f"top_k must be an integer in [1, {n_classes}] (the number of classes); got "
                               f"{text if text is not None else 'a file'!r}", "top_k")
    return int(text)
