"""adaptkit serve under a bounded loopback load, against Predictor called in-process.

The server runs as its own process (`adaptkit serve`, 127.0.0.1, a free port); an asyncio client
sends ``--requests`` requests of one JPEG each at concurrency 1, 8 and 32, with dynamic batching
(max batch 32, max wait 5 ms) and without (max batch 1). References, in this process on the same
images: ``Predictor.predict_proba`` once per request (what a script classifying images as they
arrive does), and once over all images (the batched ceiling). Prints images/s, p50/p95/p99
latency and the ratios.

    python benchmarks/serve.py [--requests 1000] [--backbone adaptkit-tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

import adaptkit as ak
from adaptkit.serve import load_predictor
from adaptkit.serve.app import default_infer
from adaptkit.serve.batching import intra_op_threads


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(adapter: Path, log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "adaptkit.cli", "serve", str(adapter), "--port", str(port),
                                "--device", "cpu", *options], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not start; see {log}")


def request_bytes(port: int, data: bytes) -> bytes:
    """One prebuilt keep-alive HTTP/1.1 request posting ``data`` as the ``images`` part."""
    boundary = "adaptkitbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"x.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def load(port: int, payloads: list[bytes], concurrency: int) -> tuple[float, np.ndarray]:
    """(images/s, latencies in s) of sending every payload once over ``concurrency`` keep-alive
    connections. A minimal asyncio client (prebuilt requests), so the load generator costs little
    of the two cores the server also runs on."""
    requests = [request_bytes(port, data) for data in payloads]
    latencies = []

    async def connection(mine):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for request in mine:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
        writer.close()

    # Warm-up at the level's own concurrency: the first burst of new connections is slower once.
    await asyncio.gather(*(connection(requests[:2]) for _ in range(concurrency)))
    latencies.clear()
    start = time.perf_counter()
    await asyncio.gather(*(connection(requests[i::concurrency]) for i in range(concurrency)))
    return len(requests) / (time.perf_counter() - start), np.array(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per load level")
    parser.add_argument("--backbone", default=ak.TINY)
    parser.add_argument("--size", type=int, default=64, help="JPEG side in pixels")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="adaptkit-serve-bench-"))
    backbone = ak.Backbone(args.backbone, device="cpu")
    digits = ak.datasets.load("digits")
    support = ak.extract(backbone, digits.few_shot(4, 1), cache_dir=False, progress=False)
    text = backbone.text_classifier(digits.classnames, digits.templates)
    ak.GDA(device="cpu").fit(support.features, support.labels, text_weights=text).save(
        scratch / "gda.safetensors", classnames=digits.classnames, backbone=backbone)
    predictor, _ = load_predictor(scratch / "gda.safetensors", device="cpu")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(64):
        path = scratch / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    payloads = [paths[i % len(paths)].read_bytes() for i in range(args.requests)]
    files = [str(paths[i % len(paths)]) for i in range(args.requests)]

    predictor.predict_proba(files[:8])
    start = time.perf_counter()
    for f in files:
        predictor.predict_proba([f])
    per_call = len(files) / (time.perf_counter() - start)
    start = time.perf_counter()
    predictor.predict_proba(files)
    batched = len(files) / (time.perf_counter() - start)
    pixels = torch.stack([predictor.backbone.preprocess(Image.open(f).convert("RGB")) for f in files[:32]])
    infer = default_infer(predictor)
    model_rate = {}
    default_threads, server_threads = torch.get_num_threads(), intra_op_threads()
    for threads in sorted({default_threads, server_threads}):
        torch.set_num_threads(threads)
        for size in (1, 32):
            infer(pixels[:size])
            start = time.perf_counter()
            for _ in range(64 // size):
                infer(pixels[:size])
            model_rate[threads, size] = 64 / (time.perf_counter() - start)
    torch.set_num_threads(default_threads)
    print(f"in-process Predictor.predict_proba: {per_call:,.0f} img/s one call per image, "
          f"{batched:,.0f} img/s one call over all {len(files)} images")
    for threads in sorted({default_threads, server_threads}):
        role = ", the server's" if threads == server_threads else ", in-process default"
        print(f"the model alone (encode + adapter on preprocessed pixels; {threads} intra-op threads{role}): "
              f"{model_rate[threads, 1]:,.0f} img/s in batches of 1, {model_rate[threads, 32]:,.0f} img/s in batches "
              f"of 32 (a {model_rate[threads, 32] / model_rate[threads, 1]:.2f}x gain from batching: the most dynamic "
              "batching can give once per-request costs are paid)")
    print()
    print("| concurrency | dynamic batching | images/s | p50 (ms) | p95 (ms) | p99 (ms) | vs in-process per call | "
          "vs in-process batched |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for batching, options in (("on", ("--max-batch", "32", "--max-wait-ms", "5")),
                              ("off", ("--max-batch", "1", "--max-wait-ms", "0"))):
        process, url = start_server(scratch / "gda.safetensors", scratch / f"serve-{batching}.log", *options)
        try:
            for concurrency in (1, 8, 32):
                rate, latency = asyncio.run(load(int(url.rsplit(":", 1)[1]), payloads, concurrency))
                results[batching, concurrency] = rate
                p50, p95, p99 = 1000 * np.percentile(latency, [50, 95, 99])
                print(f"| {concurrency} | {batching} | {rate:,.0f} | {p50:.1f} | {p95:.1f} | {p99:.1f} | "
                      f"{rate / per_call:.2f}x | {rate / batched:.2f}x |", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    for concurrency in (1, 8, 32):
        print(f"\nconcurrency {concurrency}: batching on / off = "
              f"{results['on', concurrency] / results['off', concurrency]:.2f}x", end="")
    print()


if __name__ == "__main__":
    main()
