"""Declared hyper-parameter constraints, in scikit-learn's ``_parameter_constraints`` style.

Each class declares ``{name: [constraint, ...]}`` with scikit-learn's constraint objects
(``Interval``, ``StrOptions``, ``None``, types); :func:`check_params` validates values against
them with scikit-learn's own :func:`validate_parameter_constraints`, whose
``InvalidParameterError`` is both a ``ValueError`` and a ``TypeError`` and names the parameter,
the allowed values and the value received. Two additions: :class:`Int`/:class:`Float` intervals
never accept ``True``/``False``, and :data:`DEVICE` accepts what ``torch.device`` parses.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions, validate_parameter_constraints

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest finite float32: bounds for weights that multiply float32 logits."""

__all__ = ["DEVICE", "FLOAT32_MAX", "Float", "Int", "InvalidParameterError", "NON_NEGATIVE_INT", "POSITIVE_INT",
           "StrOptions", "check_params"]


class Int(Interval):
    """An integer interval that refuses booleans (``True`` is an ``int`` in Python)."""

    def __init__(self, left, right, *, closed="both"):
        super().__init__(Integral, left, right, closed=closed)

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


class Float(Interval):
    """A real interval (ints allowed) that refuses booleans; NaN and ±inf never satisfy it."""

    def __init__(self, left, right, *, closed="both"):
        super().__init__(Real, left, right, closed=closed)

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


POSITIVE_INT = Int(1, None, closed="left")
NON_NEGATIVE_INT = Int(0, None, closed="left")


class _Device(StrOptions):
    """``"auto"`` or anything ``torch.device`` accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a device).
    A ``StrOptions`` subclass only so that scikit-learn's validator accepts it as a constraint."""

    def __init__(self):
        super().__init__({"auto", "cpu", "cuda"})

    def is_satisfied_by(self, val):
        if isinstance(val, torch.device):
            return True
        if not isinstance(val, str):
            return False
        if val == "auto":
            return True
        try:
            torch.device(val)
        except (RuntimeError, TypeError):
            return False
        return True

    def __str__(self):
        return "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device"


DEVICE = _Device()


def check_params(owner: str, constraints: Mapping[str, list], params: Mapping[str, Any]) -> None:
    """Validate ``params`` against ``constraints``; the error names ``owner``, the parameter, what
    is allowed and the value received."""
    validate_parameter_constraints(dict(constraints), dict(params), caller_name=owner)
