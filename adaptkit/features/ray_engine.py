"""The Ray Data engine of :func:`adaptkit.extract` (``engine="ray"``).

The same pipeline as the local engine, as a Ray Data job: reading and decoding run as CPU tasks,
encoding in an actor pool (one GPU per actor when the cluster has GPUs, else one CPU actor), and
the driver writes the shards in the cache format of the local engine, in image order, so the result
is the same FeatureSet and the same cache entry. With ``address`` it joins a running cluster
(``ray start --head`` or a Ray cluster); without, it starts a local Ray, which stays up for later
calls in the process (``ray.shutdown()`` stops it). Needs the ``ray`` extra.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..data.base import ImageSet
from ..progress import progress_bar
from .pipeline import ShardAssembler, Writer, failure_reason, seeded_views
from .store import ShardPlan

logger = logging.getLogger("adaptkit")


class _Decode:
    """Ray task body: positions -> pixels (b, V, 3, H, W) float32 and error strings."""

    def __init__(self, images: ImageSet, transform, views: int, seed: int, shape: tuple[int, ...]):
        self.images, self.transform, self.views, self.seed, self.shape = images, transform, views, seed, shape

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        positions = batch["position"]
        pixels = np.zeros((len(positions), *self.shape), dtype=np.float32)
        errors = []
        for row, position in enumerate(positions):
            try:
                image = self.images.load(int(position))
                pixels[row] = seeded_views(image, self.transform, self.views, self.seed, int(position)).numpy()
                errors.append("")
            except (ValueError, OSError) as err:
                errors.append(failure_reason(err))
        return {"position": positions, "pixels": pixels, "error": np.asarray(errors, dtype=object)}


class _Encode:
    """Ray actor: rebuilds the backbone once, then encodes batches of pixels."""

    def __init__(self, spec: dict, device: str):
        from ..backbones import Backbone

        self.backbone = Backbone(**spec, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = torch.from_numpy(batch["pixels"])
        n, views = pixels.shape[:2]
        features = self.backbone.encode_batch(pixels.flatten(0, 1)).reshape(n, views, -1).numpy()
        return {"position": batch["position"], "features": features, "error": batch["error"]}


def encode_ray(backbone, images: ImageSet, transform, views: int, seed: int, plans: list[ShardPlan], *,
               batch_size: int, num_workers, on_error: str, decode: str, write: Writer, progress: bool,
               address: str | None = None) -> None:
    """Encode the images of ``plans`` on Ray and ``write`` each shard in order."""
    if not plans:
        return
    try:
        import ray
    except ImportError as err:
        raise ValueError("engine='ray' needs Ray Data: pip install 'adaptkit[ray]'") from err
    if not ray.is_initialized():
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ValueError(f"address={address!r}: cannot start or join a Ray cluster ({err})") from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    positions = np.concatenate([np.arange(p.start, p.stop) for p in plans])
    per_batch = max(1, batch_size // views)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    device = "cuda" if gpus else "cpu"
    height, width = backbone.image_size
    dataset = ray.data.from_numpy(positions).rename_columns({"data": "position"})
    dataset = dataset.map_batches(_Decode, fn_constructor_args=(images, transform, views, seed,
                                                                (views, 3, height, width)),
                                  batch_size=per_batch, num_cpus=1, concurrency=1 if num_workers == 0 else None)
    dataset = dataset.map_batches(_Encode, fn_constructor_args=(backbone.spec, device), batch_size=per_batch,
                                  num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, concurrency=max(1, gpus))
    dim = backbone.embed_dim
    assembler = ShardAssembler(plans, images, (dim,) if views == 1 else (views, dim), on_error, write)
    with progress_bar(total=len(positions), progress=progress, desc=f"encoding {images.name} (ray)",
                      unit="img") as bar:
        for batch in dataset.iter_batches(batch_size=per_batch, batch_format="numpy"):
            for position, features, error in zip(batch["position"], batch["features"], batch["error"]):
                row = torch.from_numpy(np.ascontiguousarray(features))
                assembler.add(int(position), None if error else (row[0] if views == 1 else row), error or None)
            bar.update(len(batch["position"]))
