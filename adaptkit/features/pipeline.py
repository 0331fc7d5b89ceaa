"""Decoding and encoding images in batches: the local engine and optional GPU JPEG decoding.

Loader workers (a torch ``DataLoader``, one process per usable CPU by default) decode and
preprocess; the main process encodes and hands each finished shard to a writer. The views of
image i are drawn from a random stream seeded by (seed, i), so features depend neither on the
batch size nor on the number of workers. With ``decode="gpu"`` workers only read the bytes of JPEG
files, which ``torchvision.io.decode_jpeg`` decodes on the GPU in batches before the backbone's
preprocessing runs there too; other files are decoded on the CPU as usual.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode, v2

from ..data.base import ImageSet
from ..data.decode import ImageDecodeError, is_jpeg
from ..progress import progress_bar
from .store import ShardPlan

MAX_AUTO_WORKERS = 16
LOADER_TIMEOUT_S = 300.0
"""A loader that delivers no batch for this long (s) has lost one: the run ends instead of waiting."""


class LoaderFailed(OSError):
    """Image loading failed outside the per-image handler (a worker's resources, a lost batch)."""


def last_line(err: Exception) -> str:
    """The last non-empty line of an error a worker raised (a DataLoader or Ray error carries the
    worker's whole traceback; its last line says what failed)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def resolve_workers(num_workers: int | str, n_batches: int) -> int:
    """``"auto"``: one loader process per usable CPU (none on a single CPU), at most 16 and at
    most one per batch; an integer is taken as it is."""
    if num_workers == "auto":
        cpus = usable_cpus()
        return 0 if cpus == 1 else min(cpus, MAX_AUTO_WORKERS, max(1, n_batches))
    return int(num_workers)


def seeded_views(image, transform, views: int, seed: int, position: int) -> torch.Tensor:
    """(V, 3, H, W): ``views`` draws of ``transform`` from a stream seeded by (seed, position)."""
    if views == 1:
        return transform(image).unsqueeze(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([seed, position]).generate_state(1)[0]))
        return torch.stack([transform(image) for _ in range(views)])


class ViewsDataset(torch.utils.data.Dataset):
    """Item k -> (position, pixels (V, 3, H, W) or None, jpeg bytes or None, error or None) for
    image ``positions[k]``; decoding errors are returned, not raised, so the engine applies the
    ``on_error`` policy in order."""

    def __init__(self, images: ImageSet, transform, views: int, seed: int, positions: np.ndarray,
                 raw_jpeg: bool = False):
        self.images, self.transform, self.views, self.seed = images, transform, views, seed
        self.positions, self.raw_jpeg = positions, raw_jpeg

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        position = int(self.positions[k])
        try:
            if self.raw_jpeg:
                data = self.images.source.raw(position)
                if is_jpeg(data):
                    return position, None, torch.frombuffer(bytearray(data), dtype=torch.uint8), None
            image = self.images.load(position)
            return position, seeded_views(image, self.transform, self.views, self.seed, position), None, None
        except (ValueError, OSError) as err:
            return position, None, None, failure_reason(err)


def failure_reason(err: Exception) -> str:
    """Why an image could not be read, without the image's name (the caller adds it)."""
    if isinstance(err, ImageDecodeError):
        return err.reason
    if isinstance(err, FileNotFoundError):
        return "file not found"
    return str(err)


def collate(items: list) -> dict[str, Any]:
    """One batch: positions, stacked CPU-decoded pixels, JPEG bytes, errors (in item order).

    In a loader worker the pixels are stacked straight into shared memory, as torch's default
    collate does: when shared memory cannot be had (a full /dev/shm, a file-size limit) the batch
    fails here, where the loader reports it, not later in the queue's feeder thread, where the
    batch would be lost and the main process would wait for it for good."""
    decoded = [pixels for _, pixels, _, _ in items if pixels is not None]
    pixels = None
    if decoded:
        pixels = torch.empty((len(decoded), *decoded[0].shape))
        if torch.utils.data.get_worker_info() is not None:
            pixels.share_memory_()
        torch.stack(decoded, out=pixels)
    return {"positions": [p for p, _, _, _ in items], "kinds": ["pixels" if px is not None else
                                                                 "jpeg" if raw is not None else "error"
                                                                 for _, px, raw, _ in items],
            "pixels": pixels,
            "jpeg": [raw for _, _, raw, _ in items if raw is not None],
            "errors": [err for _, _, _, err in items]}


def gpu_transform(backbone, views: int):
    """The backbone's preprocessing (``views == 1``) or support augmentation as tensor transforms
    for uint8 (3, H, W) images on the GPU."""
    size = backbone.image_size
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(backbone.mean, backbone.std)]
    if views > 1:
        return v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC,
                                                antialias=True), v2.RandomHorizontalFlip(0.5), *finish])
    mode = backbone.preprocess_cfg.get("resize_mode", "shortest")
    if mode == "squash":
        resize = [v2.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)]
    elif mode == "shortest":
        resize = [v2.Resize(min(size), interpolation=InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(size)]
    else:
        raise ValueError(f"decode='gpu' supports the 'shortest' and 'squash' resize modes; {backbone.name} uses "
                         f"{mode!r}: use decode='cpu'")
    return v2.Compose([*resize, *finish])


def decode_gpu(batch: dict[str, Any], backbone, transform, views: int, seed: int) -> list:
    """Decode the batch's JPEG bytes on the GPU and preprocess them there: a list, per JPEG, of
    pixels (V, 3, H, W) or an error string."""
    positions = [p for p, kind in zip(batch["positions"], batch["kinds"]) if kind == "jpeg"]
    try:
        images = decode_jpeg(batch["jpeg"], mode=ImageReadMode.RGB, device=backbone.device)
    except RuntimeError:
        images = []
        for data in batch["jpeg"]:
            try:
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=backbone.device))
            except RuntimeError as err:
                images.append(f"not a JPEG nvjpeg can decode ({err})")
    return [image if isinstance(image, str) else seeded_views(image, transform, views, seed, position)
            for image, position in zip(images, positions)]


Writer = Callable[[ShardPlan, torch.Tensor, torch.Tensor, torch.Tensor, list[dict]], None]


class ShardAssembler:
    """Collects encoded rows in position order and hands each finished shard to ``write``; applies
    the ``on_error`` policy (``"raise"`` stops after the finished shards are written)."""

    def __init__(self, plans: list[ShardPlan], images: ImageSet, row_shape: tuple[int, ...], on_error: str,
                 write: Writer):
        self.plans, self.images, self.row_shape, self.on_error, self.write = plans, images, row_shape, on_error, write
        self.current = 0
        self._reset()

    def _reset(self) -> None:
        self.rows, self.positions, self.skipped = [], [], []

    def add(self, position: int, feature: torch.Tensor | None, error: str | None) -> None:
        plan = self.plans[self.current]
        if not plan.start <= position < plan.stop:
            raise RuntimeError(f"image {position} arrived outside shard [{plan.start}, {plan.stop})")
        if error is not None:
            if self.on_error == "raise":
                raise ValueError(f"cannot read image {self.images.describe(position)}: {error}. {self.current} "
                                 "finished shard(s) are saved; fix or remove the file and run again to continue from "
                                 "them, or pass on_error='skip' to leave unreadable images out")
            self.skipped.append({"position": position, "image": self.images.describe(position), "reason": error})
        else:
            self.rows.append(feature)
            self.positions.append(position)
        if position == plan.stop - 1:
            self._flush(plan)

    def _flush(self, plan: ShardPlan) -> None:
        positions = torch.tensor(self.positions, dtype=torch.int64)
        features = torch.stack(self.rows) if self.rows else torch.empty(0, *self.row_shape)
        labels = torch.from_numpy(self.images.labels[positions.numpy()]) if len(positions) else \
            torch.empty(0, dtype=torch.int64)
        self.write(plan, features, labels, positions, self.skipped)
        self.current += 1
        self._reset()


def encode_local(backbone, images: ImageSet, transform, views: int, seed: int, plans: list[ShardPlan], *,
                 batch_size: int, num_workers: int | str, on_error: str, decode: str, write: Writer,
                 progress: bool) -> None:
    """Encode the images of ``plans`` (in order) and ``write`` each shard as soon as it is done."""
    if not plans:
        return
    positions = np.concatenate([np.arange(p.start, p.stop) for p in plans])
    per_batch = max(1, batch_size // views)
    workers = resolve_workers(num_workers, -(-len(positions) // per_batch))
    cuda = backbone.device.type == "cuda"
    gpu = decode == "gpu"
    if gpu and not cuda:
        raise ValueError("decode='gpu' needs a CUDA backbone; use decode='cpu'")
    loader = torch.utils.data.DataLoader(
        ViewsDataset(images, transform, views, seed, positions, raw_jpeg=gpu), batch_size=per_batch,
        num_workers=workers, collate_fn=collate, pin_memory=cuda, prefetch_factor=4 if workers else None,
        timeout=LOADER_TIMEOUT_S if workers else 0)
    dim = backbone.embed_dim
    assembler = ShardAssembler(plans, images, (dim,) if views == 1 else (views, dim), on_error, write)
    device_transform = gpu_transform(backbone, views) if gpu else None
    with progress_bar(total=len(positions), progress=progress, desc=f"encoding {images.name}", unit="img") as bar:
        for batch in _batches(loader, workers, per_batch, assembler):
            pixels = batch["pixels"]
            gpu_items = decode_gpu(batch, backbone, device_transform, views, seed) if gpu else []
            decoded = [p for p in gpu_items if not isinstance(p, str)]
            stacks = ([pixels.to(backbone.device, non_blocking=True)] if pixels is not None else []) + \
                ([torch.stack(decoded)] if decoded else [])
            encoded = backbone.encode_batch(torch.cat(stacks).flatten(0, 1)).reshape(-1, views, dim) if stacks else None
            cpu_rows = 0 if pixels is None else pixels.shape[0]
            next_cpu, next_gpu, next_decoded = 0, 0, 0
            for position, kind, error in zip(batch["positions"], batch["kinds"], batch["errors"]):
                if kind == "pixels":
                    row, next_cpu = encoded[next_cpu], next_cpu + 1
                elif kind == "jpeg":
                    item, next_gpu = gpu_items[next_gpu], next_gpu + 1
                    if isinstance(item, str):
                        assembler.add(position, None, item)
                        continue
                    row, next_decoded = encoded[cpu_rows + next_decoded], next_decoded + 1
                else:
                    assembler.add(position, None, error)
                    continue
                assembler.add(position, row[0] if views == 1 else row, None)
            bar.update(len(batch["positions"]))


def _batches(loader, workers: int, per_batch: int, assembler: ShardAssembler):
    """The loader's batches; a failure outside the per-image handler (a worker that cannot get
    shared memory, a lost batch) ends the run with :class:`LoaderFailed`, saying what failed."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as err:
            raise LoaderFailed(f"image loading failed in the loader ({last_line(err)}) with num_workers={workers} and "
                               f"{per_batch} images per batch; {assembler.current} finished shard(s) are saved. "
                               "Lower num_workers or batch_size (num_workers=0 decodes in this process), or give "
                               "the workers more shared memory (/dev/shm) and file size (ulimit -f)") from None
        yield batch
