"""``adaptkit predict`` and ``adaptkit models``: saved adapters on images, the architectures."""

# The library is imported inside each command, so that `adaptkit --help` and the other commands
# start without it (start-up time).

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import DEVICE, app, command


@app.command()
@command
def predict(
    images: list[Path] = typer.Argument(..., help="image files and/or folders of images"),
    adapter: Path = typer.Option(..., help="adapter file written by adapter.save(...)"),
    backbone: Optional[str] = typer.Option(None, help="the backbone, when not the one the file records by name: "
                                                      "local-dir:/path for a moved or copied checkpoint (checked "
                                                      "against the recorded identity)"),
    pretrained: Optional[str] = typer.Option(None, help="weights file, when the adapter was fitted on features "
                                                        "of a local checkpoint"),
    top_k: int = typer.Option(1, min=1, help="classes to print per image"),
    batch_size: int = typer.Option(64, min=1, help="images per forward pass"),
    device: str = DEVICE,
) -> None:
    """Classify images with a saved adapter: image, class and probability per line (tab-separated)
    on stdout; unreadable images get one line each on stderr, and the exit code is 1 if any failed."""
    from ..adapters import load_adapter
    from ..backbones import Backbone
    from ..data.pools import expand_images
    from ..predictor import Predictor

    fitted = load_adapter(adapter, device=device)
    if fitted.backbone_identity_ is None:
        raise typer.BadParameter("the adapter file records no backbone; save it with adapter.save(path, "
                                 "backbone=backbone)", param_hint="--adapter")
    files = expand_images([str(p) for p in images])
    if not files:
        raise typer.BadParameter("no image files found", param_hint="IMAGES")
    if top_k > fitted.n_classes_:
        raise typer.BadParameter(f"must be at most {fitted.n_classes_} (the adapter's classes)", param_hint="--top-k")
    model = Backbone.from_identity(fitted.backbone_identity_, pretrained=pretrained, device=device) \
        if backbone is None else Backbone(backbone, pretrained=pretrained, device=device)
    failed = 0
    for result in Predictor(model, fitted, batch_size=batch_size).classify(files, k=top_k):
        if result.error is not None:
            failed += 1
            typer.echo(f"adaptkit: error: {result.error}", err=True)
        else:
            typer.echo("\t".join([result.image] + [f"{name}\t{prob:.4f}" for name, prob in result.top]))
    if failed:
        typer.echo(f"adaptkit: {failed} of {len(files)} image(s) could not be classified", err=True)
        raise typer.Exit(1)


@app.command()
@command
def models(pretrained: bool = typer.Option(False, "--pretrained", help="also list each architecture's tags")) -> None:
    """List the open_clip architectures adaptkit accepts (and their pretrained tags)."""
    from ..backbones import list_backbones

    if not pretrained:
        typer.echo("\n".join(list_backbones()))
        return
    for name, tags in list_backbones(pretrained=True).items():
        typer.echo(f"{name}\t{', '.join(tags) if tags else '(no tags: random init or a weights file)'}")
    typer.echo("\nAlso accepted: hf-hub:org/repo (Hugging Face Hub) and local-dir:/path (a downloaded checkpoint).")
