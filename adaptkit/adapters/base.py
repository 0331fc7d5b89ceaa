"""The shared base of every closed-form adapter: a scikit-learn classifier computing in torch.

Subclasses implement ``_fit(X, y)`` on validated tensors and ``_grid_logits(X, candidates)``
(the logits of several hyper-parameter sets at once); ``_logits(X)`` is the one-candidate case
of the same code, so a grid search and a single prediction compute identical numbers.

Defining a subclass with a ``name`` registers it (:mod:`adaptkit.adapters.registry`); its extra
``fit`` inputs (``fit_inputs``) and what its files store (``fitted_tensors``,
``fitted_attributes``) are declared on the class, so callers and the adapter file need no
knowledge of any particular adapter.

The tuning contract (see :func:`adaptkit.tune`): ``state_params`` lists the hyper-parameters
that shape fitted state (a new value needs :meth:`_refit`); the others only re-weight fitted
terms and are scored for many values at once. ``batched_params`` are state parameters whose
grid the adapter evaluates exactly by itself (ProKeR's kernel and ridge).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .._clip import LOGIT_SCALE
from .._params import DEVICE, FLOAT32_MAX, check_params
from .._validation import check_features, check_label_range, check_labels, check_text_weights, resolve_device
from .file import save_adapter
from .registry import FitInput, register

logger = logging.getLogger("adaptkit")

MAX_LOGIT_ELEMENTS = 1 << 26
"""Logit entries (grid points × samples × classes) held at once: 256 MiB of float32."""

NORM_TOLERANCE = 1e-2
"""Rows whose L2 norm differs from 1 by more than this are reported as not normalised."""


def correct_rows(logits: torch.Tensor, y: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Per grid point, which rows ``argmax`` classifies as ``y``: (G, N) bool from (G, N, C).

    ``argmax`` returns the first index of the row maximum, so row n is correct exactly when its
    true logit equals the maximum and no earlier class reaches it. ``before`` (N, C) is 0 for
    classes c < y_n and -inf elsewhere (:func:`earlier_classes`). Two ``amax`` passes replace the
    much slower ``argmax`` and give the same answer, ties included.
    """
    top = logits.amax(dim=-1)
    true = logits.gather(-1, y.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(-1)
    earlier = (logits + before).amax(dim=-1)
    return (true == top) & (earlier < top)


def count_correct(logits: torch.Tensor, y: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Per grid point, how many rows ``argmax`` classifies as ``y``: (G,) int64 (see :func:`correct_rows`)."""
    return correct_rows(logits, y, before).sum(dim=-1)


def earlier_classes(y: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, C): 0 where c < y_n, -inf elsewhere (see :func:`correct_rows`)."""
    classes = torch.arange(n_classes, device=y.device)
    zero = torch.zeros((), dtype=dtype, device=y.device)
    return torch.where(classes[None, :] < y[:, None], zero, torch.tensor(-torch.inf, dtype=dtype, device=y.device))


class Adapter(ClassifierMixin, BaseEstimator):
    """Base class. Subclasses set the class attributes below and implement ``_fit``/``_grid_logits``.

    ``fit(X, y, *, text_weights=None)`` accepts X of shape (N, D), or (N, V, D) with V augmented
    views per image, which the adapter uses as ``training_views`` says: ``"flatten"`` (every view
    a sample) or ``"mean"`` (renormalised mean per image). With ``text_weights`` (C, D), labels
    are indices in [0, C); without, any labels work and ``classes_`` holds their sorted values.

    Features are expected L2-normalised, as CLIP's are. The zero-shot term and every cosine
    affinity normalise their inputs, so scaling a row never changes them; adapters whose learned
    term models the features as given (``scale_sensitive``: GDA, the linear probe) warn once when
    rows are far from unit norm.
    """

    name: ClassVar[str | None] = None
    """Registry name (lower-case identifier); a class that sets it registers itself when defined.
    Subclasses that do not set their own are not registered."""
    fit_inputs: ClassVar[dict[str, FitInput]] = {}
    """Extra keyword inputs of ``fit`` (captions, unlabeled features, ...): name -> :class:`FitInput`.
    Callers pass them by name; :func:`adaptkit.leaderboard` skips the adapter without a required one."""
    param_grid: ClassVar[dict[str, tuple]] = {}
    """Default validation search space for ``ak.tune``."""
    _parameter_constraints: ClassVar[dict[str, list]] = {"device": [DEVICE]}
    """Allowed values of every constructor parameter (scikit-learn constraint objects)."""
    state_params: ClassVar[frozenset[str]] = frozenset()
    batched_params: ClassVar[frozenset[str]] = frozenset()
    training_views: ClassVar[str] = "flatten"
    needs_text: ClassVar[bool] = False
    scale_sensitive: ClassVar[bool] = False
    fitted_tensors: ClassVar[dict[str, torch.dtype]] = {"text_weights_": torch.float32}
    """Fitted tensor attributes and their dtypes: what an adapter file may hold."""
    optional_tensors: ClassVar[frozenset[str]] = frozenset({"text_weights_"})
    """Fitted tensors a file may leave out (no text weights; state only some settings have)."""
    fitted_attributes: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "classes_": list, "n_features_in_": int, "tuning_results_": dict, "text_weights_": type(None)}
    """Non-tensor fitted attributes and their JSON types (as stored): the rest of the file's schema."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = None
        elif cls.name is not None:
            register(cls)

    def _check_hyperparameters(self) -> None:
        """Validate every constructor value against ``_parameter_constraints``."""
        check_params(type(self).__name__, self._parameter_constraints, self.get_params(deep=False))

    def fit(self, X, y, *, text_weights=None, **inputs):
        """Fit on support features X (N, D) or (N, V, D) with labels y (N,) and the adapter's
        declared ``fit_inputs`` as keywords. Returns self."""
        self._check_hyperparameters()
        name = type(self).__name__
        self._check_fit_inputs(inputs)
        device = resolve_device(self.device)
        X = check_features(X, "X", ndims=(2, 3), device=device)
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None")
        y_values = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if y_values.ndim == 2 and y_values.shape[1] == 1:
            y_values = column_or_1d(y_values, warn=True)
        if y_values.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X; got {y_values.shape}")
        try:
            check_classification_targets(y_values)
        except ValueError as err:
            raise ValueError(f"y must hold class labels: {err}") from None
        if text_weights is None:
            if self.needs_text:
                raise ValueError(f"{name} needs text_weights: the (C, D) zero-shot classifier, "
                                 "e.g. backbone.text_classifier(classnames, templates)")
            self.classes_, encoded = np.unique(y_values, return_inverse=True)
            y = torch.as_tensor(encoded.reshape(-1), dtype=torch.int64)
            self.text_weights_ = None
        else:
            self.text_weights_ = F.normalize(check_text_weights(text_weights, X.shape[-1], device), dim=-1)
            y = check_labels(y_values, X.shape[0])
            check_label_range(y, self.text_weights_.shape[0])
            self.classes_ = np.arange(self.text_weights_.shape[0])
        y = y.to(device)
        if X.ndim == 3:
            if self.training_views == "flatten":
                X, y = X.flatten(0, 1), y.repeat_interleave(X.shape[1])
            else:
                X = F.normalize(X.mean(dim=1), dim=-1)
        self._warn_if_not_normalised(X, "X")
        self.n_features_in_ = X.shape[1]
        self.device_ = device
        self._take_inputs(X, **inputs)
        self._fit(X, y)
        self._make_contiguous()
        return self

    def _skip_reason(self, n_rows: int) -> str | None:
        """Why :func:`adaptkit.leaderboard` should not fit and search this configuration on
        ``n_rows`` support rows (views flattened), e.g. an exact solve too large; ``None``: go ahead."""
        return None

    def _approximation(self) -> str | None:
        """What this configuration approximates, as a leaderboard row shows it; ``None`` when exact."""
        return None

    def _check_fit_inputs(self, inputs: dict[str, Any]) -> None:
        """Only declared inputs, every required one present."""
        declared = type(self).fit_inputs
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none besides X, y and text_weights"
            raise TypeError(f"{type(self).__name__}.fit got unexpected inputs {unknown}; its inputs: {known}")
        for input_name, spec in declared.items():
            if spec.required and inputs.get(input_name) is None:
                raise ValueError(f"{type(self).__name__} needs {input_name}: {spec.description}")

    def _take_inputs(self, X: torch.Tensor, **inputs) -> None:
        """Validate and keep the declared ``fit_inputs`` (X: the validated support features as
        ``_fit`` receives them); kept inputs start with ``_``, so files never store them."""

    def _warn_if_not_normalised(self, X: torch.Tensor, name: str) -> None:
        """Warn once when a scale-sensitive adapter mixes its learned term with the (normalising)
        zero-shot term on rows far from unit norm."""
        if not self.scale_sensitive or self.text_weights_ is None or getattr(self, "_norm_warned", False):
            return
        norms = X.norm(dim=-1)
        if norms.numel() and float((norms - 1.0).abs().max()) > NORM_TOLERANCE:
            self._norm_warned = True
            warnings.warn(f"{name} rows are not L2-normalised (norms from {float(norms.min()):.3g} to "
                          f"{float(norms.max()):.3g}): {type(self).__name__} models the features as given, while "
                          "its zero-shot term is a cosine, so the two no longer share CLIP's scale. Pass "
                          "CLIP-like features (torch.nn.functional.normalize(X, dim=-1)).",
                          UserWarning, stacklevel=3)

    def _make_contiguous(self) -> None:
        """Store fitted tensors contiguously, so a saved and reloaded adapter runs the same kernels
        and gives bit-identical outputs."""
        for name, value in list(vars(self).items()):
            if name.endswith("_") and isinstance(value, torch.Tensor) and not value.is_contiguous():
                setattr(self, name, value.contiguous())

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def _grid_logits(self, X: torch.Tensor, candidates: list[dict[str, Any]]) -> torch.Tensor:
        """Logits (G, N, C) for every candidate parameter set (a dict of the parameters that
        differ from the adapter's own)."""
        raise NotImplementedError

    def _logits(self, X: torch.Tensor) -> torch.Tensor:
        return self._grid_logits(X, [{}])[0]

    @property
    def n_classes_(self) -> int:
        return len(self.classes_)

    def _zero_shot_logits(self, X: torch.Tensor) -> torch.Tensor:
        """100 · normalise(X) Tᵀ, or zeros without text weights: (N, C)."""
        if self.text_weights_ is None:
            return X.new_zeros(X.shape[0], self.n_classes_)
        return LOGIT_SCALE * F.normalize(X, dim=-1) @ self.text_weights_.T

    def _check_X(self, X) -> torch.Tensor:
        check_is_fitted(self)
        X = check_features(X, "X", n_features=self.n_features_in_, device=self.device_,
                           estimator=type(self).__name__)
        self._warn_if_not_normalised(X, "X")
        return X

    def _encode_labels(self, y, n_samples: int, name: str = "y") -> torch.Tensor:
        """Labels of fitted classes -> int64 indices into ``classes_`` (N,) on the adapter's device."""
        if self.text_weights_ is not None:
            indices = check_labels(y, n_samples, name)
            check_label_range(indices, self.n_classes_, name)
            return indices.to(self.device_)
        values = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if values.shape != (n_samples,):
            raise ValueError(f"{name} must have shape ({n_samples},) to match the samples; got {values.shape}")
        positions = np.searchsorted(self.classes_, values).clip(max=self.n_classes_ - 1)
        unknown = values[self.classes_[positions] != values]
        if unknown.size:
            raise ValueError(f"{name} holds labels the adapter was not fitted on: {np.unique(unknown)[:5].tolist()}")
        return torch.as_tensor(positions, dtype=torch.int64, device=self.device_)

    def logits(self, X) -> torch.Tensor:
        """Logits (N, C) as a torch tensor on the adapter's device: the pipeline path."""
        logits = self._logits(self._check_X(X))
        self._check_finite(logits, {})
        return logits

    def _check_finite(self, logits: torch.Tensor, params: dict[str, Any]) -> None:
        """Refuse overflowed logits: a hyper-parameter so large that float32 cannot hold the result."""
        if not bool(torch.isfinite(logits).all()):
            self._overflow(params)

    def _overflow(self, params: dict[str, Any]):
        shown = {**self.get_params(deep=False), **params}
        shown.pop("device", None)
        raise ValueError(f"{type(self).__name__} logits overflow float32 with {shown}: a weight or "
                         "sharpness parameter is too large for these features")

    def decision_function(self, X) -> np.ndarray:
        """Logits (N, C) as a numpy array; for two classes, scikit-learn's convention: the logit
        difference (N,), positive for ``classes_[1]``."""
        logits = self.logits(X).cpu().numpy()
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the logits, (N, C), rows summing to 1."""
        return torch.softmax(self.logits(X), dim=-1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted class labels (N,) taken from ``classes_``."""
        indices = self.logits(X).argmax(dim=-1).cpu().numpy()
        return self.classes_[indices]

    # --- tuning (used by adaptkit.tune) -------------------------------------------------------

    def _grid_correct(self, X: torch.Tensor, y: torch.Tensor, candidates: list[dict[str, Any]]) -> np.ndarray:
        """How many of the N samples each candidate classifies correctly: (G,) int64.

        Candidates are scored in chunks of bounded memory; the counts equal ``argmax`` of the
        candidate's ``_logits`` compared with ``y``, exactly."""
        before = earlier_classes(y, self.n_classes_, X.dtype)
        per_chunk = max(1, MAX_LOGIT_ELEMENTS // (X.shape[0] * self.n_classes_))
        counts = []
        for start in range(0, len(candidates), per_chunk):
            chunk = candidates[start:start + per_chunk]
            logits = self._grid_logits(X, chunk)
            for params, row in zip(chunk, logits):
                self._check_finite(row, params)
            counts.append(count_correct(logits, y, before).cpu())
        return torch.cat(counts).numpy()

    def _support_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (X, y) that ``_fit`` re-derives state from, as the fitted adapter holds them."""
        raise ValueError(f"{type(self).__name__} keeps no support set to refit from")

    def _with_params(self, params: dict[str, Any]) -> Adapter:
        """A fitted adapter at ``params``: a shallow copy with the parameters set, refitted from
        its support set when a state-shaping parameter changes. Shares unchanged tensors."""
        current = self.get_params(deep=False)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.set_params(**params)
        if any(name in self.state_params and not _same(value, current[name]) for name, value in params.items()):
            new._fit(*self._support_inputs())
            new._make_contiguous()
        return new

    # --- files -------------------------------------------------------------------------------

    def save(self, path, *, classnames=None, backbone=None) -> None:
        """Write the fitted adapter to one safetensors file (atomically; see
        :func:`adaptkit.load_adapter`). ``classnames`` and ``backbone`` (an :class:`adaptkit.Backbone`)
        are recorded so a :class:`adaptkit.Predictor` can name classes and check that it encodes
        images the way the adapter's features were encoded."""
        save_adapter(self, path, classnames=classnames, backbone=backbone)


def _same(a: Any, b: Any) -> bool:
    """Parameter values equal (``1 == 1.0``; strings and None compared as they are)."""
    if isinstance(a, (str, type(None))) or isinstance(b, (str, type(None))):
        return a == b if type(a) is type(b) else False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def check_grid_weight(name: str, value: float, owner: str) -> None:
    """Weights multiply float32 logits: refuse values float32 cannot hold."""
    if abs(float(value)) > FLOAT32_MAX:
        raise ValueError(f"The {name!r} parameter of {owner} must be a float32-representable number; got {value}")
