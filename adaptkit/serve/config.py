"""What a server allows: batching, request limits, the queue, the key, CORS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .._params import POSITIVE_INT, Float, check_params

LOOPBACK_HOSTS = {"localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """Limits and behaviour of the classification server.

    max_batch : images encoded together at most.
    max_wait_ms : how long the first image of a batch waits for others (ms); 0 disables waiting.
    max_queue : images waiting to be encoded at most; beyond, requests get 503 with Retry-After.
    max_body_bytes : request body size at most (bytes).
    max_images : images per request at most.
    max_pixels : pixels per image at most (decompression bombs are refused before decoding).
    top_k : classes returned per image by default.
    api_key : required as ``Authorization: Bearer <key>`` when set (``None``: no key).
    cors_origins : origins allowed by CORS; empty: CORS off.
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_body_bytes: int = 32 * 2 ** 20
    max_images: int = 16
    max_pixels: int = 40_000_000
    top_k: int = 5
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default=())

    def __post_init__(self):
        check_params("ServeConfig", {
            "max_batch": [POSITIVE_INT], "max_wait_ms": [Float(0, 60_000)], "max_queue": [POSITIVE_INT],
            "max_body_bytes": [POSITIVE_INT], "max_images": [POSITIVE_INT], "max_pixels": [POSITIVE_INT],
            "top_k": [POSITIVE_INT], "api_key": [str, None], "cors_origins": [tuple]},
            {"max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms, "max_queue": self.max_queue,
             "max_body_bytes": self.max_body_bytes, "max_images": self.max_images, "max_pixels": self.max_pixels,
             "top_k": self.top_k, "api_key": self.api_key, "cors_origins": self.cors_origins})
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("api_key must be at least 16 characters long")
