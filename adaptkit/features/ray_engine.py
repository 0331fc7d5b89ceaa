"""The Ray Data engine of :func:`adaptkit.extract` (``engine="ray"``).

The same pipeline as the local engine, as a Ray Data job: reading and decoding run as CPU tasks
(``num_workers`` caps how many run at once),
encoding in an actor pool (one GPU per actor when the cluster has GPUs, else one CPU actor), and
the driver writes the shards in the cache format of the local engine, in image order, so the result
is the same FeatureSet and the same cache entry. With ``address`` it joins a running cluster
(``ray start --head`` or a Ray cluster); without, it starts a local Ray, which stays up for later
calls in the process (``ray.shutdown()`` stops it). An ``address`` other than the cluster Ray
already runs on in the process is refused: joining another needs ``ray.shutdown()`` first. Needs
the ``ray`` extra.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..backbones import Backbone
from ..data.base import ImageSet
from ..progress import progress_bar
from .pipeline import LoaderFailed, ShardAssembler, Writer, failure_reason, last_line, seeded_views
from .store import ShardPlan

logger = logging.getLogger("adaptkit")


def _decode(batch: dict[str, np.ndarray], images: ImageSet, transform, views: int, seed: int,
            shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Ray task body: positions -> pixels (b, V, 3, H, W) float32 and error strings."""
    positions = batch["position"]
    pixels = np.zeros((len(positions), *shape), dtype=np.float32)
    errors = []
    for row, position in enumerate(positions):
        try:
            image = images.load(int(position))
            pixels[row] = seeded_views(image, transform, views, seed, int(position)).numpy()
            errors.append("")
        except (ValueError, OSError) as err:
            errors.append(failure_reason(err))
    return {"position": positions, "pixels": pixels, "error": np.asarray(errors, dtype=object)}


class _Encode:
    """Ray actor: rebuilds the backbone once, then encodes batches of pixels."""

    def __init__(self, spec: dict, device: str):
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
        import ray  # an optional dependency (the ray extra)
    except ImportError as err:
        raise ValueError("engine='ray' needs Ray Data: pip install 'adaptkit[ray]'") from err
    if not ray.is_initialized():
        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ValueError(f"address={address!r}: cannot start or join a Ray cluster ({err})") from None
    elif address not in (None, "auto"):
        running = ray.get_runtime_context().gcs_address
        if address.removeprefix("ray://") != running:
            raise ValueError(f"address={address!r}: Ray already runs in this process, connected to {running}; call "
                             "ray.shutdown() first to join another cluster, or pass address=None to use the "
                             "running one")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    positions = np.concatenate([np.arange(p.start, p.stop) for p in plans])
    per_batch = max(1, batch_size // views)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    device = "cuda" if gpus else "cpu"
    height, width = backbone.image_size
    dataset = ray.data.from_numpy(positions).rename_columns({"data": "position"})
    tasks = ray.data.TaskPoolStrategy(size=None if num_workers == "auto" else max(1, int(num_workers)))
    dataset = dataset.map_batches(_decode, fn_kwargs={"images": images, "transform": transform, "views": views,
                                                      "seed": seed, "shape": (views, 3, height, width)},
                                  batch_size=per_batch, num_cpus=1, compute=tasks)
    # Resources unlike the decoding tasks' keep Ray from fusing decoding into the encoder actor.
    dataset = dataset.map_batches(_Encode, fn_constructor_args=(backbone.spec, device), batch_size=per_batch,
                                  num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 0.5,
                                  compute=ray.data.ActorPoolStrategy(size=max(1, gpus)))
    dim = backbone.embed_dim
    assembler = ShardAssembler(plans, images, (dim,) if views == 1 else (views, dim), on_error, write)
    ray_data_logs = logging.getLogger("ray.data")
    level = ray_data_logs.level
    ray_data_logs.setLevel(logging.ERROR)
    try:
        _drain(dataset, assembler, per_batch, views, len(positions), images.name, progress)
    except ray.exceptions.RayError as err:  # a task or actor failed outside the per-image handler
        raise LoaderFailed(f"the Ray job failed ({last_line(err)}); "
                           f"{assembler.current} finished shard(s) are saved and a rerun continues from them") from None
    finally:
        ray_data_logs.setLevel(level)


def _drain(dataset, assembler: ShardAssembler, per_batch: int, views: int, total: int, name: str,
           progress: bool) -> None:
    """Feed the job's output, in image order, to the shard assembler."""
    with progress_bar(total=total, progress=progress, desc=f"encoding {name} (ray)", unit="img") as bar:
        for batch in dataset.iter_batches(batch_size=per_batch, batch_format="numpy"):
            for position, features, error in zip(batch["position"], batch["features"], batch["error"]):
                row = torch.from_numpy(np.array(features, dtype=np.float32))
                assembler.add(int(position), None if error else (row[0] if views == 1 else row), error or None)
            bar.update(len(batch["position"]))
