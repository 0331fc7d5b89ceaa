"""``adaptkit support build|verify``: support sets retrieved from local image pools; saved indexes checked."""

# The library is imported inside each command, so that `adaptkit --help` and the other commands
# start without it (start-up time).

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import BACKBONE, DEVICE, PRECISION, WORKERS, OnError, Precision, command, support_app, workers_value


@support_app.command("build")
@command
def support_build(
    pool: list[str] = typer.Argument(..., metavar="POOL...", help="unlabeled images: a folder of images or of "
                                     "parquet shards, webdataset shards (pool/*.tar, pool-{000..099}.tar) or parquet "
                                     "files with an image column"),
    classes: Path = typer.Option(..., help="text file with one class name per line"),
    shots: int = typer.Option(16, min=1, help="images per class"),
    out: Path = typer.Option(Path("support.safetensors"), help="where to write the support FeatureSet"),
    template: str = typer.Option("a photo of a {}.", help="query prompt per class ({} or {c})"),
    exclusive: bool = typer.Option(True, help="give each pool image to at most one class"),
    index_dir: Optional[Path] = typer.Option(None, help="build an on-disk IVF index here (pools larger than memory)"),
    backbone: str = BACKBONE,
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag or weights file"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache directory"),
    workers: str = WORKERS,
    on_error: OnError = typer.Option("skip", help="skip (default) or raise at an unreadable pool image"),
    precision: Precision = PRECISION,
    device: str = DEVICE,
) -> None:
    """Build a K-shot support set per class by text-to-image retrieval from a local pool (SuS-X
    style); the output records its provenance so it can be rebuilt."""
    from ..backbones import Backbone
    from ..data.pools import open_pool
    from ..features import extract as run_extract
    from ..features import save_features
    from ..support import SupportIndex, build_support_set
    from ..text import load_classnames, prompts

    names = load_classnames(classes)
    prompts(names[:1], [template])
    images = open_pool(pool)
    model = Backbone(backbone, pretrained=pretrained, device=device, precision=precision.value)
    entry = run_extract(model, images, cache_dir=cache_dir, num_workers=workers_value(workers), on_error=on_error.value,
                        load=False)
    queries = [group[0] for group in prompts(names, [template])]
    if index_dir is None:
        source = entry.load(on_error=on_error.value)
    else:
        source = SupportIndex.from_entry(entry, index_dir, "ivf_flat")
    support = build_support_set(source, model.encode_texts(queries), shots, classnames=names, queries=queries,
                                exclusive=exclusive)
    support.metadata["provenance"]["backbone"] = model.identity
    support.metadata["paths"] = [images.describe(p) for p in support.metadata["pool_positions"]]
    save_features(support, out)
    skipped = len(entry.metadata.get("skipped", []))
    typer.echo(f"{len(names)} classes × {shots} shots from {len(entry)} pool images -> {out}"
               + (f" ({skipped} unreadable pool images skipped)" if skipped else ""))


@support_app.command("verify")
@command
def support_verify(index: Path = typer.Argument(..., help="a saved support index (SupportIndex.save)")):
    """Check a saved support index: its file's SHA-256 and, for an on-disk index, the size and
    SHA-256 of every file of its build folder (the lists too)."""
    from ..index import SupportIndex

    loaded = SupportIndex.load(index)
    loaded.verify()
    where = f"; build folder {loaded.lists_folder}: every file matches" if loaded.lists_folder else ""
    typer.echo(f"{index}: {len(loaded)} keys ({loaded.kind}){where}")
