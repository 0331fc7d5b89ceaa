"""The adapter file: one checksummed safetensors file, written and read here, never pickle.

The header records the adapter class, its hyper-parameters, its non-tensor fitted attributes,
class names, the backbone identity and adaptkit's version; a SHA-256 covers header and tensors
(:mod:`adaptkit.storage`). The schema is what each adapter class declares: ``fitted_tensors``
(name -> dtype) and ``fitted_attributes`` (name -> JSON type). Writing refuses an attribute the
class does not declare (so no file is written that cannot be read); reading refuses files that
are truncated, edited, of an unknown adapter class, of another format version, or off the schema.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .._params import check_params
from .._validation import resolve_device
from ..storage import UntrustedFileError, expand_path, read_checked, write_checked
from .registry import by_class_name

ADAPTER_FORMAT = "adaptkit-adapter"
ADAPTER_FORMAT_VERSION = 2
HEADER_KEYS = {"format": str, "format_version": int, "adaptkit": str, "class": str, "params": dict,
               "attributes": dict, "classes_kind": str, "tensors": dict, "classnames": (list, type(None)),
               "backbone": (dict, type(None))}
NOT_STORED = ("device_", "classnames_", "backbone_identity_")
"""Fitted attributes not stored as such: the device is chosen at load, the rest live in the header."""


def jsonable(value: Any) -> Any:
    """numpy scalars and arrays, tuples and nested containers as plain JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def save_adapter(adapter, path: str | os.PathLike, *, classnames=None, backbone=None) -> None:
    """Write a fitted adapter to one safetensors file, atomically (see :func:`load_adapter`).
    ``classnames`` and ``backbone`` (an :class:`adaptkit.Backbone`) are recorded so a
    :class:`adaptkit.Predictor` can name classes and check how images must be encoded."""
    cls = type(adapter)
    if not hasattr(cls, "fitted_tensors") or not hasattr(cls, "_parameter_constraints"):
        raise TypeError(f"adapter must be an adaptkit adapter; got {cls.__name__}")
    check_is_fitted(adapter)
    if by_class_name().get(cls.__name__) is not cls:
        raise ValueError(f"{cls.__name__} is not registered, so its file could not be read back: give the class a "
                         "name (name = 'my_adapter') to register it")
    identity = getattr(adapter, "backbone_identity_", None)
    if backbone is not None:
        identity = getattr(backbone, "identity", None)
        if not isinstance(identity, dict):
            raise TypeError(f"backbone must be an adaptkit.Backbone (its identity is recorded in the file); "
                            f"got {type(backbone).__name__}")
    tensors, attributes = {}, {}
    for name, value in vars(adapter).items():
        if not name.endswith("_") or name.startswith("_") or name in NOT_STORED:
            continue
        if isinstance(value, torch.Tensor):
            if name not in cls.fitted_tensors:
                raise ValueError(f"{cls.__name__} has the tensor {name!r}, which its fitted_tensors do not declare")
            tensors[name] = value
            continue
        value = jsonable(value)
        kind = cls.fitted_attributes.get(name)
        if kind is None or not isinstance(value, kind):
            raise ValueError(f"{cls.__name__}.{name} ({type(value).__name__}) is not declared in its "
                             "fitted_attributes (name -> JSON type), so it cannot be stored")
        attributes[name] = value
    if classnames is not None:
        if isinstance(classnames, str) or not all(isinstance(c, str) for c in classnames):
            raise TypeError("classnames must be a list of strings, one per class")
        classnames = list(classnames)
        if len(classnames) != adapter.n_classes_:
            raise ValueError(f"classnames has {len(classnames)} names but the adapter has {adapter.n_classes_} classes")
    else:
        classnames = getattr(adapter, "classnames_", None)
    header = {"format": ADAPTER_FORMAT, "format_version": ADAPTER_FORMAT_VERSION, "class": cls.__name__,
              "params": jsonable(adapter.get_params(deep=False)), "attributes": attributes,
              "classes_kind": "str" if adapter.classes_.dtype.kind in "US" else "int",
              "classnames": classnames, "backbone": identity}
    write_checked(expand_path(path), tensors, header)


def _check_schema(header: dict, tensors: dict[str, torch.Tensor], refuse) -> type:
    for key, kind in HEADER_KEYS.items():
        if not isinstance(header.get(key), kind):
            raise refuse(f"header key {key!r} is missing or not a {_kind_name(kind)}")
    unknown = set(header) - set(HEADER_KEYS)
    if unknown:
        raise refuse(f"unknown header keys {sorted(unknown)}")
    if header["format_version"] != ADAPTER_FORMAT_VERSION:
        raise refuse(f"adapter format {header['format_version']}, written by adaptkit {header['adaptkit']}; this "
                     f"adaptkit reads format {ADAPTER_FORMAT_VERSION}. Fit the adapter again and save it")
    classes = by_class_name()
    cls = classes.get(header["class"])
    if cls is None:
        raise refuse(f"unknown adapter class {header['class']!r} (known: {sorted(classes)}; an adapter of your own "
                     "registers when its module is imported)")
    params = {k: v for k, v in header["params"].items() if k != "device"}
    expected = set(cls._parameter_constraints) - {"device"}
    defaults = {name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    if set(params) - expected or expected - set(params) - defaults:
        raise refuse(f"{cls.__name__} parameters {sorted(params)}, expected {sorted(expected)} (a file written "
                     "before a parameter existed may leave out those with defaults)")
    try:
        check_params(cls.__name__, cls._parameter_constraints, params)
    except ValueError as err:
        raise refuse(str(err)) from None
    for name, tensor in tensors.items():
        dtype = cls.fitted_tensors.get(name)
        if dtype is None:
            raise refuse(f"{cls.__name__} has no fitted tensor {name!r}")
        if tensor.dtype != dtype:
            raise refuse(f"tensor {name!r} is {tensor.dtype}, expected {dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise refuse(f"tensor {name!r} holds NaN or infinite values")
    missing = set(cls.fitted_tensors) - set(tensors) - cls.optional_tensors
    if missing:
        raise refuse(f"fitted tensors {sorted(missing)} are missing")
    for name, value in header["attributes"].items():
        kind = cls.fitted_attributes.get(name)
        if kind is None or not isinstance(value, kind):
            raise refuse(f"attribute {name!r} is unknown or of the wrong type")
    if header["classes_kind"] not in ("str", "int") or "classes_" not in header["attributes"]:
        raise refuse("it does not record the adapter's classes")
    return cls


def load_adapter(path: str | os.PathLike, device: str = "auto"):
    """Read an adapter written by ``adapter.save(path)``, placing its tensors on ``device``.

    The loaded adapter also carries ``classnames_`` and ``backbone_identity_`` (``None`` when not
    recorded). Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the
    file) for anything it cannot trust."""
    path = expand_path(path)
    target = resolve_device(device)
    header, tensors = read_checked(path, ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION, "an adapter file")

    def refuse(reason: str) -> UntrustedFileError:
        return UntrustedFileError(f"{path} is not an adapter file adaptkit can trust: {reason}")

    cls = _check_schema(header, tensors, refuse)
    adapter = cls(**{**header["params"], "device": device})
    for name, value in header["attributes"].items():
        setattr(adapter, name, value)
    for name, tensor in tensors.items():
        setattr(adapter, name, tensor.to(target))
    if "text_weights_" not in tensors:
        if cls.needs_text:
            raise refuse(f"{cls.__name__} needs its text weights, which the file does not hold")
        adapter.text_weights_ = None
    adapter.classes_ = np.asarray(adapter.classes_, dtype=str if header["classes_kind"] == "str" else np.int64)
    if isinstance(getattr(adapter, "tuning_results_", None), dict):
        adapter.tuning_results_["val_accuracy"] = np.asarray(adapter.tuning_results_.get("val_accuracy", []))
    adapter.device_ = target
    n_classes, n_features = len(adapter.classes_), adapter.n_features_in_
    if header["classnames"] is not None and len(header["classnames"]) != n_classes:
        raise refuse(f"{len(header['classnames'])} class names for {n_classes} classes")
    text = adapter.text_weights_
    if text is not None and tuple(text.shape) != (n_classes, n_features):
        raise refuse(f"text weights of shape {tuple(text.shape)} do not match {n_classes} classes × "
                     f"{n_features} features")
    adapter.classnames_ = header["classnames"]
    adapter.backbone_identity_ = header["backbone"]
    return adapter
