"""The ``adaptkit`` application: its sub-command groups, the common options, the error layer and
the choices (built from the library's option vocabularies, :mod:`adaptkit._options`).

Every command validates its cheap inputs (dataset roots, recipes, CSV headers, adapter files)
before it builds a backbone. An expected error (bad input, missing files, unreachable weights)
prints one short ``adaptkit: error: ...`` message in CLI terms and exits with 1; ``--debug`` (or
``ADAPTKIT_DEBUG=1``) shows the traceback instead. ``--quiet`` turns progress bars and warnings off.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import logging
import os
import re
import sys
import typing
import warnings
from pathlib import Path

import typer
import typer.core
import typer.models

from .._options import (
    CONDENSE_POLICIES,
    DATASET_NAMES,
    DECODERS,
    ENGINES,
    ON_ERROR,
    PRECISIONS,
    SPLITS,
    TTA_METHODS,
    WEIGHTINGS,
)
from .._version import __version__

METAVARS = {"backbone": "NAME", "pretrained": "TAG|FILE", "device": "auto|cpu|cuda[:N]", "workers": "auto|N",
            "shots": "N", "seeds": "N,N,...", "adapters": "NAME,NAME,...|all", "template": "TEXT", "host": "ADDRESS",
            "address": "ADDRESS", "only": "KEY=VALUE", "cors_origin": "ORIGIN"}
"""Metavars by parameter name, where the type alone does not say what to type."""


def _metavar(name: str, annotation) -> str:
    """What a user types for an option: ``raise|skip``, ``N``, ``DIR``, ``FILE`` (never ``<str>``)."""
    annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
    if typing.get_origin(annotation) is list:
        return _metavar(name, typing.get_args(annotation)[0])
    if name == "shots" and annotation is str:
        return "N,N,..."
    if name in METAVARS:
        return METAVARS[name]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "|".join(member.value for member in annotation)
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    if annotation is Path:
        return "DIR" if name == "root" or name.endswith("_dir") else "FILE"
    return "TEXT"


class Command(typer.core.TyperCommand):
    """A command whose usage line and argument list read as English: ``adaptkit extract [OPTIONS]
    DATASET``, each argument with its help and, for a choice, the values it takes."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as err:  # typer's pydantic coercion prefixes its messages
            err.message = err.message.removeprefix("Value error, ")
            raise

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar]
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments = [(param.metavar, _argument_help(param)) for param in self.get_params(ctx)
                     if param.param_type_name == "argument"]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        options = [r for r in (p.get_help_record(ctx) for p in self.get_params(ctx) if p.param_type_name == "option")
                   if r is not None]
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


def _argument_help(param) -> str:
    text = param.help or ""
    if param.type_descriptor.is_choice:
        text += f": {', '.join(str(getattr(c, 'value', c)) for c in param.type_descriptor.choices)}"
    if not param.required and param.default is not None:
        text += f"  [default: {getattr(param.default, 'value', param.default)}]"
    return text


class Typer(typer.Typer):
    """adaptkit's command groups: every command is a :class:`Command`."""

    def command(self, *args, cls=Command, **kwargs):
        return super().command(*args, cls=cls, **kwargs)


app = Typer(help="Training-free adaptation of frozen CLIP models.", no_args_is_help=True,
            add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
support_app = Typer(help="Support sets built from local image pools.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(support_app, name="support")
data_app = Typer(help="Prepare and check dataset folders (CoOp layout).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
compose_app = Typer(help="Compositional image-text matching (ComCLIP).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(compose_app, name="compose")

FLAGS = ("pretrained", "root", "shots", "seed", "seeds", "views", "batch_size", "cache_dir", "device", "workers",
         "engine", "on_error", "decode", "limit", "keep", "condense", "top_k", "classnames", "templates", "address",
         "output", "adapters")
"""Python argument names that are also flags: errors show them as ``--flag``."""


def _choices(name: str, values) -> type[enum.Enum]:
    return enum.Enum(name, {v: v for v in values}, type=str)


DatasetName = _choices("DatasetName", DATASET_NAMES)
PreparableName = _choices("PreparableName", [n for n in DATASET_NAMES if n not in ("digits", "imagefolder")])
Method = _choices("Method", TTA_METHODS)
Condense = _choices("Condense", CONDENSE_POLICIES)
OnError = _choices("OnError", ON_ERROR)
Engine = _choices("Engine", ENGINES)
Decode = _choices("Decode", DECODERS)
Weighting = _choices("Weighting", WEIGHTINGS)
Precision = _choices("Precision", PRECISIONS)
Split = _choices("Split", SPLITS)

QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars, no warnings")
DEBUG = typer.Option(False, "--debug", envvar="ADAPTKIT_DEBUG", help="show tracebacks of errors")
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N")
BACKBONE = typer.Option("adaptkit-tiny", help="an open_clip architecture (adaptkit models lists them), "
                                               "hf-hub:org/repo or local-dir:/path/to/checkpoint")
PRECISION = typer.Option("auto", help="auto (fp16 autocast on CUDA, fp32 on CPU), fp32, amp (fp16) or amp_bf16")
WORKERS = typer.Option("auto", help="image-decoding processes: auto (one per usable CPU) or a number ≥ 0")


PHRASES = ((re.compile(r"\bname=('[^']*') (is not an open_clip architecture)"), r"--backbone \1 \2"),
           (re.compile(r"adaptkit\.list_backbones\(\)"), "adaptkit models"))
"""Python spellings whose CLI words differ from the argument's name."""


def _in_cli_terms(message: str) -> str:
    """Python argument spellings (``pretrained=``) as the flags a CLI user types (``--pretrained``)."""
    for pattern, replacement in PHRASES:
        message = pattern.sub(replacement, message)
    quoted = r"(?<![\w.(,<])(" + "|".join(FLAGS) + r")='([^'\s]*)'"
    message = re.sub(quoted, lambda m: f"--{m.group(1).replace('_', '-')} {m.group(2)}", message)
    pattern = r"(?<![\w.(,<])(" + "|".join(FLAGS) + r")=( ?)(?=[^<\s])"
    return re.sub(pattern, lambda m: f"--{m.group(1).replace('_', '-')} ", message)


def _next_step(err: Exception) -> str:
    from ..data.base import DatasetFilesMissing  # deferred (start-up time)

    if isinstance(err, DatasetFilesMissing):
        return "".join(f"\nnext: adaptkit data prepare {dataset} --root {root}" for dataset, root in err.missing)
    return ""


def _setup(quiet: bool, debug: bool) -> None:
    """Log adaptkit's messages to stderr (never through a root handler); apply --quiet."""
    from ..progress import set_quiet  # deferred (start-up time)

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
        warnings.simplefilter("ignore")


GLOBAL_FLAGS = {"quiet": False, "debug": False}
"""--quiet and --debug given before the sub-command (``adaptkit --quiet demo``)."""


def command(function):
    """Run a command with adaptkit's logging, turning expected errors into one short message."""

    @functools.wraps(function)
    def run(*args, quiet: bool = False, debug: bool = False, **kwargs):
        quiet, debug = quiet or GLOBAL_FLAGS["quiet"], debug or GLOBAL_FLAGS["debug"]
        _setup(quiet, debug)
        try:
            return function(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except (ValueError, TypeError, OSError) as err:  # OSError: files named, a full disk, a limit
            if debug:
                raise
            typer.echo(f"adaptkit: error: {_in_cli_terms(str(err))}{_next_step(err)}", err=True)
            raise typer.Exit(1) from None

    run.__signature__ = _with_common_options(function)
    return run


def _with_common_options(function):
    """The command's signature with --quiet and --debug added and every metavar in English."""
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function)
    for name, parameter in signature.parameters.items():
        info = parameter.default
        if isinstance(info, typer.models.ArgumentInfo) and info.metavar is None:
            info.metavar = name.upper() + ("..." if typing.get_origin(hints[name]) is list else "")
        elif isinstance(info, typer.models.OptionInfo) and info.metavar is None and hints[name] is not bool:
            info.metavar = _metavar(name, hints[name])
    extra = [inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=QUIET, annotation=bool),
             inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=DEBUG, annotation=bool)]
    return signature.replace(parameters=[*signature.parameters.values(), *extra])


def ints(text: str, option: str, minimum: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} must be comma-separated integers such as 1,4,16; got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise typer.BadParameter(f"{option} must list integers ≥ {minimum}; got {text!r}")
    return values


def workers_value(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit():
        raise typer.BadParameter(f"--workers must be 'auto' or an integer ≥ 0; got {text!r}")
    return int(text)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adaptkit {__version__}")
        raise typer.Exit()


def _import_modules(modules: list[str]) -> list[str]:
    """Import user modules (looked up on sys.path and in the current folder): adapters they
    define register themselves, so every command sees them."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            typer.echo(f"adaptkit: error: --import {module}: {err}", err=True)
            raise typer.Exit(1) from None
    return modules


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print adaptkit's version and exit"),
         imports: list[str] = typer.Option([], "--import", metavar="MODULE", callback=_import_modules,
                                           help="import a module first (e.g. one defining adapters); repeatable"),
         quiet: bool = QUIET, debug: bool = DEBUG) -> None:
    """Training-free adaptation of frozen CLIP models."""
    GLOBAL_FLAGS.update(quiet=quiet, debug=debug)
