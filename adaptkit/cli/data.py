"""``adaptkit data prepare`` and ``adaptkit data check``: dataset folders in CoOp's layout."""

# The library is imported inside each command, so that `adaptkit --help` and the other commands
# start without it (start-up time).

from __future__ import annotations

from pathlib import Path

import typer

from .app import PreparableName, command, data_app


@data_app.command("prepare")
@command
def data_prepare(
    dataset: PreparableName = typer.Argument(..., help="dataset name, e.g. oxford_pets"),
    root: Path = typer.Option(..., help="folder that holds (or will hold) the datasets"),
) -> None:
    """Download what torchvision can into CoOp's layout and say exactly what to fetch by hand."""
    from ..data.prepare import expected_layout, prepare

    todo = prepare(dataset.value, root)
    typer.echo(f"{dataset.value}: expected layout {expected_layout(dataset.value)}")
    for step in todo:
        typer.echo(f"  to do by hand: {step}")
    typer.echo(f"  then run: adaptkit data check {dataset.value} --root {root}" if todo else f"{dataset.value}: ready")


@data_app.command("check")
@command
def data_check(
    dataset: PreparableName = typer.Argument(..., help="dataset name"),
    root: Path = typer.Option(..., help="folder that holds the datasets"),
) -> None:
    """Report missing folders, split files and images of a prepared dataset (exit code 1 if any)."""
    from ..data.prepare import check

    report = check(dataset.value, root)
    if report["problem"]:
        typer.echo(report["problem"])
    for split, info in report["splits"].items():
        examples = f" e.g. {', '.join(info['examples'])}" if info["examples"] else ""
        typer.echo(f"{dataset.value}/{split}: {info['images']} images listed, {info['missing']} missing{examples}")
    typer.echo("ok" if report["ok"] else "incomplete")
    raise typer.Exit(0 if report["ok"] else 1)
