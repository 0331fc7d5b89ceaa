"""Protocol recipes: TOML files naming datasets, backbones, shots, seeds, adapters and grids.

```toml
output = "adaptkit-out/demo"      # relative to the current directory
shots = [1, 4, 16]
seeds = [1, 2, 3]
views = 10
adapters = ["zero_shot", "gda", "tip_adapter"]

[[datasets]]
name = "digits"                  # or a CoOp name with root = "~/data"

[[backbones]]
name = "ViT-B-16"
pretrained = "openai"            # tag or weights file; leave out for a random init

[grids.tip_adapter]              # optional: replaces an adapter's default search space
beta = [1.0, 3.0, 5.5]
alpha = [0.5, 1.0, 2.0]
```

Loading validates every key and value and names the offending key's path in the error.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TOP_KEYS = {"output", "shots", "seeds", "views", "adapters", "datasets", "backbones", "grids", "batch_size",
            "device", "cache_dir"}
DATASET_KEYS = {"name", "root"}
BACKBONE_KEYS = {"name", "pretrained"}


@dataclass
class DatasetSpec:
    name: str
    root: str | None = None


@dataclass
class BackboneSpec:
    name: str
    pretrained: str | None = None


@dataclass
class Recipe:
    """A validated protocol description (see the module docstring)."""

    datasets: list[DatasetSpec]
    backbones: list[BackboneSpec]
    adapters: list[str]
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    views: int = 10
    output: str = "adaptkit-out"
    grids: dict[str, dict[str, list]] = field(default_factory=dict)
    batch_size: int = 256
    device: str = "auto"
    cache_dir: str | None = None
    source: str = "<dict>"

    def config_hash(self, adapter: str) -> str:
        """Hash of what changes an adapter's rows besides dataset, backbone, shots and seed."""
        relevant = {"views": self.views, "grid": self.grids.get(adapter)}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "source"}


class RecipeError(ValueError):
    """A recipe key or value is wrong; the message names its path."""


def _fail(source: str, path: str, message: str) -> RecipeError:
    return RecipeError(f"{source}: {path}: {message}")


def _check_keys(source: str, path: str, table: Any, known: set[str]) -> None:
    if not isinstance(table, dict):
        raise _fail(source, path, f"expected a table, got {type(table).__name__}")
    for key in table:
        if key not in known:
            raise _fail(source, f"{path}.{key}".lstrip("."), f"unknown key (known: {', '.join(sorted(known))})")


def _int_list(source: str, path: str, value: Any, minimum: int) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                           and v >= minimum for v in value):
        raise _fail(source, path, f"expected a non-empty list of integers ≥ {minimum}, got {value!r}")
    return value


def parse_recipe(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    """Validate a recipe given as a dict (what the TOML file holds)."""
    from .data import available
    from .adapters import ADAPTERS

    _check_keys(source, "", data, TOP_KEYS)
    for required in ("datasets", "backbones", "adapters"):
        if required not in data:
            raise _fail(source, required, "missing")
    datasets = []
    if not isinstance(data["datasets"], list) or not data["datasets"]:
        raise _fail(source, "datasets", "expected a non-empty array of tables ([[datasets]])")
    for i, table in enumerate(data["datasets"]):
        _check_keys(source, f"datasets[{i}]", table, DATASET_KEYS)
        name = table.get("name")
        if name not in available() + ("imagefolder",):
            raise _fail(source, f"datasets[{i}].name", f"unknown dataset {name!r} (known: {', '.join(available())}, "
                                                       "imagefolder)")
        if name != "digits" and not table.get("root"):
            raise _fail(source, f"datasets[{i}].root", f"required for {name!r}: the folder holding its files")
        datasets.append(DatasetSpec(name, table.get("root")))
    backbones = []
    if not isinstance(data["backbones"], list) or not data["backbones"]:
        raise _fail(source, "backbones", "expected a non-empty array of tables ([[backbones]])")
    for i, table in enumerate(data["backbones"]):
        _check_keys(source, f"backbones[{i}]", table, BACKBONE_KEYS)
        if not isinstance(table.get("name"), str):
            raise _fail(source, f"backbones[{i}].name", "expected an open_clip architecture name")
        backbones.append(BackboneSpec(table["name"], table.get("pretrained") or None))
    adapters = data["adapters"]
    if not isinstance(adapters, list) or not adapters:
        raise _fail(source, "adapters", "expected a non-empty list of adapter names")
    for i, name in enumerate(adapters):
        if name not in ADAPTERS:
            raise _fail(source, f"adapters[{i}]", f"unknown adapter {name!r} (known: {', '.join(ADAPTERS)})")
    grids = data.get("grids", {})
    _check_keys(source, "grids", grids, set(ADAPTERS))
    for adapter, grid in grids.items():
        _check_keys(source, f"grids.{adapter}", grid, set(ADAPTERS[adapter]().get_params()))
        for param, values in grid.items():
            if not isinstance(values, list) or not values:
                raise _fail(source, f"grids.{adapter}.{param}", f"expected a non-empty list, got {values!r}")
    views = data.get("views", 10)
    if not isinstance(views, int) or views < 1:
        raise _fail(source, "views", f"expected a positive integer, got {views!r}")
    output = data.get("output", "adaptkit-out")
    if not isinstance(output, str):
        raise _fail(source, "output", f"expected a path string, got {output!r}")
    return Recipe(datasets=datasets, backbones=backbones, adapters=list(adapters),
                  shots=_int_list(source, "shots", data.get("shots", [1, 2, 4, 8, 16]), 1),
                  seeds=_int_list(source, "seeds", data.get("seeds", [1, 2, 3]), 0),
                  views=views, output=output, grids=grids, batch_size=int(data.get("batch_size", 256)),
                  device=str(data.get("device", "auto")), cache_dir=data.get("cache_dir"), source=source)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise RecipeError(f"recipe file not found: {path}") from err
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from err
    return parse_recipe(data, str(path))
