"""Input checks shared by every public entry point.

Each check converts numpy arrays or torch tensors to torch and raises a ``ValueError`` or
``TypeError`` that names the argument, the expected value and the received one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device is {device!r} but this machine has no CUDA device torch can use "
                             f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return resolved


def _as_tensor(value, name: str) -> torch.Tensor:
    """A dense tensor of ``value``, detached from any autograd graph (adapters are closed-form:
    fitted state never keeps a graph alive, and copies of it work)."""
    if isinstance(value, torch.Tensor):
        if value.is_sparse:
            raise TypeError(f"{name} is a sparse tensor; adaptkit needs dense features (call .to_dense())")
        return value.detach()
    if scipy.sparse.issparse(value):
        raise TypeError(f"{name} is a sparse matrix; adaptkit needs dense features (call .toarray())")
    if not isinstance(value, (np.ndarray, list, tuple)) and not hasattr(value, "__array__"):
        raise TypeError(f"{name} must be a numpy array or torch tensor; got {type(value).__name__}")
    array = np.asarray(value)
    if array.dtype.kind == "c":
        raise ValueError(f"{name}: Complex data not supported (got dtype {array.dtype}); features must be real")
    if array.dtype.kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a numeric array; converting its objects failed: {err}") from err
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array; got dtype {array.dtype}")
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def check_features(
    X,
    name: str = "X",
    *,
    ndims: tuple[int, ...] = (2,),
    n_features: int | None = None,
    device: torch.device | None = None,
    estimator: str = "the adapter",
) -> torch.Tensor:
    """Return ``X`` as a finite float32 tensor with one of ``ndims`` dimensions.

    The last axis holds the ``n_features`` feature channels; (N, D) for samples,
    (N, V, D) where augmented views are allowed.
    """
    tensor = _as_tensor(X, name)
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers; got dtype {tensor.dtype}")
    if tensor.ndim not in ndims:
        shapes = " or ".join({2: "(n_samples, n_features)", 3: "(n_samples, n_views, n_features)"}[d] for d in ndims)
        hint = " Reshape your data with X.reshape(1, -1) for a single sample." if tensor.ndim == 1 else ""
        raise ValueError(f"{name} must be a {'/'.join(map(str, ndims))}-D array of shape {shapes}; "
                         f"got shape {tuple(tensor.shape)}.{hint}")
    for axis, what in ((0, "sample"), (tensor.ndim - 1, "feature")):
        if tensor.shape[axis] == 0:
            raise ValueError(f"{name}: found array with 0 {what}(s) (shape={tuple(tensor.shape)}) while a minimum "
                             "of 1 is required.")
    if n_features is not None and tensor.shape[-1] != n_features:
        raise ValueError(f"{name} has {tensor.shape[-1]} features, but {estimator} is expecting {n_features} "
                         "features as input (the dimension it was fitted on)")
    tensor = tensor.to(device=device, dtype=torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values; features must be finite")
    return tensor


def check_labels(y, n_samples: int, name: str = "y") -> torch.Tensor:
    """Return ``y`` as an int64 tensor of shape (n_samples,)."""
    tensor = _as_tensor(y, name)
    if tensor.ndim != 1 or tensor.shape[0] != n_samples:
        raise ValueError(f"{name} must have shape ({n_samples},) to match the samples; got {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        if not torch.equal(tensor, tensor.round()):
            raise ValueError(f"{name} must hold integer class indices; got non-integer values")
    elif tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices; got dtype bool")
    return tensor.to(torch.int64)


def check_label_range(y: torch.Tensor, n_classes: int, name: str = "y") -> None:
    """Raise unless every label lies in [0, n_classes)."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{name} must hold class indices in [0, {n_classes}); "
                         f"got values in [{int(y.min())}, {int(y.max())}]")


def check_text_weights(text_weights, n_features: int, device: torch.device | None = None) -> torch.Tensor:
    """Return the (C, D) text classifier as float32 on ``device``."""
    T = check_features(text_weights, "text_weights", device=device)
    if T.shape[1] != n_features:
        raise ValueError(f"text_weights has dimension {T.shape[1]} but the image features have {n_features}; "
                         "both must come from the same backbone")
    return T
