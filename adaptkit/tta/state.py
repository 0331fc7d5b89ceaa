"""Streaming state as a value: validated copies in and out, checksummed files.

``state_dict()`` of :class:`~adaptkit.tta.TDA` and :class:`~adaptkit.tta.TCA` returns copies and
``load_state_dict`` copies in, so forking a stream (one per test domain) never couples two of them.
Loaded states are checked (keys, shapes, float32, finite values, +inf only where a slot is empty)
before any of them is used; files carry the method's hyper-parameters, its text weights and a
SHA-256, and every error names the file.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..storage import UntrustedFileError, read_checked, write_checked

STATE_FORMAT_VERSION = 1


KEY_NORM_TOLERANCE = 1e-3
"""How far from 1 the norm of a stored key may be (float32 rounding of normalised features)."""


def check_state(state, expected: dict[str, tuple[tuple[int, ...], str]], owner: str) -> dict[str, torch.Tensor]:
    """Validate ``state`` against ``expected`` {name: (shape, kind)}, kind one of ``"finite"``,
    ``"keys"`` (finite rows of unit norm, or zero rows for empty slots), ``"entropy"`` (finite or
    +inf for an empty slot), ``"mask"`` (0 or 1); return float32 copies."""
    if not isinstance(state, dict):
        raise TypeError(f"{owner} state must be a dict of tensors; got {type(state).__name__}")
    if set(state) != set(expected):
        raise ValueError(f"{owner} state must hold exactly {sorted(expected)}; got {sorted(state)}")
    out = {}
    for name, (shape, kind) in expected.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{owner} state[{name!r}] must be a tensor; got {type(tensor).__name__}")
        if tensor.dtype != torch.float32:
            raise ValueError(f"{owner} state[{name!r}] must be float32; got {tensor.dtype}")
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"{owner} state[{name!r}] must have shape {tuple(shape)}; got {tuple(tensor.shape)}")
        if kind == "entropy":
            bad = torch.isnan(tensor) | (tensor == -math.inf) | (tensor < 0)
        elif kind == "mask":
            bad = (tensor != 0) & (tensor != 1)
        elif kind == "keys" and bool(torch.isfinite(tensor).all()):
            norms = tensor.norm(dim=-1)
            bad = ((norms - 1).abs() > KEY_NORM_TOLERANCE) & (norms != 0)
        else:
            kind = "finite"
            bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            what = {"entropy": "NaN, negative or -inf entropies (+inf marks an empty slot)",
                    "mask": "values other than 0 and 1", "finite": "NaN or infinite values",
                    "keys": "keys that are not L2-normalised (rows of norm 1, or 0 for an empty slot)"}[kind]
            raise ValueError(f"{owner} state[{name!r}] holds {what}")
        out[name] = tensor.detach().clone()
    return out


def save_state(path: str | os.PathLike, method: str, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    """Write a checksummed state file (atomically)."""
    write_checked(path, {k: v.detach().cpu() for k, v in tensors.items()},
                  {"format": f"adaptkit-{method}-state", "format_version": STATE_FORMAT_VERSION, **header})


def read_state(path: str | os.PathLike, method: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of a state file, verified; errors name the file."""
    return read_checked(path, f"adaptkit-{method}-state", STATE_FORMAT_VERSION, f"a {method.upper()} state file")


def refuse(path, method: str, err: Exception) -> UntrustedFileError:
    """A state file whose content fails validation, named."""
    return UntrustedFileError(f"{path} is not a {method.upper()} state file adaptkit can trust: {err}")
