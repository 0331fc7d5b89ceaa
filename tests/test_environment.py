"""The data path when the environment fights back: a shard of unreadable images, read-only caches
and output folders, write failures, loader workers that cannot deliver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import adaptkit as ak
from adaptkit.data import ImageSet
from adaptkit.features.store import FeatureStore
from adaptkit.results import markdown_tables
from helpers import write_jpegs


def pool_with_a_bad_run(folder: Path) -> ImageSet:
    """Nine images whose middle three (a whole shard of three) cannot be read."""
    paths = write_jpegs(folder, n_classes=1, per_class=9, size=(24, 24))
    for path in paths[3:6]:
        Path(path).write_bytes(b"not an image")
    return ImageSet(paths, [i % 2 for i in range(9)], ["a", "b"], "bad-run")


def test_a_shard_of_unreadable_images_is_stored_empty_and_resumed(tiny, tmp_path, monkeypatch):
    images = pool_with_a_bad_run(tmp_path / "pool")
    options = {"cache_dir": tmp_path / "cache", "on_error": "skip", "shard_size": 3, "batch_size": 3,
               "progress": False, "num_workers": 0}
    store_write = FeatureStore.write_shard
    written = []

    def write_then_stop(self, plan, *args, **kwargs):
        store_write(self, plan, *args, **kwargs)
        written.append(plan.number)
        if plan.number == 1:
            raise KeyboardInterrupt  # killed right after the empty shard was stored

    monkeypatch.setattr(FeatureStore, "write_shard", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ak.extract(tiny, images, **options)
    monkeypatch.setattr(FeatureStore, "write_shard",
                        lambda self, plan, *a, **k: (written.append(plan.number), store_write(self, plan, *a, **k)))
    features = ak.extract(tiny, images, **options)
    assert written == [0, 1, 2], written  # the rerun encoded only the last shard
    kept = [0, 1, 2, 6, 7, 8]
    assert [s["position"] for s in features.metadata["skipped"]] == [3, 4, 5]
    expected = ak.extract(tiny, ImageSet([images.images[i] for i in kept], [i % 2 for i in kept], ["a", "b"], "kept"),
                          cache_dir=False, progress=False)
    torch.testing.assert_close(features.features, expected.features, atol=1e-5, rtol=0)  # other batches
    assert features.labels.tolist() == [0, 1, 0, 0, 1, 0]
    entry = ak.extract(tiny, images, **options, load=False)
    assert [len(f) for f, _, _ in entry.iter_shards()] == [3, 0, 3]


WRITES = ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.unlink", "os.truncate", "shutil.rmtree")


def test_a_finished_entry_is_read_without_any_write(tiny, digits, tmp_path):
    """Looked for before anything is written: the audit hook sees no write under the cache."""
    cache = tmp_path / "cache"
    expected = ak.extract(tiny, digits.few_shot(2, seed=1), cache_dir=cache, progress=False)
    seen = []

    def audit(event, args):
        if not seen_enabled:
            return
        if event == "open" and args[0] is not None and str(args[0]).startswith(str(cache)):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR):
                seen.append((event, args[0]))
        elif event in WRITES and any(str(a).startswith(str(cache)) for a in args if isinstance(a, (str, Path))):
            seen.append((event, args))

    seen_enabled = True
    sys.addaudithook(audit)
    try:
        again = ak.extract(tiny, digits.few_shot(2, seed=1), cache_dir=cache, progress=False)
        entry = ak.extract(tiny, digits.few_shot(2, seed=1), cache_dir=cache, progress=False, load=False)
    finally:
        seen_enabled = False
    assert not seen, seen
    assert torch.equal(again.features, expected.features) and len(entry) == len(expected)


def mount_namespaces() -> bool:
    """Whether this process may mount in a mount namespace of its own (root, unshare present)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None and \
        subprocess.run(["unshare", "--mount", "true"]).returncode == 0


def after_mounting(mounts: str) -> list[str]:
    """A command prefix that runs ``mounts`` (shell) in a private mount namespace, then the rest."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{mounts} && exec \"$@\"", "sh"]


def read_only_run(folder: Path, script: str, **options) -> subprocess.CompletedProcess:
    """Run ``python -c script`` where ``folder`` cannot be written: a read-only bind mount in a
    mount namespace of its own when this process is root (root writes through permissions),
    else the folder's write permissions taken away."""
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        if not mount_namespaces():
            pytest.skip("root without mount namespaces: cannot make a read-only folder")
        command = after_mounting(f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder}") + command
    else:
        for path, _, _ in os.walk(folder):
            os.chmod(path, 0o555)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120, **options)
    finally:
        for path, _, _ in os.walk(folder):
            os.chmod(path, 0o755)


@pytest.mark.slow
def test_a_read_only_cache_serves_its_entries_and_says_what_it_cannot_store(tiny, digits, tmp_path):
    cache = tmp_path / "cache"
    expected = ak.extract(tiny, digits.few_shot(2, seed=1), cache_dir=cache, progress=False)
    np.save(tmp_path / "expected.npy", expected.features.numpy())
    script = textwrap.dedent(f"""
        import numpy as np, adaptkit as ak
        tiny, digits = ak.Backbone(ak.TINY, device="cpu"), ak.datasets.load("digits")
        got = ak.extract(tiny, digits.few_shot(2, seed=1), cache_dir={str(cache)!r}, progress=False)
        assert np.array_equal(got.features.numpy(), np.load({str(tmp_path / "expected.npy")!r}))
        try:
            ak.extract(tiny, digits.few_shot(3, seed=1), cache_dir={str(cache)!r}, progress=False)
        except ValueError as err:
            print("refused:", err)
    """)
    done = read_only_run(cache, script)
    assert done.returncode == 0, done.stderr
    assert f"refused: cache_dir='{cache}' cannot be written" in done.stdout, done.stdout
    assert "digits/train/3shot-seed1 is not among its finished entries" in done.stdout
    assert "a read-only cache serves only the entries it holds" in done.stdout


@pytest.mark.slow
def test_compare_on_a_finished_read_only_folder_prints_its_tables(tmp_path):
    from adaptkit.protocol import compare
    from helpers import small_recipe

    overrides = {"shots": [1], "seeds": [1], "adapters": ["zero_shot", "gda"], "grids": {}}
    finished = compare(small_recipe(tmp_path, **overrides), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from adaptkit.protocol import compare
        from adaptkit.results import markdown_tables
        from helpers import small_recipe
        result = compare(small_recipe(Path({str(tmp_path)!r}), **{overrides!r}), progress=False)
        print(result.writable, result.new_rows, len(result.rows), result.written)
        print(markdown_tables(result.rows))
        try:
            compare(small_recipe(Path({str(tmp_path)!r}), **{{**{overrides!r}, "shots": [1, 2]}}), progress=False)
        except PermissionError as err:
            print("refused:", err)
    """)
    done = read_only_run(tmp_path, script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"False 0 {len(finished.rows)} []"), done.stdout
    assert markdown_tables(finished.rows) in done.stdout
    assert "cannot be written, and 2 row(s) of digits / adaptkit-tiny are not in it" in done.stdout, done.stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before


def _limit_file_size(limit: int):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def extract_in_child(cache: Path, options: str, exception: str = "OSError", prefix: list[str] = (), marker: str = "",
                     **run) -> subprocess.CompletedProcess:
    """``ak.extract`` of the digits test split into ``cache`` with ``options`` (Python keyword
    arguments) in a child process (after ``prefix``), which prints ``<error type> <message>`` of
    an ``exception`` it catches; ``marker`` lands in the child's command line."""
    script = textwrap.dedent(f"""
        # {marker}
        import adaptkit as ak
        from adaptkit.features.pipeline import LoaderFailed
        tiny, digits = ak.Backbone(ak.TINY, device="cpu"), ak.datasets.load("digits")
        try:
            ak.extract(tiny, digits.split("test"), cache_dir={str(cache)!r}, progress=False, {options})
        except {exception} as err:
            print(type(err).__name__, err)
    """)
    return subprocess.run([*prefix, sys.executable, "-c", script], capture_output=True, text=True, **run)


@pytest.mark.slow
def test_loader_workers_without_shared_memory_end_the_run_with_a_message_and_no_process_left(tmp_path):
    """Under ``ulimit -f`` workers cannot get shared memory for a batch: the run ends in seconds."""
    token = f"adaptkit-fsize-{os.getpid()}-{tmp_path.name}"
    done = extract_in_child(tmp_path / "cache", "num_workers=2, batch_size=64", "LoaderFailed", marker=token,
                            timeout=60, preexec_fn=_limit_file_size(64 * 1024))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("LoaderFailed image loading failed in the loader"), (done.stdout, done.stderr)
    assert "num_workers=2" in done.stdout and "Lower num_workers or batch_size" in done.stdout
    assert not _processes_with(token)


@pytest.mark.slow
def test_a_write_that_hits_a_limit_is_an_oserror_naming_the_file(tmp_path):
    """A file-size limit (EFBIG), like a full disk, reaches safetensors as its own error: adaptkit
    names the file in an OSError, and the CLI prints it as one line."""
    done = extract_in_child(tmp_path / "cache", "num_workers=0, shard_size=512", timeout=120,
                            preexec_fn=_limit_file_size(64 * 1024))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OSError cannot write {tmp_path / 'cache' / 'shards'}"), done.stdout
    assert not list((tmp_path / "cache" / "shards").glob("*/*.safetensors"))
    assert not list((tmp_path / "cache" / "shards").glob("*/.*.tmp"))


def test_the_cli_shows_a_write_failure_as_one_line(tmp_path, monkeypatch):
    from safetensors import SafetensorError
    from typer.testing import CliRunner

    import adaptkit.storage
    from adaptkit.cli import app

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(adaptkit.storage, "save_file", full_disk)
    result = CliRunner().invoke(app, ["extract", "digits", "--shots", "1", "--cache-dir", str(tmp_path), "--device",
                                      "cpu", "--workers", "0", "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"adaptkit: error: cannot write {tmp_path / 'shards'}"), lines
    assert "No space left on device" in lines[0]


@pytest.mark.slow
def test_a_full_small_filesystem_gives_an_oserror_naming_the_file(tmp_path):
    """A 40 KiB tmpfs (root, in a mount namespace of its own) fills up during extraction."""
    if not mount_namespaces():
        pytest.skip("mounting a small filesystem needs root and mount namespaces")
    cache = tmp_path / "small"
    cache.mkdir()
    done = extract_in_child(cache, "num_workers=0, shard_size=1024", prefix=after_mounting(
        f"mount -t tmpfs -o size=40k tmpfs {cache}"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OSError cannot write {cache / 'shards'}"), done.stdout
    assert "No space left on device" in done.stdout, done.stdout
