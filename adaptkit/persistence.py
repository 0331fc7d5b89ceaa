"""Loading fitted adapters: one checksummed safetensors file, never pickle.

:meth:`adaptkit.adapters.Adapter.save` writes the adapter's fitted tensors with a JSON header
(adapter class, hyper-parameters, the other fitted attributes, class names, backbone identity,
adaptkit version) and a SHA-256 over header and tensors (:mod:`adaptkit.storage`).
:func:`load_adapter` refuses files that are truncated, edited, of an unknown adapter class, of
another format version, or whose header does not follow the schema: unknown keys, parameters
outside the adapter's constraints, tensors it does not declare or of the wrong dtype, NaN or
infinite values.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from . import adapters
from ._params import check_params
from ._validation import resolve_device
from .adapters.base import ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION
from .storage import UntrustedFileError, expand_path, read_checked

HEADER_KEYS = {"format": str, "format_version": int, "adaptkit": str, "class": str, "params": dict,
               "attributes": dict, "classes_kind": str, "tensors": dict, "classnames": (list, type(None)),
               "backbone": (dict, type(None))}
ATTRIBUTES = {"classes_": list, "n_features_in_": int, "n_iter_": (int, list), "tuning_results_": dict,
              "is_fitted_": bool, "text_weights_": type(None)}
"""Non-tensor fitted attributes an adapter file may hold, with their JSON types."""


def registry() -> dict[str, type[adapters.Adapter]]:
    """Adapter classes by class name, as adapter files record them."""
    return {cls.__name__: cls for cls in adapters.ADAPTERS.values()}


def _check_schema(header: dict, tensors: dict[str, torch.Tensor], refuse) -> type[adapters.Adapter]:
    for key, kind in HEADER_KEYS.items():
        if not isinstance(header.get(key), kind):
            raise refuse(f"header key {key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    unknown = set(header) - set(HEADER_KEYS)
    if unknown:
        raise refuse(f"unknown header keys {sorted(unknown)}")
    if header["format_version"] != ADAPTER_FORMAT_VERSION:
        raise refuse(f"adapter format {header['format_version']}, written by adaptkit {header['adaptkit']}; this "
                     f"adaptkit reads format {ADAPTER_FORMAT_VERSION}. Fit the adapter again and save it")
    classes = registry()
    cls = classes.get(header["class"])
    if cls is None:
        raise refuse(f"unknown adapter class {header['class']!r} (known: {sorted(classes)})")
    params = {k: v for k, v in header["params"].items() if k != "device"}
    expected = set(cls._parameter_constraints) - {"device"}
    if set(params) != expected:
        raise refuse(f"{cls.__name__} parameters {sorted(params)}, expected {sorted(expected)}")
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
    missing = set(cls.fitted_tensors) - set(tensors) - {"text_weights_"}
    if missing:
        raise refuse(f"fitted tensors {sorted(missing)} are missing")
    for name, value in header["attributes"].items():
        kind = ATTRIBUTES.get(name)
        if kind is None or not isinstance(value, kind):
            raise refuse(f"attribute {name!r} is unknown or of the wrong type")
    if header["classes_kind"] not in ("str", "int") or "classes_" not in header["attributes"]:
        raise refuse("it does not record the adapter's classes")
    return cls


def load_adapter(path: str | os.PathLike, device: str = "auto") -> adapters.Adapter:
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
    attributes: dict[str, Any] = header["attributes"]
    for name, value in attributes.items():
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


def save_adapter(adapter: adapters.Adapter, path: str | os.PathLike, *, classnames=None, backbone=None) -> None:
    """``adapter.save(path, classnames=..., backbone=...)`` as a function."""
    if not isinstance(adapter, adapters.Adapter):
        raise TypeError(f"adapter must be an adaptkit adapter; got {type(adapter).__name__}")
    adapter.save(path, classnames=classnames, backbone=backbone)
