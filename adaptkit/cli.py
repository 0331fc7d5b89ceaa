"""The ``adaptkit`` command line: parsing, calling the library, short messages for expected errors.

Every command validates its cheap inputs (dataset roots, recipes, CSV headers, adapter files)
before it builds a backbone. An expected error (bad input, missing files, unreachable weights)
prints one short ``adaptkit: error: ...`` message in CLI terms and exits with 1; ``--debug`` (or
``ADAPTKIT_DEBUG=1``) shows the traceback instead. ``--quiet`` turns progress bars and warnings off.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ._version import __version__

app = typer.Typer(help="Training-free adaptation of frozen CLIP models.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
support_app = typer.Typer(help="Support sets built from local image pools.", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(support_app, name="support")
data_app = typer.Typer(help="Prepare and check dataset folders (CoOp layout).", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(data_app, name="data")
compose_app = typer.Typer(help="Compositional image-text matching (ComCLIP).", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(compose_app, name="compose")

DEMO_ADAPTERS = ("zero_shot", "linear_probe", "gda", "tip_adapter", "tip_x", "ape", "proker", "caption_cache",
                 "gda_transductive")
FLAGS = ("pretrained", "root", "shots", "seed", "seeds", "views", "batch_size", "cache_dir", "device", "workers",
         "num_workers", "engine", "on_error", "decode", "limit", "keep", "condense", "top_k", "classnames",
         "templates", "address", "precision", "output")


def _choices(name: str, values) -> type[enum.Enum]:
    return enum.Enum(name, {v: v for v in values}, type=str)


def _dataset_names():
    from .data import NAMES

    return NAMES


DatasetName = _choices("DatasetName", _dataset_names())
PreparableName = _choices("PreparableName", [n for n in _dataset_names() if n not in ("digits", "imagefolder")])
Method = _choices("Method", ("tda", "tca"))
Condense = _choices("Condense", ("tca", "evit", "tome"))
Precision = _choices("Precision", ("auto", "fp32", "amp", "amp_bf16"))
OnError = _choices("OnError", ("raise", "skip"))
Engine = _choices("Engine", ("local", "ray"))
Decode = _choices("Decode", ("cpu", "gpu"))
Weighting = _choices("Weighting", ("sum", "softmax"))

QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars, no warnings")
DEBUG = typer.Option(False, "--debug", envvar="ADAPTKIT_DEBUG", help="show tracebacks of errors")
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N")
WORKERS = typer.Option("auto", help="image-decoding processes: auto (one per usable CPU) or a number ≥ 0")


def _in_cli_terms(message: str) -> str:
    """Python argument spellings (``pretrained=``) as the flags a CLI user types (``--pretrained``)."""
    pattern = r"(?<![\w.(,<])(" + "|".join(FLAGS) + r")=( ?)(?=[^<\s])"
    return re.sub(pattern, lambda m: f"--{m.group(1).replace('_', '-')} ", message)


def _next_step(err: Exception) -> str:
    from .data.base import DatasetFilesMissing

    if isinstance(err, DatasetFilesMissing):
        return f"\nnext: adaptkit data prepare {err.dataset} --root {err.root}"
    return ""


def _setup(quiet: bool, debug: bool) -> None:
    """Log adaptkit's messages to stderr (never through a root handler); apply --quiet."""
    from .progress import set_quiet

    set_quiet(quiet)
    log = logging.getLogger("adaptkit")
    if not any(getattr(h, "_adaptkit_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("adaptkit: %(levelname)s: %(message)s"))
        handler._adaptkit_cli = True
        log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING)
    if quiet:
        import warnings

        warnings.simplefilter("ignore")
    os.environ["ADAPTKIT_DEBUG"] = "1" if debug else os.environ.get("ADAPTKIT_DEBUG", "")


def command(function):
    """Run a command with adaptkit's logging, turning expected errors into one short message."""

    @functools.wraps(function)
    def run(*args, quiet: bool = False, debug: bool = False, **kwargs):
        _setup(quiet, debug)
        try:
            return function(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
            if debug or os.environ.get("ADAPTKIT_DEBUG", "") not in ("", "0"):
                raise
            typer.echo(f"adaptkit: error: {_in_cli_terms(str(err))}{_next_step(err)}", err=True)
            raise typer.Exit(1) from None

    run.__signature__ = _with_common_options(function)
    return run


def _with_common_options(function):
    import inspect

    signature = inspect.signature(function)
    extra = [inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=QUIET, annotation=bool),
             inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=DEBUG, annotation=bool)]
    return signature.replace(parameters=[*signature.parameters.values(), *extra])


def _ints(text: str, option: str, minimum: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} must be comma-separated integers such as 1,4,16; got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise typer.BadParameter(f"{option} must list integers ≥ {minimum}; got {text!r}")
    return values


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit():
        raise typer.BadParameter(f"--workers must be 'auto' or an integer ≥ 0; got {text!r}")
    return int(text)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adaptkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print adaptkit's version and exit")) -> None:
    """Training-free adaptation of frozen CLIP models."""


@app.command()
@command
def extract(
    dataset: DatasetName = typer.Argument(..., help="dataset name"),
    root: Optional[Path] = typer.Option(None, help="folder holding the dataset (not needed for digits)"),
    split: str = typer.Option("test", help="train, val or test"),
    backbone: str = typer.Option("adaptkit-tiny", help="open_clip architecture, hf-hub:org/repo or local-dir:/path"),
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
    device: str = DEVICE,
) -> None:
    """Encode a dataset split into the feature cache and print where the features are stored."""
    from . import Backbone
    from .data import load
    from .features import default_cache_dir, save_features
    from .features import extract as run_extract

    data = load(dataset.value, root=root)
    images = data.few_shot(shots, seed, split=split) if shots else data.split(split)
    model = Backbone(backbone, pretrained=pretrained, device=device)
    features = run_extract(model, images, views=views, seed=seed, batch_size=batch_size, cache_dir=cache_dir,
                           num_workers=_workers(workers), engine=engine.value, address=address, decode=decode.value,
                           on_error=on_error.value)
    store = Path(cache_dir or default_cache_dir())
    key = features.metadata["key"]
    typer.echo(f"{features.metadata['name']}: features {tuple(features.features.shape)} stored in "
               f"{store / 'entries' / key[:2] / f'{key}.json'}")
    skipped = features.metadata.get("skipped", [])
    if skipped:
        typer.echo(f"{len(skipped)} image(s) skipped, e.g. {skipped[0]['image']}: {skipped[0]['reason']}", err=True)
    if output is not None:
        save_features(features, output)
        typer.echo(f"written to {output}")


@app.command()
@command
def demo(
    backbone: str = typer.Option("adaptkit-tiny", help="open_clip architecture"),
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag (openai, ...) or a weights file"),
    dataset: DatasetName = typer.Option("digits", help="digits (offline) or a dataset with --root"),
    root: Optional[Path] = typer.Option(None, help="dataset folder"),
    shots: str = typer.Option("1,4,16", help="comma-separated shots per class"),
    seeds: str = typer.Option("1,2,3", help="comma-separated seeds"),
    views: int = typer.Option(10, min=1, help="augmented views per support image"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache directory"),
    workers: str = WORKERS,
    device: str = DEVICE,
) -> None:
    """Few-shot protocol on one dataset: every adapter tuned on validation, mean ± std test
    accuracy over seeds."""
    from . import Backbone
    from .data import load
    from .evaluate import evaluate_few_shot
    from .results import summary_table

    start = time.perf_counter()
    shot_list, seed_list = _ints(shots, "--shots", 1), _ints(seeds, "--seeds", 0)
    data = load(dataset.value, root=root)
    model = Backbone(backbone, pretrained=pretrained, device=device)
    rows = evaluate_few_shot(model, data, DEMO_ADAPTERS, shot_list, seed_list, views=views, cache_dir=cache_dir,
                             num_workers=_workers(workers))
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


@app.command()
@command
def predict(
    images: list[Path] = typer.Argument(..., help="image files and/or folders of images"),
    adapter: Path = typer.Option(..., help="adapter file written by adapter.save(...)"),
    pretrained: Optional[str] = typer.Option(None, help="weights file, when the adapter was fitted on features "
                                                        "of a local checkpoint"),
    top_k: int = typer.Option(1, min=1, help="classes to print per image"),
    batch_size: int = typer.Option(64, min=1, help="images per forward pass"),
    device: str = DEVICE,
) -> None:
    """Classify images with a saved adapter: image, class and probability per line (tab-separated)
    on stdout; unreadable images get one line each on stderr, and the exit code is 1 if any failed."""
    from .backbones import Backbone
    from .persistence import load_adapter
    from .predictor import Predictor, expand_images

    fitted = load_adapter(adapter, device=device)
    if fitted.backbone_identity_ is None:
        raise typer.BadParameter("the adapter file records no backbone; save it with adapter.save(path, "
                                 "backbone=backbone)", param_hint="--adapter")
    files = expand_images([str(p) for p in images])
    if not files:
        raise typer.BadParameter("no image files found", param_hint="IMAGES")
    if top_k > fitted.n_classes_:
        raise typer.BadParameter(f"must be at most {fitted.n_classes_} (the adapter's classes)", param_hint="--top-k")
    model = Backbone.from_identity(fitted.backbone_identity_, pretrained=pretrained, device=device)
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


def _parse_only(only: list[str]) -> dict[str, set[str]]:
    from .evaluate import ONLY_FIELDS

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
    output: Optional[Path] = typer.Option(None, help="output folder (default: the recipe's output)"),
    reference: bool = typer.Option(False, help="print published RN50 averages next to the measured ones"),
) -> None:
    """Run a protocol recipe (resuming finished rows) and write results.jsonl, table.md, table.csv,
    diagnostics and figures to its output folder. A filtered run (--only) prints its subset and
    leaves the full run's tables as they are."""
    from .evaluate import compare as run_compare
    from .recipes import load_recipe
    from .results import markdown_tables, reference_table

    parsed = load_recipe(recipe)
    start = time.perf_counter()
    result = run_compare(parsed, only=_parse_only(only), output=str(output) if output else None)
    typer.echo(markdown_tables(result.rows))
    if reference:
        typer.echo(reference_table(result.rows))
    where = result.output / "results.jsonl"
    typer.echo(f"{result.rows_in_file} rows in {where} ({result.new_rows} new); ", nl=False)
    if result.filtered:
        typer.echo(f"filtered run: {len(result.rows)} rows shown, tables and figures left as they were "
                   f"({time.perf_counter() - start:.1f} s)")
    else:
        typer.echo(f"tables, diagnostics and figures written to {result.output} ({time.perf_counter() - start:.1f} s)")


@app.command()
@command
def models(pretrained: bool = typer.Option(False, "--pretrained", help="also list each architecture's tags")) -> None:
    """List the open_clip architectures adaptkit accepts (and their pretrained tags)."""
    from .backbones import list_backbones

    if not pretrained:
        typer.echo("\n".join(list_backbones()))
        return
    for name, tags in list_backbones(pretrained=True).items():
        typer.echo(f"{name}\t{', '.join(tags) if tags else '(no tags: random init or a weights file)'}")
    typer.echo("\nAlso accepted: hf-hub:org/repo (Hugging Face Hub) and local-dir:/path (a downloaded checkpoint).")


@data_app.command("prepare")
@command
def data_prepare(
    name: PreparableName = typer.Argument(..., help="dataset name, e.g. oxford_pets"),
    root: Path = typer.Option(..., help="folder that holds (or will hold) the datasets"),
) -> None:
    """Download what torchvision can into CoOp's layout and say exactly what to fetch by hand."""
    from .data.prepare import expected_layout, prepare

    todo = prepare(name.value, root)
    typer.echo(f"{name.value}: expected layout {expected_layout(name.value)}")
    for step in todo:
        typer.echo(f"  to do by hand: {step}")
    typer.echo(f"  then run: adaptkit data check {name.value} --root {root}" if todo else f"{name.value}: ready")


@data_app.command("check")
@command
def data_check(
    name: PreparableName = typer.Argument(..., help="dataset name"),
    root: Path = typer.Option(..., help="folder that holds the datasets"),
) -> None:
    """Report missing folders, split files and images of a prepared dataset (exit code 1 if any)."""
    from .data.prepare import check

    report = check(name.value, root)
    if report["problem"]:
        typer.echo(report["problem"])
    for split, info in report["splits"].items():
        examples = f" e.g. {', '.join(info['examples'])}" if info["examples"] else ""
        typer.echo(f"{name.value}/{split}: {info['images']} images listed, {info['missing']} missing{examples}")
    typer.echo("ok" if report["ok"] else "incomplete")
    raise typer.Exit(0 if report["ok"] else 1)


@app.command()
@command
def tta(
    method: Method = typer.Option("tda", help="tda (cached features, any backbone) or tca (token condensation, ViT)"),
    dataset: DatasetName = typer.Option("digits", help="digits or a dataset with --root (ImageNet variants too)"),
    root: Optional[Path] = typer.Option(None, help="dataset folder"),
    split: str = typer.Option("test", help="split to stream"),
    backbone: str = typer.Option("adaptkit-tiny", help="open_clip architecture"),
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag or weights file"),
    condense: Condense = typer.Option("tca", help="tca: condensation policy"),
    keep: float = typer.Option(0.9, min=0.0, max=1.0, help="tca: keep rate in (0, 1]"),
    limit: Optional[int] = typer.Option(None, min=1, help="stream only this many images"),
    seed: int = typer.Option(1, min=0, help="stream order seed"),
    batch_size: int = typer.Option(16, min=1, help="images per step (samples still update the caches in order)"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache (tda)"),
    workers: str = WORKERS,
    device: str = DEVICE,
) -> None:
    """Stream a dataset split through a test-time method; print its accuracy against zero-shot."""
    import numpy as np
    import torch

    from . import Backbone
    from .data import load
    from .features import extract as run_extract
    from .progress import progress_bar
    from .tta import TCA, TDA

    if keep <= 0:
        raise typer.BadParameter("must lie in (0, 1]", param_hint="--keep")
    data = load(dataset.value, root=root)
    images = data.split(split)
    model = Backbone(backbone, pretrained=pretrained, device=device)
    order = np.random.default_rng(seed).permutation(len(images))[:limit]
    stream = images.subset(order, f"{images.name}/stream-seed{seed}")
    text = model.text_classifier(data.classnames, data.templates)
    labels = torch.from_numpy(stream.labels)
    if method.value == "tda":
        features = run_extract(model, stream, cache_dir=cache_dir, num_workers=_workers(workers)).features
        runner = TDA(text, device=device)
        batches = [features[i:i + batch_size] for i in range(0, len(stream), batch_size)]
        zero_shot = (features @ text.T).argmax(dim=1)
    else:
        runner = TCA(model, text, condense=condense.value, keep=keep)
        batches = [[stream.load(j) for j in range(i, min(i + batch_size, len(stream)))]
                   for i in range(0, len(stream), batch_size)]
        zero_shot = (model.encode_images([stream.load(j) for j in range(len(stream))]) @ text.T).argmax(dim=1)
    predictions = torch.cat([runner.update_predict(b).argmax(dim=1).cpu()
                             for b in progress_bar(batches, desc=method.value, unit="batch")])
    typer.echo(f"{data.name}/{split}, {len(stream)} images, {model.name}: zero-shot accuracy "
               f"{100 * (zero_shot.cpu() == labels).float().mean():.2f}%, {method.value.upper()} accuracy "
               f"{100 * (predictions == labels).float().mean():.2f}%")
    if method.value == "tca":
        condensed, dense = runner.flops()
        typer.echo(f"GFLOPs per image: {condensed / 1e9:.4f} with {condense.value} keep={keep} vs "
                   f"{dense / 1e9:.4f} dense ({100 * condensed / dense:.1f}%)")


@compose_app.command("eval")
@command
def compose_eval(
    csv_path: Path = typer.Option(..., "--csv", help="image,positive,negative or image_0,image_1,caption_0,caption_1"),
    root: Optional[Path] = typer.Option(None, help="folder image paths are relative to (default: the CSV's)"),
    backbone: str = typer.Option("adaptkit-tiny", help="open_clip architecture"),
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag or weights file"),
    weighting: Weighting = typer.Option("sum", help="sum (official) or softmax"),
    device: str = DEVICE,
) -> None:
    """CLIP and ComCLIP side by side on a compositional benchmark CSV; every row counts."""
    from .backbones import Backbone
    from .compose import ComCLIP, evaluate_csv
    from .compose.evaluation import read_benchmark

    read_benchmark(csv_path)
    model = Backbone(backbone, pretrained=pretrained, device=device)
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


def _pool_images(pool: str):
    """An unlabeled ImageSet from a folder, webdataset shards (.tar, brace patterns) or parquet files."""
    from .data.base import ImageSet
    from .predictor import expand_images

    if pool.endswith(".tar") or "{" in pool:
        return ImageSet.from_webdataset(pool, label_key=None, name=f"pool:{pool}")
    if pool.endswith(".parquet"):
        return ImageSet.from_parquet(pool, label_column=None, name=f"pool:{pool}")
    folder = Path(pool)
    if not folder.is_dir():
        raise typer.BadParameter(f"{pool} is not a folder, a .tar shard pattern or a .parquet file",
                                 param_hint="--pool")
    files = expand_images([str(folder)])
    if not files:
        raise typer.BadParameter(f"{pool} holds no images", param_hint="--pool")
    return ImageSet(files, [0] * len(files), ["unlabeled"], f"pool:{folder.resolve()}")


@support_app.command("build")
@command
def support_build(
    pool: str = typer.Option(..., help="unlabeled images: a folder, webdataset shards (pool-{000..099}.tar) "
                                       "or a parquet file with an image column"),
    classes: Path = typer.Option(..., help="text file with one class name per line"),
    shots: int = typer.Option(16, min=1, help="images per class"),
    out: Path = typer.Option(Path("support.safetensors"), help="where to write the support FeatureSet"),
    template: str = typer.Option("a photo of a {}.", help="query prompt per class ({} or {c})"),
    exclusive: bool = typer.Option(True, help="give each pool image to at most one class"),
    index_dir: Optional[Path] = typer.Option(None, help="build an on-disk IVF index here (pools larger than memory)"),
    backbone: str = typer.Option("adaptkit-tiny", help="open_clip architecture"),
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag or weights file"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache directory"),
    workers: str = WORKERS,
    on_error: OnError = typer.Option("skip", help="skip (default) or raise at an unreadable pool image"),
    device: str = DEVICE,
) -> None:
    """Build a K-shot support set per class by text-to-image retrieval from a local pool (SuS-X
    style); the output records its provenance so it can be rebuilt."""
    from .backbones import Backbone
    from .features import extract as run_extract
    from .features import save_features
    from .support import SupportIndex, build_support_set
    from .text import load_classnames, prompts

    names = load_classnames(classes)
    prompts(names[:1], [template])
    images = _pool_images(pool)
    model = Backbone(backbone, pretrained=pretrained, device=device)
    entry = run_extract(model, images, cache_dir=cache_dir, num_workers=_workers(workers), on_error=on_error.value,
                        load=False)
    queries = [group[0] for group in prompts(names, [template])]
    if index_dir is None:
        features = entry.load(on_error=on_error.value)
        if isinstance(images.images, list):
            kept = set(range(len(images))) - {s["position"] for s in features.metadata.get("skipped", [])}
            features.metadata["paths"] = [images.images[i] for i in sorted(kept)]
        source = features
    else:
        source = SupportIndex.from_entry(entry, index_dir, "ivf_flat")
    support = build_support_set(source, model.encode_texts(queries), shots, classnames=names, queries=queries,
                                exclusive=exclusive)
    support.metadata["provenance"]["backbone"] = model.identity
    save_features(support, out)
    skipped = len(entry.metadata.get("skipped", []))
    typer.echo(f"{len(names)} classes × {shots} shots from {len(entry)} pool images -> {out}"
               + (f" ({skipped} unreadable pool images skipped)" if skipped else ""))


if __name__ == "__main__":
    app()
