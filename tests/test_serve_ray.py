"""Ray Serve: the same app on two local replicas answers like the local server (127.0.0.1 only)."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from helpers import free_port, save_digits_adapter, write_jpegs

pytestmark = pytest.mark.slow


def test_two_ray_serve_replicas_answer_like_the_predictor(tmp_path):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from adaptkit.serve import ServeConfig, load_predictor
    from adaptkit.serve.ray_serve import deployment

    path = save_digits_adapter(tmp_path / "gda.safetensors", alpha=10.0)
    model, sha256 = load_predictor(path, device="cpu")
    images = write_jpegs(tmp_path / "imgs", n_classes=2, per_class=3, size=(40, 40))
    expected = model.predict_proba(images)
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(deployment(path, device="cpu", config=ServeConfig(max_wait_ms=2.0), replicas=2), name="adaptkit",
                  route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/healthz", timeout=5).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert httpx.get(f"{url}/v1/model", timeout=30).json()["adapter_sha256"] == sha256
        got = []
        for image in images:
            answer = httpx.post(f"{url}/v1/classify", files=[("images", ("x.jpg", open(image, "rb").read()))],
                                data={"top_k": "10"}, timeout=60).json()
            by_name = {e["class"]: e["probability"] for e in answer["results"][0]["top"]}
            got.append([by_name[c] for c in model.classnames])
        assert np.abs(np.array(got) - expected).max() <= 1e-6
        bad = httpx.post(f"{url}/v1/classify", data={"top_k": "0"}, files=[("images", ("x.jpg", b"junk"))], timeout=60)
        assert bad.status_code == 422 and bad.json()["field"] == "top_k"
        states = serve.status().applications["adaptkit"].deployments["AdaptkitReplica"].replica_states
        assert states.get("RUNNING") == 2, states
    finally:
        serve.shutdown()
        ray.shutdown()
