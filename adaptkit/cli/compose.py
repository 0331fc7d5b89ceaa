"""``adaptkit compose eval``: CLIP and ComCLIP on a compositional benchmark CSV."""

# The library is imported inside each command, so that `adaptkit --help` and the other commands
# start without it (start-up time).

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import BACKBONE, DEVICE, PRECISION, Precision, Weighting, command, compose_app


@compose_app.command("eval")
@command
def compose_eval(
    csv_path: Path = typer.Option(..., "--csv", help="image,positive,negative or image_0,image_1,caption_0,caption_1"),
    root: Optional[Path] = typer.Option(None, help="folder image paths are relative to (default: the CSV's)"),
    backbone: str = BACKBONE,
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag or weights file"),
    weighting: Weighting = typer.Option("sum", help="sum (official) or softmax"),
    precision: Precision = PRECISION,
    device: str = DEVICE,
) -> None:
    """CLIP and ComCLIP side by side on a compositional benchmark CSV; every row counts."""
    from ..backbones import Backbone
    from ..compose import ComCLIP, evaluate_csv
    from ..compose.evaluation import read_benchmark

    read_benchmark(csv_path)
    model = Backbone(backbone, pretrained=pretrained, device=device, precision=precision.value)
    results = evaluate_csv(csv_path, ComCLIP(model, weighting=weighting.value), root=root)
    metrics = list(results["clip"])
    typer.echo(f"{csv_path} ({results['format']}, {results['rows']} rows, {model.name}):\n")
    typer.echo("| method | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics))
    for name in ("clip", "comclip"):
        typer.echo(f"| {name} | " + " | ".join(f"{100 * results[name][m]:.2f}" for m in metrics) + " |")
    if results["failures"]:
        typer.echo(f"\n{len(results['failures'])} rows failed and count as wrong:")
        for row, reason in results["failures"][:10]:
            typer.echo(f"  row {row + 1}: {reason}")
