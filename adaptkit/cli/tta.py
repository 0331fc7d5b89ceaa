"""``adaptkit tta``: a test-time method on a streamed split."""

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
    Condense,
    DatasetName,
    Method,
    Precision,
    Split,
    app,
    command,
    workers_value,
)


@app.command()
@command
def tta(
    dataset: DatasetName = typer.Argument("digits", help="digits or a dataset with --root (ImageNet variants too)"),
    method: Method = typer.Option("tda", help="tda (cached features, any backbone) or tca (token condensation, ViT)"),
    root: Optional[Path] = typer.Option(None, help="dataset folder"),
    split: Split = typer.Option("test", help="train, val or test: the split to stream"),
    backbone: str = BACKBONE,
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag or weights file"),
    condense: Condense = typer.Option("tca", help="tca: condensation policy"),
    keep: float = typer.Option(0.9, min=0.0, max=1.0, help="tca: keep rate in (0, 1]"),
    limit: Optional[int] = typer.Option(None, min=1, help="stream only this many images"),
    seed: int = typer.Option(1, min=0, help="stream order seed"),
    batch_size: int = typer.Option(16, min=1, help="images per step (samples still update the caches in order)"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache (tda)"),
    workers: str = WORKERS,
    precision: Precision = PRECISION,
    device: str = DEVICE,
) -> None:
    """Stream a dataset split through a test-time method; print its accuracy against zero-shot."""
    from ..backbones import Backbone
    from ..data import load
    from ..tta import evaluate_stream

    if keep <= 0:
        raise typer.BadParameter("must lie in (0, 1]", param_hint="--keep")
    if method.value == "tda" and condense.value != "tca":
        raise typer.BadParameter("applies to --method tca only", param_hint="--condense")
    data = load(dataset.value, root=root)
    model = Backbone(backbone, pretrained=pretrained, device=device, precision=precision.value)
    result = evaluate_stream(method.value, model, data, split.value, limit=limit, seed=seed, batch_size=batch_size,
                             condense=condense.value, keep=keep, cache_dir=cache_dir,
                             num_workers=workers_value(workers), device=device)
    typer.echo(f"{data.name}/{split.value}, {result.images} images, {model.name}: zero-shot accuracy "
               f"{100 * result.zero_shot:.2f}%, {method.value.upper()} accuracy {100 * result.accuracy:.2f}%")
    if result.flops is not None:
        condensed, dense = result.flops
        typer.echo(f"GFLOPs per image: {condensed / 1e9:.4f} with {condense.value} keep={keep} vs "
                   f"{dense / 1e9:.4f} dense ({100 * condensed / dense:.1f}%)")
