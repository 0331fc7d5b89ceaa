"""Linear-probe baseline: scikit-learn's multinomial LogisticRegression on standardised features.

Features are standardised per channel before the fit (CLIP features of one domain are nearly
collinear, which makes L-BFGS crawl); the scaling is folded back into ``weight_``/``bias_``, so
prediction is one matrix product on raw features. The fit runs numpy's BLAS on at most torch's
thread count, and on one thread for small problems, where its threads cost more than they save.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .._params import Float, Int
from .base import Adapter

SERIAL_BLAS_WORK = 1 << 30
"""Multiply-adds of one N × D × C product below which the fit uses one BLAS thread: at the Caltech
size (1,600 × 512 × 100) OpenBLAS on two threads made the six fits of a C search 3.5× slower than
on one (1.4 s against 0.4 s, 2-core EPYC); at ImageNet size (16,000 × 512 × 1,000) two threads
were 1.5× faster."""


def blas_threads(n_samples: int, n_features: int, n_classes: int) -> int:
    """BLAS threads for a fit of this size: one below ``SERIAL_BLAS_WORK``, else torch's count."""
    return 1 if n_samples * n_features * n_classes < SERIAL_BLAS_WORK else torch.get_num_threads()


class LinearProbe(Adapter):
    """Logistic regression on standardised image features; the text weights are not used.
    Augmented views are averaged per image, as in CLIP's linear-probe protocol.

    Parameters
    ----------
    C : inverse L2 regularisation strength (scikit-learn's ``C``), searched on validation.
    max_iter : L-BFGS iterations.
    device : where the fitted weights live for prediction.

    Fitted attributes: ``weight_`` (C, D), ``bias_`` (C,). The support set is kept
    (``support_features_``, ``support_labels_``) because a new ``C`` needs a new fit.
    """

    name = "linear_probe"
    param_grid = {"C": tuple(np.logspace(-3, 2, 6).tolist())}
    _parameter_constraints = {**Adapter._parameter_constraints, "C": [Float(0, None, closed="neither")],
                              "max_iter": [Int(1, None, closed="left")]}
    state_params = frozenset({"C", "max_iter"})
    training_views = "mean"
    scale_sensitive = True
    fitted_tensors = {**Adapter.fitted_tensors, "support_features_": torch.float32, "support_labels_": torch.int64,
                      "weight_": torch.float32, "bias_": torch.float32}
    fitted_attributes = {**Adapter.fitted_attributes, "n_iter_": list}

    def __init__(self, C: float = 1.0, max_iter: int = 1000, device: str = "auto"):
        self.C = C
        self.max_iter = max_iter
        self.device = device

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        if self.n_classes_ < 2:
            raise ValueError("LinearProbe needs support samples of at least two classes; got 1 class")
        self.support_features_, self.support_labels_ = X, y
        X_np, y_np = X.cpu().double().numpy(), y.cpu().numpy()
        with threadpool_limits(blas_threads(*X.shape, self.n_classes_), user_api="blas"):
            scaler = StandardScaler().fit(X_np)
            model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(scaler.transform(X_np), y_np)
        self.n_iter_ = model.n_iter_
        coef = model.coef_ / scaler.scale_
        intercept = model.intercept_ - coef @ scaler.mean_
        weight = np.zeros((self.n_classes_, X.shape[1]))
        bias = np.full(self.n_classes_, np.finfo(np.float32).min, dtype=np.float64)
        if len(model.classes_) == 2:
            weight[model.classes_[1]], bias[model.classes_[1]] = coef[0], intercept[0]
            bias[model.classes_[0]] = 0.0
        else:
            weight[model.classes_], bias[model.classes_] = coef, intercept
        self.weight_ = torch.from_numpy(weight).float().to(X.device)
        self.bias_ = torch.from_numpy(bias).float().to(X.device)

    def _support_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.support_features_, self.support_labels_

    def _grid_logits(self, X, candidates):
        logits = X @ self.weight_.T + self.bias_
        return torch.stack([logits if not c else self._with_params(c)._grid_logits(X, [{}])[0] for c in candidates])
