"""Protocol recipes: TOML files naming datasets, backbones, shots, seeds, adapters and grids.

```toml
output = "adaptkit-out/demo"      # relative to the current directory
shots = [1, 4, 16]
seeds = [1, 2, 3]
views = 10
adapters = ["zero_shot", "gda", "tip_adapter"]
workers = "auto"                  # loader processes decoding images
on_error = "raise"                # or "skip": leave unreadable images out (listed in each set's metadata)
imports = ["my_adapters"]         # optional: modules imported first (adapters of your own register
                                  # themselves); found on sys.path or next to the recipe

[[datasets]]
name = "digits"                  # or a CoOp / ImageNet-variant name with root = "~/data"

[[datasets]]
name = "imagefolder"             # any number of image folders, told apart by root (or label)
root = "~/data/birds"
label = "birds"                  # the name in results and tables (default: derived from the root)
classnames = "birds.txt"         # optional: class-name file (relative to this recipe)
templates = "birds-prompts.json" # optional: templates ({} or {c}) or CuPL {class: [prompts]}

[[backbones]]
name = "ViT-B-16"
pretrained = "openai"            # tag or weights file; leave out for a random init
precision = "auto"               # optional: auto, fp32, amp (fp16 autocast) or amp_bf16

[grids.tip_adapter]              # optional: replaces an adapter's default search space
beta = [1.0, 3.0, 5.5]
alpha = [0.5, 1.0, 2.0]

[params.proker]                  # optional: constructor values fixed for the whole run
rank = 2048                      # (here: ProKeR's Nyström approximation, e.g. for ImageNet sizes)
```

Loading validates every key and value (grid values against the adapter's declared constraints,
files named in the recipe read as UTF-8) and names the offending key's path in the error, before
any dataset or backbone is touched.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._options import ON_ERROR, PRECISIONS
from ._params import DEVICE, NON_NEGATIVE_INT, POSITIVE_INT, Float, StrOptions, check_params
from .adapters import ADAPTERS
from .data import available, load
from .storage import expand_path, json_sha256, read_text
from .text import load_classnames, load_prompts, prompts
from .tuning import grid_axes

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TOP_KEYS = {"output", "shots", "seeds", "views", "adapters", "datasets", "backbones", "grids", "params",
            "batch_size", "device", "cache_dir", "workers", "imports", "on_error"}
DATASET_KEYS = {"name", "root", "label", "classnames", "templates", "val_fraction", "test_fraction", "split_seed"}
FOLDER_OPTIONS = {"val_fraction", "test_fraction", "split_seed"}
BACKBONE_KEYS = {"name", "pretrained", "precision"}


@dataclass
class DatasetSpec:
    """One dataset of a recipe: what to load and what to call it."""

    name: str
    root: str | None = None
    label: str = ""
    classnames: str | None = None
    templates: str | list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What makes two specs the same dataset: name, root, files and options."""
        root = None if self.root is None else os.path.abspath(expand_path(self.root))
        return {"name": self.name, "root": root, "classnames": self.classnames, "templates": self.templates,
                "options": self.options}

    def load(self):
        """The :class:`adaptkit.data.Dataset`, with the spec's class names and templates applied."""
        options = {("seed" if k == "split_seed" else k): v for k, v in self.options.items()}
        if self.name == "imagefolder":
            if self.classnames is not None:
                options["classnames"] = self.classnames
            dataset = load(self.name, root=self.root, **options)
        else:
            dataset = load(self.name, root=self.root)
            if self.classnames is not None:
                names = load_classnames(self.classnames)
                if len(names) != len(dataset.classnames):
                    raise ValueError(f"{self.classnames}: {len(names)} class names for the {len(dataset.classnames)} "
                                     f"classes of {self.name}")
                dataset = dataset.with_classnames(names)
        if self.templates is not None:
            dataset.templates = load_prompts(self.templates) if isinstance(self.templates, str) else self.templates
            try:
                prompts(dataset.classnames, dataset.templates)  # what the run builds its text classifier from
            except ValueError as err:
                where = self.templates if isinstance(self.templates, str) else "templates"
                raise ValueError(f"{where}: {err}") from None
        dataset.name = self.label
        return dataset


@dataclass
class BackboneSpec:
    name: str
    pretrained: str | None = None
    precision: str = "auto"


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
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 256
    device: str = "auto"
    cache_dir: str | None = None
    workers: int | str = "auto"
    imports: list[str] = field(default_factory=list)
    on_error: str = "raise"
    source: str = "<dict>"

    def config_hash(self, adapter: str, prompts_sha256: str = "", data_sha256: str = "") -> str:
        """Hash of what changes an adapter's rows besides the dataset's label, backbone, shots and
        seed: views, its grid, its fixed parameters (when the recipe sets any), the prompts and the
        data behind the label."""
        relevant = {"views": self.views, "grid": self.grids.get(adapter), "prompts": prompts_sha256,
                    "data": data_sha256}
        if adapter in self.params:
            relevant["params"] = self.params[adapter]
        return json_sha256(relevant)[:16]

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
    if len(set(value)) != len(value):
        raise _fail(source, path, f"lists a value twice: {value!r}")
    return value


class _Text(StrOptions):
    """A non-empty string (a ``StrOptions`` only so that scikit-learn's validator accepts it)."""

    def __init__(self):
        super().__init__(set())

    def is_satisfied_by(self, val):
        return isinstance(val, str) and bool(val.strip())

    def __str__(self):
        return "a non-empty string"


TEXT = _Text()
TOP_CONSTRAINTS = {"views": [POSITIVE_INT], "batch_size": [POSITIVE_INT], "output": [TEXT], "cache_dir": [TEXT, None],
                   "device": [DEVICE], "workers": [NON_NEGATIVE_INT, StrOptions({"auto"})],
                   "on_error": [StrOptions(set(ON_ERROR))]}
"""Allowed values of the recipe's top-level scalar keys."""
DATASET_CONSTRAINTS = {"root": [TEXT], "label": [TEXT], "val_fraction": [Float(0, 1, closed="neither")],
                       "test_fraction": [Float(0, 1, closed="neither")], "split_seed": [NON_NEGATIVE_INT]}
"""Allowed values of a ``[[datasets]]`` table's scalar keys."""
BACKBONE_CONSTRAINTS = {"name": [TEXT], "pretrained": [TEXT], "precision": [StrOptions(set(PRECISIONS))]}
"""Allowed values of a ``[[backbones]]`` table's keys."""


def _check_values(source: str, path: str, table: dict, constraints: dict) -> None:
    """Validate the keys of ``table`` that ``constraints`` names; the error names the key's path."""
    for key, allowed in constraints.items():
        if key in table:
            try:
                check_params(path or "recipe", {key: allowed}, {key: table[key]})
            except ValueError as err:
                raise _fail(source, f"{path}.{key}".lstrip("."), str(err)) from None


def _file(source: str, path: str, value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(source, path, f"expected a file path, got {value!r}")
    resolved = expand_path(value)
    resolved = resolved if resolved.is_absolute() else base / resolved
    if not resolved.is_file():
        raise _fail(source, path, f"no such file: {resolved}")
    return str(resolved)


def _import_modules(source: str, value: Any, base: Path) -> list[str]:
    """Import the recipe's ``imports`` (looked up on sys.path, then in the recipe's folder)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, "imports", f"expected a list of module names, got {value!r}")
    for i, module in enumerate(value):
        added = str(base) not in sys.path
        if added:
            sys.path.append(str(base))
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise _fail(source, f"imports[{i}]", f"cannot import {module!r}: {err}") from None
        finally:
            if added:
                sys.path.remove(str(base))
    return list(value)


def _dataset(source: str, index: int, table: Any, base: Path) -> DatasetSpec:
    where = f"datasets[{index}]"
    _check_keys(source, where, table, DATASET_KEYS)
    name = table.get("name")
    if name not in available():
        raise _fail(source, f"{where}.name", f"unknown dataset {name!r} (known: {', '.join(available())})")
    root = table.get("root")
    if name != "digits" and not root:
        raise _fail(source, f"{where}.root", f"required for {name!r}: the folder holding its files")
    _check_values(source, where, table, DATASET_CONSTRAINTS)
    options = {k: table[k] for k in FOLDER_OPTIONS if k in table}
    if options and name != "imagefolder":
        raise _fail(source, f"{where}.{next(iter(options))}", f"applies to imagefolder datasets only, not {name!r}")
    classnames = templates = None
    if "classnames" in table:
        classnames = _file(source, f"{where}.classnames", table["classnames"], base)
        try:
            load_classnames(classnames)
        except ValueError as err:
            raise _fail(source, f"{where}.classnames", str(err)) from None
    if "templates" in table:
        value = table["templates"]
        if isinstance(value, list):
            try:
                prompts(["x"], value)
            except ValueError as err:
                raise _fail(source, f"{where}.templates", str(err)) from None
            templates = value
        else:
            templates = _file(source, f"{where}.templates", value, base)
            try:
                load_prompts(templates)
            except ValueError as err:
                raise _fail(source, f"{where}.templates", str(err)) from None
    label = table.get("label")
    return DatasetSpec(name, root, label or "", classnames, templates, options)


def _label_datasets(source: str, specs: list[DatasetSpec]) -> None:
    """Give every dataset a distinct label: its own, its name when unique, else name:root-folder."""
    identities = [json.dumps(s.identity(), sort_keys=True) for s in specs]
    for i, identity in enumerate(identities):
        if identity in identities[:i]:
            raise _fail(source, f"datasets[{i}]", f"repeats datasets[{identities.index(identity)}]")
    names = [s.name for s in specs]
    derived = [s for s in specs if not s.label]
    for depth in (1, 2, None):
        for spec in derived:
            parts = expand_path(spec.root or spec.name).absolute().parts
            spec.label = spec.name if names.count(spec.name) == 1 else \
                f"{spec.name}:{'/'.join(parts[-depth:])}" if depth else f"{spec.name}#{specs.index(spec)}"
        labels = [s.label for s in specs]
        if all(labels.count(s.label) == 1 for s in derived):
            break
    labels = [s.label for s in specs]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            raise _fail(source, f"datasets[{i}].label", f"{label!r} names two datasets; give them distinct labels")


def parse_recipe(data: dict[str, Any], source: str = "<dict>", base: str | os.PathLike | None = None) -> Recipe:
    """Validate a recipe given as a dict (what the TOML file holds); files it names are resolved
    against ``base`` (the recipe's folder)."""
    base = Path(base) if base is not None else Path.cwd()
    _check_keys(source, "", data, TOP_KEYS)
    for required in ("datasets", "backbones", "adapters"):
        if required not in data:
            raise _fail(source, required, "missing")
    imports = _import_modules(source, data.get("imports", []), base)
    if not isinstance(data["datasets"], list) or not data["datasets"]:
        raise _fail(source, "datasets", "expected a non-empty array of tables ([[datasets]])")
    datasets = [_dataset(source, i, table, base) for i, table in enumerate(data["datasets"])]
    _label_datasets(source, datasets)
    backbones = []
    if not isinstance(data["backbones"], list) or not data["backbones"]:
        raise _fail(source, "backbones", "expected a non-empty array of tables ([[backbones]])")
    for i, table in enumerate(data["backbones"]):
        _check_keys(source, f"backbones[{i}]", table, BACKBONE_KEYS)
        if "name" not in table:
            raise _fail(source, f"backbones[{i}].name", "missing: an open_clip architecture name")
        _check_values(source, f"backbones[{i}]", table, BACKBONE_CONSTRAINTS)
        backbones.append(BackboneSpec(table["name"], table.get("pretrained"), table.get("precision", "auto")))
    adapters = data["adapters"]
    if not isinstance(adapters, list) or not adapters:
        raise _fail(source, "adapters", "expected a non-empty list of adapter names")
    for i, name in enumerate(adapters):
        if name not in ADAPTERS:
            raise _fail(source, f"adapters[{i}]", f"unknown adapter {name!r} (known: {', '.join(ADAPTERS)})")
    if len(set(adapters)) != len(adapters):
        raise _fail(source, "adapters", f"lists an adapter twice: {adapters!r}")
    grids = data.get("grids", {})
    _check_keys(source, "grids", grids, set(ADAPTERS))
    for adapter, grid in grids.items():
        if adapter not in adapters:
            raise _fail(source, f"grids.{adapter}", f"{adapter!r} is not among the recipe's adapters")
        _check_keys(source, f"grids.{adapter}", grid, set(ADAPTERS[adapter]._parameter_constraints) - {"device"})
        for param, values in grid.items():
            if not isinstance(values, list) or not values:
                raise _fail(source, f"grids.{adapter}.{param}", f"expected a non-empty list, got {values!r}")
        try:
            grid_axes(ADAPTERS[adapter], grid)
        except (ValueError, TypeError) as err:
            raise _fail(source, f"grids.{adapter}", str(err)) from None
    params = _fixed_params(source, data.get("params", {}), adapters, grids)
    _check_values(source, "", data, TOP_CONSTRAINTS)
    views, batch_size = data.get("views", 10), data.get("batch_size", 256)
    output, cache_dir = data.get("output", "adaptkit-out"), data.get("cache_dir")
    device, workers = data.get("device", "auto"), data.get("workers", "auto")
    return Recipe(datasets=datasets, backbones=backbones, adapters=list(adapters),
                  shots=_int_list(source, "shots", data.get("shots", [1, 2, 4, 8, 16]), 1),
                  seeds=_int_list(source, "seeds", data.get("seeds", [1, 2, 3]), 0),
                  views=views, output=output, grids=grids, params=params, batch_size=batch_size, device=device,
                  cache_dir=cache_dir, workers=workers, imports=imports, on_error=data.get("on_error", "raise"),
                  source=source)


def _fixed_params(source: str, table: Any, adapters: list[str], grids: dict) -> dict[str, dict[str, Any]]:
    """``[params.ADAPTER]``: constructor values of listed adapters, each checked against the
    adapter's constraints and not also searched by its grid."""
    _check_keys(source, "params", table, set(ADAPTERS))
    for adapter, values in table.items():
        if adapter not in adapters:
            raise _fail(source, f"params.{adapter}", f"{adapter!r} is not among the recipe's adapters")
        cls = ADAPTERS[adapter]
        _check_keys(source, f"params.{adapter}", values, set(cls._parameter_constraints) - {"device"})
        for name, value in values.items():
            if name in grids.get(adapter, {}):
                raise _fail(source, f"params.{adapter}.{name}", f"also searched by grids.{adapter}.{name}; set one")
            try:
                check_params(cls.__name__, {name: cls._parameter_constraints[name]}, {name: value})
            except ValueError as err:
                raise _fail(source, f"params.{adapter}.{name}", str(err)) from None
    return {adapter: dict(values) for adapter, values in table.items()}


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe TOML file (UTF-8)."""
    path = expand_path(path, "recipe")
    try:
        text = read_text(path, "recipe file")
    except (FileNotFoundError, ValueError) as err:
        raise RecipeError(str(err)) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from err
    except RecursionError:
        raise RecipeError(f"{path}: arrays or tables nested too deeply to be a recipe") from None
    return parse_recipe(data, str(path), base=path.parent)
