"""What is safe to run at once: extraction into one cache, compare on one output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import write_jpegs

EXTRACT = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import adaptkit as ak
    from adaptkit.data import ImageSet
    paths = sys.argv[1].split("\\n")
    images = ImageSet(paths, [int(p.split("class_")[1].split("/")[0]) for p in paths], ["a", "b", "c"], "shared")
    bb = ak.Backbone(ak.TINY, device="cpu")
    encoded = [0]
    original = bb.encode_batch
    started, release = sys.argv[3] + ".started", sys.argv[4]
    def counted(pixels):
        # The encoding process holds its first batch until the test has seen the other one wait.
        if encoded[0] == 0:
            open(started, "w").close()
            deadline = time.time() + 120
            while not os.path.exists(release) and time.time() < deadline:
                time.sleep(0.05)
        encoded[0] += pixels.shape[0]
        return original(pixels)
    bb.encode_batch = counted
    fs = ak.extract(bb, images, cache_dir=sys.argv[2], batch_size=8, num_workers=0, progress=False)
    np.save(sys.argv[3] + ".npy", fs.features.numpy())
    open(sys.argv[3] + ".json", "w").write(json.dumps({"encoded": encoded[0]}))
""")


@pytest.mark.slow
def test_two_processes_extracting_one_set_encode_it_once(tmp_path):
    paths = write_jpegs(tmp_path / "img", n_classes=3, per_class=20)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    release = tmp_path / "release"
    children, logs = [], [tmp_path / "first.log", tmp_path / "second.log"]

    def start(name, log):
        with open(log, "w") as stderr:
            return subprocess.Popen([sys.executable, "-c", EXTRACT, "\n".join(paths), str(cache),
                                     str(tmp_path / name), str(release)], env=env, stderr=stderr)

    def wait_for(condition, what):
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline and all(c.poll() in (None, 0) for c in children), \
                (what, [log.read_text() for log in logs if log.exists()])
            time.sleep(0.05)

    children.append(start("first", logs[0]))
    wait_for(lambda: (tmp_path / "first.started").exists(), "the first process to start encoding")
    children.append(start("second", logs[1]))
    wait_for(lambda: "waiting for another process" in logs[1].read_text(), "the second process to wait")
    release.touch()
    for child in children:
        child.wait(timeout=300)
    errors = [log.read_text() for log in logs]
    assert [child.returncode for child in children] == [0, 0], errors
    counts = [json.loads((tmp_path / f"{name}.json").read_text())["encoded"] for name in ("first", "second")]
    assert counts == [len(paths), 0]
    first, second = np.load(tmp_path / "first.npy"), np.load(tmp_path / "second.npy")
    assert np.array_equal(first, second)


@pytest.mark.slow
def test_two_compare_runs_on_one_folder_leave_one_row_per_key(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
output = "{tmp_path / 'out'}"
cache_dir = "{tmp_path / 'cache'}"
shots = [1, 2]
seeds = [1, 2, 3]
views = 2
adapters = ["zero_shot", "gda", "tip_adapter", "linear_probe"]
[grids.tip_adapter]
beta = [1.0, 5.0]
alpha = [0.5, 2.0]
[[datasets]]
name = "digits"
[[backbones]]
name = "adaptkit-tiny"
""")
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    runs = []
    for _ in range(2):
        runs.append(subprocess.Popen([sys.executable, "-m", "adaptkit.cli", "compare", str(recipe), "--quiet"],
                                     env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(2)
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    keys = [tuple(json.loads(line)[k] for k in ("dataset", "adapter", "shots", "seed")) for line in lines]
    assert len(keys) == len(set(keys)) == 4 * 2 * 3
    assert "(0 new)" in outputs[1][0] or "(0 new)" in outputs[0][0]
