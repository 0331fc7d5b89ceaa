"""The ``adaptkit`` command line: parsing, calling the library, short messages for expected errors.

One module per sub-command group; importing them registers their commands on :data:`app`.
"""

from . import compose, data, extract, predict, protocol, serve, support, tta  # noqa: F401  (register the commands)
from .app import app

__all__ = ["app"]
