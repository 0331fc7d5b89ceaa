"""Prompt templates and zero-shot prompts.

The per-dataset templates are the hand-written ones of the CoOp / Tip-Adapter protocol; ImageNet
uses the 7-template ensemble. :meth:`adaptkit.Backbone.text_classifier` turns them into weights.

Prompts come in three forms: templates with one ``{}`` placeholder (CoOp), templates with one
``{c}`` placeholder (CLIP_benchmark), or a dict {class name: [prompts]} with ready sentences per
class (CuPL and other generated descriptions). :func:`load_prompts` reads them from a file and
:func:`load_classnames` reads class names (one per line), as recipes name them.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from .storage import json_sha256, read_text

IMAGENET_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

DATASET_TEMPLATES: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "caltech101": ("a photo of a {}.",),
    "oxford_pets": ("a photo of a {}, a type of pet.",),
    "stanford_cars": ("a photo of a {}.",),
    "oxford_flowers": ("a photo of a {}, a type of flower.",),
    "food101": ("a photo of {}, a type of food.",),
    "fgvc_aircraft": ("a photo of a {}, a type of aircraft.",),
    "sun397": ("a photo of a {}.",),
    "dtd": ("{} texture.",),
    "eurosat": ("a centered satellite photo of {}.",),
    "ucf101": ("a photo of a person doing {}.",),
    "digits": ("a photo of the digit {}.", "a blurry photo of the number {}.", "a drawing of the digit {}."),
}

DEFAULT_TEMPLATES = ("a photo of a {}.",)


Prompts = Sequence[str] | Mapping[str, Sequence[str]]


def _fill(template: str, name: str) -> str:
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as err:  # unbalanced braces
        raise ValueError(f"template {template!r} is not a format string ({err}); write {{}} or {{c}} for the class "
                         "name and {{ }} for literal braces") from None
    if len(fields) != 1 or fields[0] not in ("", "c"):
        raise ValueError(f"each template must contain exactly one '{{}}' or '{{c}}' placeholder for the class "
                         f"name; got {template!r} (a dict {{class name: [prompts]}} gives ready sentences per class)")
    return template.format(name) if fields[0] == "" else template.format(c=name)


def prompts(classnames: Sequence[str], templates: Prompts) -> list[list[str]]:
    """The prompts of each class, class by class: templates filled with the class name, or the
    class's own list from a {class name: [prompts]} dict."""
    if isinstance(classnames, str) or not classnames or not all(isinstance(c, str) for c in classnames):
        raise ValueError("classnames must be a non-empty list of strings")
    if isinstance(templates, Mapping):
        missing = [c for c in classnames if c not in templates]
        unknown = [c for c in templates if c not in set(classnames)]
        if missing or unknown:
            raise ValueError(f"templates as a dict must give prompts for exactly the classes: missing "
                             f"{missing[:5]}, unknown {unknown[:5]}")
        out = []
        for name in classnames:
            group = templates[name]
            if isinstance(group, str) or not group or not all(isinstance(t, str) and t for t in group):
                raise ValueError(f"templates[{name!r}] must be a non-empty list of prompt strings; got {group!r}")
            out.append(list(group))
        return out
    if isinstance(templates, str) or not templates or not all(isinstance(t, str) for t in templates):
        raise ValueError("templates must be a non-empty list of strings such as ['a photo of a {}.'], or a dict "
                         "{class name: [prompts]}")
    return [[_fill(template, name) for template in templates] for name in classnames]


def prompts_sha256(classnames: Sequence[str], templates: Prompts) -> str:
    """SHA-256 of every prompt of every class (what a text classifier was built from)."""
    return json_sha256(prompts(classnames, templates))


def load_prompts(path: str | os.PathLike) -> list[str] | dict[str, list[str]]:
    """Templates or per-class prompts from a file: JSON (a list of templates, or a dict {class
    name: [prompts]} as CuPL publishes them), else one template per line."""
    text = read_text(path, "templates file")
    if Path(path).suffix.lower() == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(value, (list, dict)):
            raise ValueError(f"{path}: expected a JSON list of templates or a dict of class name -> prompts")
        if isinstance(value, list):
            _check_templates(value, path)
        return value
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{path}: no templates (one per line)")
    _check_templates(lines, path)
    return lines


def _check_templates(templates: list, path) -> None:
    """Every template of a file fills, or a ValueError naming the file and the line's template."""
    for template in templates:
        if not isinstance(template, str):
            raise ValueError(f"{path}: templates must be strings; got {template!r}")
        try:
            _fill(template, "x")
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def load_classnames(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored)."""
    names = [line.strip() for line in read_text(path, "class-name file").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names (one per line)")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: class names repeat, e.g. {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    return names
