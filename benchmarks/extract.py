"""Extraction throughput, crash-resume saving and out-of-core index memory, against references
measured in the same run.

On a folder of synthetic photo-sized JPEGs (generated once under --folder):
  (a) decode + preprocess in one process, images/s;
  (b) the bare forward pass on preprocessed batches, images/s;
  (i) an ideal all-core pipeline: a torch DataLoader with one worker per usable CPU feeding the
      forward pass, with nothing else (no cache, no shards, no hashing);
  (c) ``ak.extract`` with default arguments (fresh cache);
  (d) ``ak.extract(engine="ray")`` on a local Ray it starts (start-up included).
It prints (c)/(i) (acceptance: >= 0.9) and (c)/min(a x CPUs, b), the bound when decoding and the
forward pass do not compete for the same cores (a GPU machine). Then it kills an extraction with
SIGKILL once 60 % of its shards are on disk, times the rerun against a full run and checks the
features bit for bit. Last, it builds an out-of-core IVF index over synthetic sharded stores of two
sizes and reports the anonymous memory the build adds (mapped index files excluded: the kernel
pages them out) next to the size of each pool in float32.

  python benchmarks/extract.py [--images 2000] [--backbone adaptkit-tiny] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import adaptkit as ak
from adaptkit.data.decode import load_image
from adaptkit.features.pipeline import usable_cpus


def make_folder(folder: Path, n_images: int, size=(500, 375), classes: int = 10) -> list[str]:
    """Photo-like JPEGs (smooth colour fields + texture), quality 90, about 60 KB each."""
    from PIL import Image

    paths = [folder / f"class_{i % classes:02d}" / f"{i:06d}.jpg" for i in range(n_images)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"writing {len(missing)} JPEGs of {size[0]}x{size[1]} under {folder}")
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for path in missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0.005, 0.03, 3)
        base = np.stack([np.sin(a * xx + rng.uniform(0, 6)), np.cos(b * yy + rng.uniform(0, 6)),
                         np.sin(c * (xx + yy))], -1)
        pixels = 127 + 80 * base + rng.normal(0, 12, (h, w, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return [str(p) for p in paths]


def image_set(paths: list[str], classes: int = 10) -> ak.datasets.ImageSet:
    labels = [int(Path(p).parent.name.split("_")[1]) for p in paths]
    return ak.datasets.ImageSet(paths, labels, [f"class {i}" for i in range(classes)], "benchmark/jpegs")


class Decoded(torch.utils.data.Dataset):
    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.preprocess(load_image(self.paths[i]))


def rate(n: int, seconds: float) -> float:
    return n / seconds


def decode_one_process(bb, paths) -> float:
    subset = paths[: min(len(paths), 400)]
    start = time.perf_counter()
    for path in subset:
        bb.preprocess(load_image(path))
    return rate(len(subset), time.perf_counter() - start)


def bare_forward(bb, batch_size: int, n: int) -> float:
    pixels = torch.randn(batch_size, 3, *bb.image_size)
    bb.encode_batch(pixels)
    start, done = time.perf_counter(), 0
    while done < n:
        bb.encode_batch(pixels)
        done += batch_size
    return rate(done, time.perf_counter() - start)


def ideal_pipeline(bb, paths, batch_size: int) -> tuple[float, torch.Tensor]:
    loader = torch.utils.data.DataLoader(Decoded(paths, bb.preprocess), batch_size=batch_size,
                                         num_workers=usable_cpus(), pin_memory=bb.device.type == "cuda")
    start = time.perf_counter()
    features = torch.cat([bb.encode_batch(batch) for batch in loader])
    return rate(len(paths), time.perf_counter() - start), features


def timed_extract(bb, images, cache: Path, **options) -> tuple[float, ak.FeatureSet]:
    start = time.perf_counter()
    features = ak.extract(bb, images, cache_dir=cache, progress=False, **options)
    return time.perf_counter() - start, features


def child(folder: str, cache: str, n_images: int, backbone: str, device: str, shard_size: int) -> None:
    """The extraction the parent kills."""
    bb = ak.Backbone(backbone, device=device)
    ak.extract(bb, image_set(make_folder(Path(folder), n_images)), cache_dir=cache, shard_size=shard_size,
               progress=False)


def shards_on_disk(cache: Path) -> int:
    return sum(1 for _ in cache.rglob("shards/*/*.safetensors"))


def resume_saving(bb, paths, folder: Path, args, scratch: Path) -> None:
    images = image_set(paths)
    shard_size = 256
    n_shards = -(-len(paths) // shard_size)
    full_seconds, reference = timed_extract(bb, images, scratch / "full", shard_size=shard_size)
    cache = scratch / "killed"
    process = subprocess.Popen([sys.executable, __file__, "--child", str(folder), str(cache), str(len(paths)),
                                args.backbone, args.device, str(shard_size)])
    target = int(np.ceil(0.6 * n_shards))
    while shards_on_disk(cache) < target and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    kept = shards_on_disk(cache)
    resume_seconds, resumed = timed_extract(bb, images, cache, shard_size=shard_size)
    identical = torch.equal(resumed.features, reference.features) and torch.equal(resumed.labels, reference.labels)
    print(f"\nresume after SIGKILL with {kept}/{n_shards} shards on disk: rerun {resume_seconds:.2f} s vs full run "
          f"{full_seconds:.2f} s -> {resume_seconds / full_seconds:.2f}x (acceptance <= 0.7x); "
          f"features bit-identical: {identical}")


BUILD_INDEX = """
import sys, threading, time
sys.path.insert(0, {here!r})
from extract import synthetic_entry
from adaptkit.support import SupportIndex

def anonymous_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0

entry = synthetic_entry({root!r}, {rows}, {dim})
peak, done = [anonymous_kib()], []
start = peak[0]

def watch():
    while not done:
        peak[0] = max(peak[0], anonymous_kib())
        time.sleep(0.005)

watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
index = SupportIndex.from_entry(entry, {lists!r}, "ivf_flat", nlist=1024, nprobe=16, train_size=32768)
done.append(True)
watcher.join()
print(start, peak[0], len(index))
"""


def out_of_core_memory(rows: int, dim: int, scratch: Path) -> None:
    """Anonymous memory (heap, not mapped files) added while building an on-disk IVF index over a
    synthetic store, at two pool sizes, each in a fresh process after the store is written."""
    here = str(Path(__file__).parent)
    for n in (rows // 2, rows):
        root, lists = str(scratch / f"store-{n}"), str(scratch / f"lists-{n}")
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); from extract import "
                        f"synthetic_entry; synthetic_entry({root!r}, {n}, {dim})"], check=True)
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", BUILD_INDEX.format(here=here, root=root, rows=n, dim=dim,
                                                                        lists=lists)],
                             capture_output=True, text=True, check=True).stdout.split()
        before_kib, peak_kib, size = (int(v) for v in out[-3:])
        pool_mib = n * dim * 4 / 2 ** 20
        print(f"out-of-core IVF over {size:,} x {dim} features ({pool_mib:.0f} MiB as float32): anonymous memory "
              f"+{(peak_kib - before_kib) / 1024:.0f} MiB while building ({(peak_kib - before_kib) / 1024 / pool_mib:.2f}"
              f"x the pool), {time.perf_counter() - start:.0f} s")


def synthetic_entry(root: str, rows: int, dim: int, shard_rows: int = 65536):
    """A stored entry of random unit vectors, written shard by shard (never all in memory)."""
    from adaptkit.features import FeatureEntry
    from adaptkit.features.store import FeatureStore, ShardPlan

    store = FeatureStore(root)
    key = f"synthetic-{rows}-{dim}"
    manifest = store.read_manifest(key)
    if manifest is None:
        plans = []
        generator = torch.Generator().manual_seed(0)
        for number, start in enumerate(range(0, rows, shard_rows)):
            stop = min(rows, start + shard_rows)
            plan = ShardPlan(number, start, stop, f"{key}-{number:05d}")
            block = torch.nn.functional.normalize(torch.randn(stop - start, dim, generator=generator), dim=-1)
            store.write_shard(plan, block, torch.zeros(stop - start, dtype=torch.int64),
                              torch.arange(start, stop), [], "float16")
            plans.append(plan)
        store.publish(key, plans, {"shape": [rows, dim], "dtype": "float16", "classnames": ["pool"], "skipped": [],
                                   "metadata": {"name": key}})
        manifest = store.read_manifest(key)
    return FeatureEntry(store, key, manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "adaptkit-bench-jpegs"))
    parser.add_argument("--backbone", default="adaptkit-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pool-rows", type=int, default=500_000, help="rows of the out-of-core index pool")
    parser.add_argument("--pool-dim", type=int, default=256)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, cache, n, backbone, device, shard_size = args.child
        child(folder, cache, int(n), backbone, device, int(shard_size))
        return
    torch.manual_seed(0)
    folder = Path(args.folder)
    paths = make_folder(folder, args.images)
    bb = ak.Backbone(args.backbone, device=args.device)
    cpus = usable_cpus()
    print(f"{len(paths)} JPEGs 500x375, {bb.name} on {bb.device}, {cpus} usable CPUs, batch {args.batch_size}")
    a = decode_one_process(bb, paths)
    b = bare_forward(bb, args.batch_size, min(len(paths), 2048))
    with tempfile.TemporaryDirectory(prefix="adaptkit-bench-") as scratch:
        scratch = Path(scratch)
        ideal, ideal_features = ideal_pipeline(bb, paths, args.batch_size)
        seconds, extracted = timed_extract(bb, image_set(paths), scratch / "default")
        c = rate(len(paths), seconds)
        same = float((extracted.features - ideal_features).abs().max())
        rows = [("(a) decode + preprocess, one process", a), ("(b) bare forward, preprocessed batches", b),
                (f"(i) ideal DataLoader pipeline, {cpus} workers", ideal), ("(c) ak.extract, defaults", c)]
        if not args.skip_ray:
            ray_seconds, ray_features = timed_extract(bb, image_set(paths), scratch / "ray", engine="ray")
            rows.append(("(d) ak.extract(engine='ray'), start-up included", rate(len(paths), ray_seconds)))
            ray_same = float((ray_features.features - extracted.features).abs().max())
        print("\n| pipeline | images/s |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value:,.0f} |")
        print(f"\n(c) / (i) = {c / ideal:.2f} (acceptance >= 0.9); max |features(c) - features(i)| = {same:.1e}")
        print(f"(c) / min(a x {cpus}, b) = {c / min(a * cpus, b):.2f} (on a CPU-only machine the forward pass "
              "shares the cores with decoding, so this bound is not reachable there)")
        if not args.skip_ray:
            print(f"max |features(d) - features(c)| = {ray_same:.1e}")
        resume_saving(bb, paths, folder, args, scratch)
        print()
        out_of_core_memory(args.pool_rows, args.pool_dim, scratch)
    print(f"\n(process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
