"""Progress bars that show where someone watches and stay out of logs.

A bar is drawn on an interactive terminal (stderr is a TTY) and in Jupyter (the widget bar when
ipywidgets is installed, else tqdm's plain text bar, never the "IProgress not found" warning).
Redirected output (a log file, CI) gets no bar and so no cursor-movement codes. ``progress=False``
in the API, ``adaptkit --quiet`` or ``ADAPTKIT_QUIET=1`` turn every bar off.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

from tqdm import TqdmWarning
from tqdm import tqdm as text_bar

with warnings.catch_warnings():
    # huggingface_hub (imported with open_clip) imports tqdm.auto, which warns "IProgress not found"
    # in a notebook without ipywidgets; adaptkit draws a plain bar there instead, so import it quietly
    # once, before anything else does.
    warnings.simplefilter("ignore", TqdmWarning)
    import tqdm.auto  # noqa: F401

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Turn every adaptkit progress bar off (``True``) or back to the default policy."""
    global _quiet
    _quiet = bool(quiet)


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return bool(get and get() is not None and "IPKernelApp" in getattr(get(), "config", {}))


def bars_enabled(progress: bool = True) -> bool:
    """Whether a bar would be drawn here."""
    if not progress or _quiet or os.environ.get("ADAPTKIT_QUIET", "") not in ("", "0"):
        return False
    return _in_notebook() or sys.stderr.isatty()


def progress_bar(iterable: Iterable | None = None, *, progress: bool = True, **options: Any):
    """A tqdm bar where one is wanted (see the module docstring), else a silent one that still
    counts. ``options`` go to tqdm (``total``, ``desc``, ``unit``, ``leave``, ...)."""
    if not bars_enabled(progress):
        return text_bar(iterable, disable=True, **options)
    if _in_notebook():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as widget_bar
        except ImportError:
            return text_bar(iterable, file=sys.stderr, **options)
        return widget_bar(iterable, **options)
    return text_bar(iterable, file=sys.stderr, dynamic_ncols=True, **options)
