"""``adaptkit demo`` and ``adaptkit compare``: the few-shot protocol."""

# The library is imported inside each command, so that `adaptkit --help` and the other commands
# start without it (start-up time).

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .app import BACKBONE, DEVICE, PRECISION, WORKERS, DatasetName, OnError, Precision, app, command, ints, workers_value


@app.command()
@command
def demo(
    dataset: DatasetName = typer.Argument("digits", help="digits (offline) or a dataset with --root"),
    backbone: str = BACKBONE,
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag (openai, ...) or a weights file"),
    root: Optional[Path] = typer.Option(None, help="dataset folder"),
    shots: str = typer.Option("1,4,16", help="comma-separated shots per class"),
    seeds: str = typer.Option("1,2,3", help="comma-separated seeds"),
    views: int = typer.Option(10, min=1, help="augmented views per support image"),
    adapters: str = typer.Option("all", help="comma-separated adapter names, or all (every registered adapter; "
                                             "--import MODULE registers your own)"),
    on_error: OnError = typer.Option("raise", help="raise: stop at an unreadable image; skip: leave it out"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache directory"),
    workers: str = WORKERS,
    precision: Precision = PRECISION,
    device: str = DEVICE,
) -> None:
    """Few-shot protocol on one dataset: every adapter tuned on validation, mean ± std test
    accuracy over seeds."""
    from ..backbones import Backbone
    from ..data import load
    from ..protocol import evaluate_few_shot
    from ..results import summary_table

    start = time.perf_counter()
    shot_list, seed_list = ints(shots, "--shots", 1), ints(seeds, "--seeds", 0)
    data = load(dataset.value, root=root)
    model = Backbone(backbone, pretrained=pretrained, device=device, precision=precision.value)
    rows = evaluate_few_shot(model, data, adapter_names(adapters), shot_list, seed_list, views=views, cache_dir=cache_dir,
                             num_workers=workers_value(workers), on_error=on_error.value)
    typer.echo(f"\n{data.name}, {model.name} ({model.identity['weights']}), {len(data.classnames)} classes, "
               f"test accuracy % (mean ± std over seeds {seeds}), hyper-parameters tuned on validation only:\n")
    typer.echo(summary_table(rows))
    if pretrained is None and not backbone.startswith(("hf-hub:", "local-dir:")):
        typer.echo(f"\nNote: {model.name} is RANDOMLY INITIALISED, so zero-shot is at chance "
                   f"({100 / len(data.classnames):.0f}% on {len(data.classnames)} classes); the adapters learn "
                   "from the few-shot image features alone. The cache adapters (Tip-Adapter, TIP-X, APE, caption "
                   "cache) add a residual to a zero-shot classifier that is noise here, and the transductive "
                   "GDA starts its EM from it, so they stay near chance. The same run with real "
                   "CLIP weights:\n"
                   "  adaptkit demo --backbone ViT-B-32 --pretrained openai")
    typer.echo(f"\nfinished in {time.perf_counter() - start:.1f} s. Next: the whole protocol with tables and "
               "figures, `adaptkit compare recipes/demo.toml`; test-time adaptation on a stream, "
               "`adaptkit tta --method tda` or `--method tca`.")


def adapter_names(text: str) -> list[str]:
    """``all`` or comma-separated names, checked against the registry."""
    from ..adapters import ADAPTERS

    if text == "all":
        return list(ADAPTERS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ADAPTERS]
    if not names or unknown:
        raise typer.BadParameter(f"unknown adapter {', '.join(unknown) or repr(text)} (known: {', '.join(ADAPTERS)})",
                                 param_hint="--adapters")
    return names


def _parse_only(only: list[str]) -> dict[str, set[str]]:
    from ..protocol import ONLY_FIELDS

    parsed: dict[str, set[str]] = {}
    for item in only:
        field, _, values = item.partition("=")
        if field not in ONLY_FIELDS or not values.strip(","):
            raise typer.BadParameter(f"expected FIELD=v1,v2 with FIELD in {', '.join(ONLY_FIELDS)}; got {item!r}",
                                     param_hint="--only")
        parsed.setdefault(field, set()).update(v.strip() for v in values.split(",") if v.strip())
    return parsed


@app.command()
@command
def compare(
    recipe: Path = typer.Argument(..., help="recipe TOML, e.g. recipes/demo.toml"),
    only: list[str] = typer.Option([], help="run a subset, e.g. --only adapter=gda,tip_adapter --only shots=16"),
    output: Optional[Path] = typer.Option(None, metavar="DIR", help="output folder (default: the recipe's output)"),
    reference: bool = typer.Option(False, help="print published RN50 averages next to the measured ones"),
) -> None:
    """Run a protocol recipe (resuming finished rows) and write results.jsonl, table.md, table.csv,
    diagnostics and figures to its output folder. A filtered run (--only) prints its subset and
    leaves the full run's tables as they are."""
    from ..protocol import compare as run_compare
    from ..recipes import load_recipe
    from ..results import markdown_tables, reference_table

    parsed = load_recipe(recipe)
    start = time.perf_counter()
    result = run_compare(parsed, only=_parse_only(only), output=str(output) if output else None)
    typer.echo(markdown_tables(result.rows))
    if reference:
        typer.echo(reference_table(result.rows))
    where = result.output / "results.jsonl"
    typer.echo(f"{result.rows_in_file} rows in {where} ({result.new_rows} new); ", nl=False)
    if not result.writable:
        typer.echo(f"read-only folder: every row was there, nothing written ({time.perf_counter() - start:.1f} s)")
    elif result.filtered:
        kept = "left as they were" if (result.output / "table.md").exists() else \
            "not written (an unfiltered run writes them)"
        typer.echo(f"filtered run: {len(result.rows)} rows shown, tables and figures {kept} "
                   f"({time.perf_counter() - start:.1f} s)")
    else:
        typer.echo(f"tables, diagnostics, figures and report.html written to {result.output} "
                   f"({time.perf_counter() - start:.1f} s)")


@app.command()
@command
def report(output: Path = typer.Argument(..., help="a compare output folder (holding results.jsonl)")) -> None:
    """Rebuild report.html, the self-contained page of a compare folder (figures, tables, per-class
    accuracy, diagnostics, provenance)."""
    from ..report import build_report

    typer.echo(f"wrote {build_report(output)}")
