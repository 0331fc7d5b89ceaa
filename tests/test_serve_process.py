"""`adaptkit serve` as a process: bounded memory over 10,000 mixed requests, SIGTERM finishes the
requests in flight, off-loopback binding needs a key. Loopback only, bounded in requests and time."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from helpers import free_port, raw_request, replay, save_digits_adapter, write_jpegs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    return save_digits_adapter(tmp_path_factory.mktemp("adapter") / "gda.safetensors")


def start(adapter_file, *options):
    """The server as a process; its log goes to a file (a pipe nobody reads would fill and block it)."""
    port = free_port()
    log = open(adapter_file.parent / f"serve-{port}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "adaptkit.cli", "serve", str(adapter_file), "--port", str(port),
                                "--device", "cpu", *options], stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"the server did not start: {open(log.name).read()}")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_memory_after_ten_thousand_mixed_requests_stays_within_ten_percent(adapter_file, tmp_path):
    jpeg = open(write_jpegs(tmp_path, n_classes=1, per_class=1, size=(48, 48))[0], "rb").read()
    process, url = start(adapter_file)
    rng = random.Random(0)
    endpoint, requests = f"{url}/v1/classify", []
    for _ in range(10_000):
        kind = rng.random()
        if kind < 0.6:
            requests.append(raw_request(endpoint, files=[("images", ("a.jpg", jpeg, "image/jpeg"))]))
        elif kind < 0.75:
            junk = rng.randbytes(rng.randint(0, 300))
            requests.append(raw_request(endpoint, files=[("images", ("j.jpg", junk, "image/jpeg"))]))
        elif kind < 0.85:
            requests.append(raw_request(endpoint, files=[("images", ("a.jpg", jpeg, "image/jpeg"))],
                                        data={"top_k": "zero"}))
        else:
            requests.append(raw_request(endpoint, content=b"{}", headers={"Content-Type": "application/json"}))
    port = int(url.rsplit(":", 1)[1])
    try:
        statuses = replay(port, requests[:1000], concurrency=16)
        after_1000 = rss_kib(process.pid)
        statuses += replay(port, requests[1000:], concurrency=16)
        after_10000 = rss_kib(process.pid)
        assert len(statuses) == 10_000 and min(statuses) >= 200 and max(statuses) < 500, sorted(set(statuses))
        assert statuses.count(200) >= 5000
        assert after_10000 <= 1.10 * after_1000, (after_1000, after_10000)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_sigterm_finishes_the_requests_in_flight_then_exits(adapter_file, tmp_path):
    jpeg = open(write_jpegs(tmp_path, n_classes=1, per_class=1, size=(48, 48))[0], "rb").read()
    process, url = start(adapter_file, "--max-wait-ms", "1500", "--max-batch", "64")
    answers = []
    request = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{url}/v1/classify", files=[("images", ("a.jpg", jpeg, "image/jpeg"))], timeout=30)))
    request.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    request.join(timeout=30)
    assert answers and answers[0].status_code == 200 and "top" in answers[0].json()["results"][0]
    # uvicorn shuts down gracefully, then re-raises the signal, so the exit status is SIGTERM's
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    log = next(adapter_file.parent.glob(f"serve-{url.rsplit(':', 1)[1]}.log")).read_text()
    assert "Waiting for application shutdown" in log and "Finished server process" in log


def test_binding_off_loopback_without_a_key_is_refused_before_anything_starts(adapter_file, tmp_path):
    done = subprocess.run([sys.executable, "-m", "adaptkit.cli", "serve", str(adapter_file), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "requires an API key" in done.stderr and "Traceback" not in done.stderr
    short = tmp_path / "key.txt"
    short.write_text("short\n")
    from typer.testing import CliRunner

    from adaptkit.cli import app

    result = CliRunner().invoke(app, ["serve", str(adapter_file), "--api-key-file", str(short)])
    assert result.exit_code == 1 and "at least 16 characters" in result.output, result.output
    assert os.environ.get("ADAPTKIT_SERVE_NEVER_BOUND") is None
