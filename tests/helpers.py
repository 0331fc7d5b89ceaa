"""Test helpers: CLIP-like synthetic features, generated JPEG trees, and fitting any registered
adapter with its declared inputs (so family-wide tests need no list of the family)."""

from __future__ import annotations

import numpy as np

import adaptkit as ak


def normalize(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def clip_like(n_classes: int = 12, dim: int = 64, per_class: int = 8, n_test: int = 120, spread: float = 0.6,
              text_noise: float = 0.8, seed: int = 0):
    """L2-normalised class clusters on the sphere plus noisy text weights.

    Returns (X_train (N, D), y_train, X_test (M, D), y_test, text (C, D)), float32 / int64.
    """
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(n_classes, dim)))
    y_train = np.repeat(np.arange(n_classes), per_class)
    y_test = rng.integers(0, n_classes, size=n_test)

    def sample(labels):
        return normalize(centres[labels] + spread * rng.normal(size=(len(labels), dim)) / np.sqrt(dim) * 4)

    text = normalize(centres + text_noise * rng.normal(size=centres.shape) / np.sqrt(dim) * 4)
    f32 = np.float32
    return sample(y_train).astype(f32), y_train, sample(y_test).astype(f32), y_test, text.astype(f32)


def write_jpegs(root, n_classes: int = 3, per_class: int = 8, size=(24, 32), seed: int = 0,
                quality: int = 90) -> list[str]:
    """A class-folder tree of random JPEGs under ``root``; returns the sorted file paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for c in range(n_classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, quality=quality)
            paths.append(str(path))
    return sorted(paths)


def image_set(paths, name: str = "files"):
    """An ImageSet over ``paths`` labelled by their class folder ``class_<c>``."""
    labels = [int(p.split("class_")[1].split("/")[0]) for p in paths]
    return ak.datasets.ImageSet(paths, labels, [f"class {c}" for c in range(max(labels) + 1)], name)


def family_inputs(cls, X, unlabeled, seed: int = 7) -> dict:
    """Values for the extra ``fit`` inputs ``cls`` declares: unit features with one row per
    support image (``rows="support"``), ``unlabeled`` for ``rows="features"``; inputs that are
    not feature arrays are left out."""
    rng = np.random.default_rng(seed)
    n, dim = np.asarray(X).shape[0], np.asarray(X).shape[-1]
    inputs = {}
    for name, spec in cls.fit_inputs.items():
        if spec.rows == "support":
            inputs[name] = normalize(rng.normal(size=(n, dim))).astype(np.float32)
        elif spec.rows == "features":
            inputs[name] = np.asarray(unlabeled)
    return inputs


def fit_member(cls_or_name, X, y, text, unlabeled, **params):
    """A registered adapter fitted on (X, y, text) with generated declared inputs."""
    cls = ak.adapters.ADAPTERS[cls_or_name] if isinstance(cls_or_name, str) else cls_or_name
    return cls(**{"device": "cpu", **params}).fit(X, y, text_weights=text, **family_inputs(cls, X, unlabeled))


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerThread:
    """A real uvicorn server for ``app`` on 127.0.0.1 and a free port, in a thread; a context
    manager that waits until it listens and stops it (graceful shutdown) on exit."""

    def __init__(self, app, timeout: float = 30.0):
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.timeout = timeout

    def __enter__(self):
        import time

        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=self.timeout)


def save_digits_adapter(path, alpha: float = 1.0):
    """A GDA fitted on 2 shots per class of digits encoded by the tiny backbone, saved at ``path``
    with its class names and backbone identity (what ``adaptkit serve`` loads). Returns ``path``."""
    tiny = ak.Backbone(ak.TINY, device="cpu")
    digits = ak.datasets.load("digits")
    support = ak.extract(tiny, digits.few_shot(2, 1), cache_dir=False, progress=False)
    text = tiny.text_classifier(digits.classnames, digits.templates)
    ak.GDA(alpha=alpha, device="cpu").fit(support.features, support.labels, text_weights=text).save(
        path, classnames=digits.classnames, backbone=tiny)
    return path


def small_recipe(tmp_path, **overrides):
    """A two-shot, two-seed digits recipe of three adapters writing under ``tmp_path``."""
    from adaptkit.recipes import parse_recipe

    data = {"output": str(tmp_path / "out"), "shots": [1, 2], "seeds": [1, 2], "views": 2,
            "adapters": ["zero_shot", "gda", "tip_adapter"], "datasets": [{"name": "digits"}],
            "backbones": [{"name": "adaptkit-tiny"}], "cache_dir": str(tmp_path / "cache"),
            "grids": {"tip_adapter": {"beta": [1.0, 5.0], "alpha": [0.5, 2.0]}}}
    data.update(overrides)
    return parse_recipe(data, "test.toml", base=tmp_path)


def raw_request(url: str, **options) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive POST to ``url`` (httpx builds headers and body from
    ``files=``, ``data=``, ``content=``, ``headers=``), to replay many times at little client cost."""
    import httpx

    request = httpx.Request("POST", url, **options)
    body = request.read()
    lines = [f"POST {request.url.raw_path.decode()} HTTP/1.1", f"Host: {request.url.netloc.decode()}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "connection")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def replay(port: int, requests: list[bytes], concurrency: int = 4, timeout: float = 300) -> list[int]:
    """Send prebuilt ``requests`` to 127.0.0.1:``port`` over ``concurrency`` keep-alive connections
    (reconnecting when the server closes one); the status of each, in order."""
    import asyncio

    statuses = [0] * len(requests)

    async def connection(indices):
        reader = writer = None
        for i in indices:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(requests[i])
            head = await reader.readuntil(b"\r\n\r\n")
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            await reader.readexactly(int(fields.get(b"content-length", b"0")))
            statuses[i] = int(head.split()[1])
            if fields.get(b"connection", b"").lower() == b"close":
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    async def run():
        await asyncio.wait_for(asyncio.gather(*(connection(range(k, len(requests), concurrency))
                                                for k in range(concurrency))), timeout)

    asyncio.run(run())
    return statuses
