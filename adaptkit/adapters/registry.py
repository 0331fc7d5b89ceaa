"""The adapter registry: every adapter class with a ``name`` registers itself when it is defined.

As timm's ``@register_model``, defining the class is the whole registration: an adapter written
in a user's own module, once imported, is seen by :func:`adaptkit.leaderboard`, ``compare``
recipes, :func:`adaptkit.load` and the CLI, with no edit to adaptkit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADAPTERS: dict[str, type] = {}
"""The family by the names recipes, ``compare`` and :func:`adaptkit.leaderboard` use."""


@dataclass(frozen=True)
class FitInput:
    """An extra keyword input of an adapter's ``fit`` (beyond X, y and ``text_weights``).

    description : what it holds, shown when it is missing.
    required : callers that lack a required input skip the adapter (and say why).
    rows : what an array input is: ``"support"`` (features, one row per support image, (N, D)),
        ``"features"`` (features of any count, (M, D)), or ``None`` (not a feature array).
    """

    description: str
    required: bool = True
    rows: str | None = "support"

    def __post_init__(self):
        if self.rows not in ("support", "features", None):
            raise ValueError(f"rows must be 'support', 'features' or None; got {self.rows!r}")


def register(cls: type) -> None:
    """Enter ``cls`` under ``cls.name``. Redefining a class of the same module and qualified name
    (a re-run notebook cell) replaces it; another class under a taken name or class name is refused."""
    name = cls.name
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"{cls.__qualname__}.name must be a lower-case identifier such as 'my_adapter'; got {name!r}")
    stale = []
    for other_name, other in ADAPTERS.items():
        if (other.__module__, other.__qualname__) == (cls.__module__, cls.__qualname__):
            stale.append(other_name)
        elif other_name == name:
            raise ValueError(f"adapter name {name!r} of {cls.__module__}.{cls.__qualname__} is taken by "
                             f"{other.__module__}.{other.__qualname__}")
        elif other.__name__ == cls.__name__:
            raise ValueError(f"adapter class name {cls.__name__!r} ({cls.__module__}) is taken by {other.__module__}: "
                             "adapter files record the class name, so it must be unique")
    for old in stale:
        del ADAPTERS[old]
    ADAPTERS[name] = cls


def adapter_class(name: str) -> type:
    """The registered class called ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"adapter must be a registered adapter name; got {type(name).__name__}")
    if name not in ADAPTERS:
        raise ValueError(f"adapter must be one of {sorted(ADAPTERS)}; got {name!r} (an adapter of your own "
                         "registers when its module is imported)")
    return ADAPTERS[name]


def by_class_name() -> dict[str, type]:
    """Registered classes by class name, as adapter files record them."""
    return {cls.__name__: cls for cls in ADAPTERS.values()}


def make_adapter(name: str, **params: Any):
    """An adapter by its registry name (:data:`ADAPTERS`), with constructor ``params``."""
    return adapter_class(name)(**params)
