"""``adaptkit extract``: encode a dataset split into the feature cache."""

# The library is imported inside each command, so that `adaptkit --help` and the other commands
# start without it (start-up time).

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import (
    BACKBONE,
    DEVICE,
    PRECISION,
    WORKERS,
    DatasetName,
    Decode,
    Engine,
    OnError,
    Precision,
    Split,
    app,
    command,
    workers_value,
)


@app.command()
@command
def extract(
    dataset: DatasetName = typer.Argument(..., help="dataset name"),
    root: Optional[Path] = typer.Option(None, help="folder holding the dataset (not needed for digits)"),
    split: Split = typer.Option("test", help="train, val or test"),
    backbone: str = BACKBONE,
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag (openai, ...) or a weights file"),
    shots: Optional[int] = typer.Option(None, min=1, help="sample this many images per class first"),
    seed: int = typer.Option(1, min=0, help="few-shot and augmentation seed"),
    views: int = typer.Option(1, min=1, help="augmented views per image (1 = plain preprocessing)"),
    batch_size: int = typer.Option(256, min=1, help="images × views per forward pass"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache (default $ADAPTKIT_CACHE or ~/.cache)"),
    output: Optional[Path] = typer.Option(None, help="also write the features to this file (save_features)"),
    workers: str = WORKERS,
    engine: Engine = typer.Option("local", help="local, or ray (a Ray Data job)"),
    address: Optional[str] = typer.Option(None, help="with --engine ray: the cluster to join (default: local Ray)"),
    decode: Decode = typer.Option("cpu", help="cpu, or gpu (nvjpeg) for JPEG files on a CUDA device"),
    on_error: OnError = typer.Option("raise", help="raise: stop at an unreadable image; skip: leave it out"),
    precision: Precision = PRECISION,
    device: str = DEVICE,
) -> None:
    """Encode a dataset split into the feature cache and print where the features are stored."""
    from ..backbones import Backbone
    from ..data import load
    from ..features import default_cache_dir, save_features
    from ..features import extract as run_extract
    from ..features.store import FeatureStore

    data = load(dataset.value, root=root)
    images = data.few_shot(shots, seed, split=split.value) if shots else data.split(split.value)
    model = Backbone(backbone, pretrained=pretrained, device=device, precision=precision.value)
    features = run_extract(model, images, views=views, seed=seed, batch_size=batch_size, cache_dir=cache_dir,
                           num_workers=workers_value(workers), engine=engine.value, address=address, decode=decode.value,
                           on_error=on_error.value)
    store = FeatureStore(cache_dir or default_cache_dir())
    typer.echo(f"{features.metadata['name']}: features {tuple(features.features.shape)} stored in "
               f"{store.entry_path(features.metadata['key'])}")
    skipped = features.metadata.get("skipped", [])
    if skipped:
        typer.echo(f"{len(skipped)} image(s) skipped, e.g. {skipped[0]['image']}: {skipped[0]['reason']}", err=True)
    if output is not None:
        save_features(features, output)
        typer.echo(f"written to {output}")
