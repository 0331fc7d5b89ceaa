"""adaptkit.serve on a real uvicorn server (127.0.0.1, a free port): answers equal Predictor's,
limits and bad input are 4xx JSON naming the problem, the queue sheds load with 503, keys, CORS."""

from __future__ import annotations

import asyncio
import io
import json
import random

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import adaptkit as ak
from adaptkit.serve import ServeConfig, create_app, load_predictor
from adaptkit.serve.runner import check_binding
from helpers import ServerThread, save_digits_adapter, write_jpegs

KEY = "k" * 24


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    return save_digits_adapter(tmp_path_factory.mktemp("adapter") / "digits-gda.safetensors", alpha=10.0)


@pytest.fixture(scope="module")
def predictor(adapter_file):
    return load_predictor(adapter_file, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_jpegs(tmp_path_factory.mktemp("imgs"), n_classes=2, per_class=4, size=(40, 52))


@pytest.fixture(scope="module")
def server(predictor):
    model, sha256 = predictor
    config = ServeConfig(max_images=4, max_body_bytes=2 ** 20, max_pixels=100_000, max_wait_ms=2.0)
    with ServerThread(create_app(model, config, adapter_sha256=sha256)) as running:
        yield running


def files(paths):
    return [("images", (p.rsplit("/", 1)[-1], open(p, "rb").read(), "image/jpeg")) for p in paths]


def probabilities(answer, classnames):
    """(N, C) from an answer whose top lists every class."""
    rows = []
    for result in answer["results"]:
        by_name = {entry["class"]: entry["probability"] for entry in result["top"]}
        rows.append([by_name[c] for c in classnames])
    return np.array(rows)


def test_answers_equal_predictor_probabilities_batched_or_not(server, predictor, images):
    model, _ = predictor
    expected = model.predict_proba(images)
    one = httpx.post(f"{server.url}/v1/classify", files=files(images[:4]), data={"top_k": "10"})
    assert one.status_code == 200, one.text
    assert np.abs(probabilities(one.json(), model.classnames) - expected[:4]).max() <= 1e-6

    async def concurrent():
        async with httpx.AsyncClient(base_url=server.url) as client:
            return await asyncio.gather(*(client.post("/v1/classify", files=files([p]), data={"top_k": "10"})
                                          for p in images))

    answers = asyncio.run(concurrent())
    got = np.concatenate([probabilities(a.json(), model.classnames) for a in answers])
    assert np.abs(got - expected).max() <= 1e-6
    top = one.json()["results"][0]
    assert top["filename"] == images[0].rsplit("/", 1)[-1] and len(top["top"]) == 10
    default = httpx.post(f"{server.url}/v1/classify", files=files(images[:1])).json()["results"][0]
    shown = [e["probability"] for e in default["top"]]
    assert len(shown) == 5 and shown == sorted(shown, reverse=True)
    assert min(shown) >= np.sort(expected[0])[-5] - 1e-6


def test_model_card_health_and_metrics(server, predictor, adapter_file):
    model, sha256 = predictor
    card = httpx.get(f"{server.url}/v1/model").json()
    assert card["classes"] == model.classnames and card["adapter"] == "gda" and card["params"] == {"alpha": 10.0}
    assert card["backbone"] == model.backbone.identity and card["adapter_sha256"] == sha256
    assert card["adaptkit"] == ak.__version__
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("adaptkit_requests_total", "adaptkit_request_seconds_bucket", "adaptkit_batch_size_bucket",
                 "adaptkit_queue_depth", "adaptkit_images_total"):
        assert name in text
    assert 'adaptkit_requests_total{endpoint="/v1/model",status="200"}' in text
    page = httpx.get(f"{server.url}/").text
    assert "<script>" in page and "http://" not in page and "https://" not in page
    assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"] == "adaptkit"


def _multipart(parts, boundary="b0undary"):
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _png(width, height):
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def malformed_requests(images):
    """(description, method, path, kwargs, expected status or None for "a per-image error")."""
    rng = random.Random(0)
    jpeg = open(images[0], "rb").read()
    valid, content_type = _multipart([("images", "a.jpg", jpeg), ("top_k", None, b"3")])
    cases = []
    for cut in sorted(rng.sample(range(1, len(valid) - 1), 80)):
        cases.append((f"truncated at {cut}", "POST", "/v1/classify",
                      {"content": valid[:cut], "headers": {"Content-Type": content_type}}, "4xx-or-error"))
    for kind in ["application/json", "text/plain", "image/jpeg", "application/x-www-form-urlencoded", "",
                 "multipart/form-data", "multipart/mixed; boundary=x", "multipart/form-data; boundary="]:
        for body in (b"", jpeg[:200], b'{"images": []}'):
            cases.append((f"content type {kind!r}", "POST", "/v1/classify",
                          {"content": body, "headers": {"Content-Type": kind} if kind else {}}, "4xx"))
    for i in range(40):
        junk = rng.randbytes(rng.randint(0, 400))
        body, kind = _multipart([("images", f"junk{i}.jpg", junk)])
        cases.append((f"non-image part {i}", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}},
                      "image-error"))
    body, kind = _multipart([("images", "empty.jpg", b"")])
    cases.append(("zero-byte part", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}},
                  "image-error"))
    for size in [(400, 400), (2000, 60), (20000, 20000)]:
        body, kind = _multipart([("images", "bomb.png", _png(*size))])
        cases.append((f"bomb {size}", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}},
                      "image-error"))
    body, kind = _multipart([("images", f"{i}.jpg", jpeg) for i in range(5)])
    cases.append(("too many images", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}}, "4xx"))
    for value in [b"0", b"-1", b"abc", b"11", b"", b"1.5", b"\xff\xfe", b"3 4"]:
        body, kind = _multipart([("images", "a.jpg", jpeg), ("top_k", None, value)])
        cases.append((f"top_k {value!r}", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}},
                      "4xx"))
    body, kind = _multipart([("images", "a.jpg", jpeg), ("top_k", None, b"2"), ("top_k", None, b"3")])
    cases.append(("top_k twice", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}}, "4xx"))
    body, kind = _multipart([("top_k", None, b"2")])
    cases.append(("no images", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}}, "4xx"))
    body, kind = _multipart([("images", None, b"not a file")])
    cases.append(("images as a text field", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}},
                  "image-error"))
    body, kind = _multipart([("images", "a.jpg", jpeg), ("path", None, b"/etc/passwd")])
    cases.append(("unknown field", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}}, "4xx"))
    body, kind = _multipart([("images", "big.jpg", b"\xff" * (2 ** 20 + 10))])
    cases.append(("body over the limit", "POST", "/v1/classify", {"content": body, "headers": {"Content-Type": kind}},
                  "4xx"))
    for method, path in [("GET", "/v1/classify"), ("DELETE", "/v1/model"), ("GET", "/nope"), ("POST", "/healthz"),
                         ("GET", "/v1/classify/../../etc/passwd"), ("PUT", "/")]:
        cases.append((f"{method} {path}", method, path, {}, "4xx"))
    for i in range(40):
        parts = [("images", f"mix{i}.jpg", jpeg if j % 2 else rng.randbytes(30)) for j in range(rng.randint(1, 4))]
        body, kind = _multipart(parts)
        cases.append((f"mixed good and bad {i}", "POST", "/v1/classify",
                      {"content": body, "headers": {"Content-Type": kind}}, "mixed"))
    return cases


def test_a_bounded_fuzz_of_malformed_requests_never_gives_a_500(server, images):
    cases = malformed_requests(images)
    assert len(cases) >= 200
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for description, method, path, kwargs, expected in cases:
            response = client.request(method, path, **kwargs)
            assert response.status_code < 500, (description, response.status_code, response.text)
            answer = response.json()
            if response.status_code >= 400:
                assert answer["error"], description
                assert expected in ("4xx", "4xx-or-error"), (description, answer)
                continue
            assert expected in ("image-error", "mixed", "4xx-or-error"), (description, answer)
            for result in answer["results"]:
                assert ("top" in result) != ("error" in result), description
                if "error" in result:
                    assert result["filename"] in result["error"] or "images[" in result["error"], result
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/classify", files=files(images[:1])).status_code == 200


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(server):
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 1073741824\r\n\r\n--b\r\n")
        reply = b""
        while not reply.endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and '"field":"body"' in reply


def test_errors_name_the_field(server, images):
    def post(**kwargs):
        return httpx.post(f"{server.url}/v1/classify", **kwargs)

    answer = post(files=files(images[:1]), data={"top_k": "0"}).json()
    assert answer["field"] == "top_k" and "[1, 10]" in answer["error"]
    assert post(content=b"{}", headers={"Content-Type": "application/json"}).json()["field"] == "Content-Type"
    assert post(files=files(images[:1]), data={"top_k": "2", "extra": "1"}).json()["field"] == "extra"
    too_many = post(files=files(images[:1] * 5))
    assert too_many.status_code == 413 and too_many.json()["field"] == "images"
    bomb = post(files=[("images", ("bomb.png", _png(2000, 60), "image/png"))]).json()["results"][0]
    assert bomb["error"] == "bomb.png: 2000×60 = 120000 pixels exceeds the limit of 100000"


def test_a_burst_of_ten_times_the_queue_gets_503_with_retry_after(predictor, images, monkeypatch):
    import time

    import adaptkit.serve.app as serve_app

    model, _ = predictor
    real = serve_app.default_infer(model)

    def slow(pixels):
        time.sleep(0.05)
        return real(pixels)

    monkeypatch.setattr(serve_app, "default_infer", lambda _: slow)
    config = ServeConfig(max_queue=4, max_batch=2, max_wait_ms=0.0)
    expected = model.predict_proba(images[:1])

    async def burst(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/classify", files=files(images[:1]), data={"top_k": "10"})
                                          for _ in range(40)))

    with ServerThread(create_app(model, config)) as running:
        answers = asyncio.run(burst(running.url))
        refused = [a for a in answers if a.status_code == 503]
        accepted = [a for a in answers if a.status_code == 200]
        assert refused and accepted and len(refused) + len(accepted) == 40
        assert all(a.headers["Retry-After"] == "1" and "busy" in a.json()["error"] for a in refused)
        for answer in accepted:
            assert np.abs(probabilities(answer.json(), model.classnames) - expected).max() <= 1e-6
        assert httpx.get(f"{running.url}/healthz").status_code == 200
        assert httpx.post(f"{running.url}/v1/classify", files=files(images[:1])).status_code == 200


def test_api_key_cors_and_binding(predictor, images):
    model, _ = predictor
    with pytest.raises(ValueError, match="requires an API key"):
        check_binding("0.0.0.0", ServeConfig())
    check_binding("0.0.0.0", ServeConfig(api_key=KEY))
    check_binding("::1", ServeConfig())
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServeConfig(api_key="short")
    config = ServeConfig(api_key=KEY, cors_origins=("http://labelling.example",))
    with ServerThread(create_app(model, config)) as running:
        refused = httpx.post(f"{running.url}/v1/classify", files=files(images[:1]))
        assert refused.status_code == 401 and refused.json()["field"] == "Authorization"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        wrong = httpx.get(f"{running.url}/v1/model", headers={"Authorization": "Bearer " + "x" * 24})
        assert wrong.status_code == 401
        ok = httpx.post(f"{running.url}/v1/classify", files=files(images[:1]), headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert httpx.get(f"{running.url}/healthz").status_code == 200
        allowed = httpx.get(f"{running.url}/healthz", headers={"Origin": "http://labelling.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://labelling.example"
    with ServerThread(create_app(model, ServeConfig())) as running:
        plain = httpx.get(f"{running.url}/healthz", headers={"Origin": "http://labelling.example"})
        assert "access-control-allow-origin" not in plain.headers


def test_create_app_checks_its_arguments(predictor):
    model, _ = predictor
    with pytest.raises(TypeError, match="predictor must be an adaptkit.Predictor"):
        create_app("model")
    with pytest.raises(TypeError, match="config must be an adaptkit.serve.ServeConfig"):
        create_app(model, {"max_batch": 2})
    with pytest.raises(ValueError, match="max_batch"):
        ServeConfig(max_batch=0)
    assert json.loads(json.dumps(ServeConfig().__dict__))["max_batch"] == 32


def test_a_batch_waits_only_for_requests_on_their_way():
    """A lone request starts at once whatever max_wait_ms; one still being decoded joins the batch."""
    import time

    from adaptkit.serve.batching import Batcher

    sizes = []

    def infer(pixels):
        sizes.append(len(pixels))
        return pixels.flatten(1).numpy()

    async def scenario():
        batcher = Batcher(infer, max_batch=8, max_wait_ms=2000, max_queue=16)
        batcher.start()
        try:
            start = time.perf_counter()
            alone = await batcher.submit([torch.ones(1, 1, 1)])
            lone_seconds = time.perf_counter() - start

            async def request(value, decode_seconds):
                with batcher.expecting():
                    await asyncio.sleep(decode_seconds)
                    queued = batcher.enqueue([torch.full((1, 1, 1), float(value))])
                return await asyncio.gather(*queued)

            start = time.perf_counter()
            together = await asyncio.gather(request(2, 0.0), request(3, 0.2))
            return alone, lone_seconds, together, time.perf_counter() - start
        finally:
            await batcher.stop()

    alone, lone_seconds, together, pair_seconds = asyncio.run(scenario())
    assert lone_seconds < 1.0 and alone[0].tolist() == [1.0]
    assert sizes == [1, 2], sizes
    assert [row[0].tolist() for row in together] == [[2.0], [3.0]] and pair_seconds < 1.5
