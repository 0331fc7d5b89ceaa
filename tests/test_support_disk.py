"""The out-of-core support index as one versioned build on disk: a killed or failed rebuild never
touches the index in use, every damaged file is refused by name, the folder is stored absolute."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import adaptkit as ak
import adaptkit.index_build
from adaptkit.support import SupportIndex

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = ak.datasets.ImageSet(rng.integers(0, 255, (600, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 600),
                                  ["a", "b", "c"], "pool")
    cache = tmp_path_factory.mktemp("cache")
    return ak.extract(ak.Backbone(ak.TINY, device="cpu"), images, cache_dir=cache, load=False, shard_size=128,
                      progress=False)


def build(entry, folder):
    return SupportIndex.from_entry(entry, folder, "ivf_flat", nlist=6, nprobe=6, train_size=300)


@pytest.fixture
def saved(entry, tmp_path):
    index = build(entry, tmp_path / "lists")
    index.save(tmp_path / "pool.st")
    queries = entry.load().features[::40]
    return tmp_path / "pool.st", queries, index.search(queries, 5), Path(index.lists_folder)


def answers(path, queries):
    index = SupportIndex.load(path)
    similarities, positions = index.search(queries, 5)
    return similarities, positions, np.asarray(index.labels)[positions.numpy()]


KILL_POINTS = {
    "block writes": ("faiss", "write_index"),
    "the merge": ("adaptkit.index_build", "merge_ondisk"),
    "after the merge": ("adaptkit.index_build", "describe_files"),
    "label and id files": ("numpy.lib.format", "open_memmap"),
}


@pytest.mark.parametrize("step", list(KILL_POINTS))
def test_a_rebuild_killed_at_any_step_leaves_the_saved_index_answering_as_before(entry, saved, tmp_path, monkeypatch,
                                                                                 step):
    path, queries, (similarities, positions), _ = saved
    before = answers(path, queries)
    module, name = KILL_POINTS[step]
    target = {"faiss": faiss, "adaptkit.index_build": adaptkit.index_build, "numpy.lib.format": np.lib.format}[module]
    real = getattr(target, name)
    calls = []

    def killed(*args, **kwargs):
        calls.append(name)
        if len(calls) == 2 or name in ("merge_ondisk", "describe_files"):
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, killed)
    with pytest.raises(KeyboardInterrupt):
        build(entry, tmp_path / "lists")
    monkeypatch.undo()
    after = answers(path, queries)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1]) and np.array_equal(after[2], before[2])
    SupportIndex.load(path).verify()
    rebuilt = build(entry, tmp_path / "lists")
    assert torch.equal(rebuilt.search(queries, 5)[1], positions)
    assert len([b for b in (tmp_path / "lists").iterdir() if (b / "COMPLETE").exists()]) == 2


def damage(kind: str, build: Path, other: Path) -> Path:
    if kind == "a changed label":
        labels = np.load(build / "labels.npy", mmap_mode="r+")
        labels[7] = (labels[7] + 1) % 3
        labels.flush()
        return build / "labels.npy"
    if kind == "flipped list bytes":
        with open(build / "lists.ivfdata", "r+b") as handle:
            handle.seek(os.path.getsize(build / "lists.ivfdata") // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0x40]))
        return build / "lists.ivfdata"
    name = {"a truncated list file": "lists.ivfdata", "a truncated labels file": "labels.npy",
            "a truncated ids file": "ids.npy"}.get(kind)
    if name:
        os.truncate(build / name, os.path.getsize(build / name) // 2)
        return build / name
    for name in ("lists.ivfdata", "labels.npy", "ids.npy"):  # another build's files: any may be named
        shutil.copy(other / name, build / name)
    return build


DAMAGES = ["a changed label", "flipped list bytes", "a truncated list file", "a truncated labels file",
           "a truncated ids file", "another build's files"]


@pytest.mark.parametrize("kind", DAMAGES)
def test_each_damage_is_refused_naming_the_file_and_no_process_dies(entry, saved, tmp_path, kind):
    path, queries, _, folder = saved
    other = None
    if kind == "another build's files":  # an index of other features of the same size
        rng = np.random.default_rng(1)
        images = ak.datasets.ImageSet(rng.integers(0, 255, (600, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 600),
                                      ["a", "b", "c"], "other pool")
        other = build(ak.extract(ak.Backbone(ak.TINY, device="cpu"), images, cache_dir=tmp_path / "cache", load=False,
                                 shard_size=128, progress=False), tmp_path / "other")
    damaged = damage(kind, folder, Path(other.lists_folder) if other else None)
    named = f"{damaged}{os.sep}" if damaged.is_dir() else f"{damaged} "
    if kind == "a truncated list file":  # memory-mapped: a check that failed would be a SIGBUS, so in a child
        np.save(tmp_path / "queries.npy", queries.numpy())
        script = f"""
import numpy as np, torch
from adaptkit.support import SupportIndex
try:
    SupportIndex.load({str(path)!r}).search(torch.from_numpy(np.load({str(tmp_path / "queries.npy")!r})), 5)
    print("served")
except ValueError as err:
    print("refused:", err)
"""
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (done.returncode, done.stderr)
        assert done.stdout.startswith(f"refused: support index file {named}"), done.stdout
        return
    with pytest.raises(ValueError) as refused:
        index = SupportIndex.load(path)
        index.verify()
    assert str(refused.value).startswith(f"support index file {named}"), refused.value


def test_a_relative_folder_is_stored_absolute_and_loads_from_anywhere(entry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = build(entry, "lists")
    index.save("pool.st")
    queries = entry.load().features[::50]
    expected = index.search(queries, 5)[1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = SupportIndex.load(tmp_path / "pool.st")
    assert Path(loaded.lists_folder).is_absolute() and Path(loaded.lists_folder).parent == tmp_path / "lists"
    assert torch.equal(loaded.search(queries, 5)[1], expected)


def test_a_killed_builds_folder_is_removed_by_a_later_build_once_stale(entry, tmp_path, monkeypatch):
    monkeypatch.setattr(adaptkit.index_build, "merge_ondisk", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build(entry, tmp_path / "lists")
    monkeypatch.undo()
    (killed,) = list((tmp_path / "lists").iterdir())
    assert not (killed / "COMPLETE").exists()
    build(entry, tmp_path / "lists")
    assert killed.exists()  # young: perhaps a build still running elsewhere
    os.utime(killed, (1, 1))
    fresh = build(entry, tmp_path / "lists")
    assert not killed.exists()
    marker = json.loads((Path(fresh.lists_folder) / "COMPLETE").read_text())
    assert marker["files"] == fresh.lists_files and set(marker["files"]) == {"lists.ivfdata", "labels.npy", "ids.npy"}


def test_support_verify_checks_the_whole_build_from_the_cli(saved):
    from typer.testing import CliRunner

    from adaptkit.cli import app

    path, _, _, folder = saved
    result = CliRunner().invoke(app, ["support", "verify", str(path)])
    assert result.exit_code == 0 and f"build folder {folder}: every file matches" in result.output, result.output
    damage("flipped list bytes", folder, None)
    result = CliRunner().invoke(app, ["support", "verify", str(path)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"adaptkit: error: support index file {folder / 'lists.ivfdata'} does not match")


def test_a_failed_write_during_a_build_is_an_oserror_naming_the_build(entry, saved, tmp_path, monkeypatch):
    path, queries, (_, positions), _ = saved

    def full_disk(*args):
        raise RuntimeError("Error in faiss::FileIOWriter: fwrite failed: No space left on device")

    monkeypatch.setattr(faiss, "write_index", full_disk)
    with pytest.raises(OSError, match=rf"cannot write the support index build {tmp_path / 'lists'}/build-\S+: Error "
                                      r"in faiss::FileIOWriter: fwrite failed: No space left on device; .* every "
                                      r"earlier build is untouched"):
        build(entry, tmp_path / "lists")
    monkeypatch.undo()
    assert torch.equal(SupportIndex.load(path).search(queries, 5)[1], positions)
