"""``python -m adaptkit.cli``."""

from . import app

app()
