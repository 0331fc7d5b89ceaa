"""Gaussian discriminant analysis ensembled with zero-shot CLIP (Wang et al., ICLR 2024).

Class means μ_c and one shared covariance Σ estimated from the support features (every augmented
view a sample). Precision P = D · (S + tr(Σ) · I)⁻¹ with S = Z'ᵀZ' = (N − 1) · Σ, Z the features
minus their class mean and Z' = Z centred again, as in the official code. Linear classifier
W = P μᵀ (D, C), b_c = log(1/C) − ½ μ_c P μ_cᵀ; logits = 100 · X Tᵀ + α · (X W + b).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted

from .._params import FLOAT32_MAX, NON_NEGATIVE_INT, POSITIVE_INT, Float, Int, check_params
from .._validation import check_features, check_text_weights
from .base import Adapter


def shrunk_precision(Z: torch.Tensor) -> torch.Tensor:
    """D · (S + tr(cov(Z)) · I)⁻¹ for class-centred features Z (N, D); the scatter is accumulated
    in float32, the inverse taken in float64.

    S + tr · I is symmetric positive definite unless Z is all zero, so a Cholesky solve gives the
    pseudo-inverse of the official code exactly; the pseudo-inverse is the fallback.
    """
    n, d = Z.shape
    Zc = Z - Z.mean(dim=0)
    scatter = (Zc.T @ Zc).double()
    regularised = scatter + (torch.trace(scatter) / (n - 1)) * torch.eye(d, dtype=scatter.dtype, device=Z.device)
    factor, info = torch.linalg.cholesky_ex(regularised)
    inverse = torch.cholesky_inverse(factor) if int(info) == 0 else torch.linalg.pinv(regularised, hermitian=True)
    return (d * inverse).float()


class GDA(Adapter):
    """GDA adapter.

    Parameters
    ----------
    alpha : weight of the GDA logits added to the zero-shot logits.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Fitted attributes: ``means_`` (C, D), ``precision_`` (D, D), ``weight_`` (D, C), ``bias_`` (C,).
    """

    name = "gda"
    param_grid = {"alpha": (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)}
    _parameter_constraints = {**Adapter._parameter_constraints, "alpha": [Float(0, FLOAT32_MAX)]}
    training_views = "flatten"
    scale_sensitive = True
    fitted_tensors = {**Adapter.fitted_tensors, "means_": torch.float32, "precision_": torch.float32,
                      "weight_": torch.float32, "bias_": torch.float32}

    def __init__(self, alpha: float = 1.0, device: str = "auto"):
        self.alpha = alpha
        self.device = device

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        n_classes = self.n_classes_
        counts = torch.bincount(y, minlength=n_classes)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"GDA needs at least one support sample per class; classes {missing[:10]} have none")
        if X.shape[0] < 2:
            raise ValueError("GDA needs at least two support samples to estimate a covariance; got 1 sample")
        means = torch.zeros(n_classes, X.shape[1], device=X.device).index_add_(0, y, X) / counts[:, None]
        self._set_classifier(means, shrunk_precision(X - means[y]), math.log(1.0 / n_classes))

    def _set_classifier(self, means: torch.Tensor, precision: torch.Tensor, log_prior) -> None:
        """W = P μᵀ, b = log π − ½ μ P μᵀ from means (C, D), precision (D, D), log-priors."""
        self.means_ = means
        self.precision_ = precision
        self.weight_ = precision @ means.T
        self.bias_ = log_prior - 0.5 * (means * self.weight_.T).sum(dim=1)

    def _gda_logits(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.weight_ + self.bias_

    def _grid_logits(self, X, candidates):
        alphas = torch.tensor([c.get("alpha", self.alpha) for c in candidates], dtype=X.dtype, device=X.device)
        return torch.addcmul(self._zero_shot_logits(X), alphas.view(-1, 1, 1), self._gda_logits(X))


def _ks_precision_batch(centred: torch.Tensor) -> torch.Tensor:
    """D · (Zᵀ Z + tr(cov) · I)⁻¹ for a batch of (k, D) deviations Z (already centred): (B, D, D)."""
    k, d = centred.shape[1], centred.shape[2]
    scatter = (centred.transpose(1, 2) @ centred).double()
    trace = scatter.diagonal(dim1=1, dim2=2).sum(dim=1) / (k - 1)
    regularised = scatter + trace[:, None, None] * torch.eye(d, dtype=scatter.dtype, device=scatter.device)
    return d * torch.linalg.inv(regularised)


def synthesize_new_classes(gda: GDA, X_base, new_text_weights, *, k: int = 64, text_repeat: int = 16,
                           chunk: int = 32) -> GDA:
    """Base-to-new GDA (the paper's Sec. 4.2, official ``main_base2new.py``): a GDA for classes
    that have no images, built from the base-class support features ``X_base`` (N, D) or (N, V, D).

    For each new class with text weight w: its mean is the mean of the ``k`` base features most
    similar to w together with w repeated ``text_repeat`` times; its precision is the shrunk
    estimator on those k features centred at w; the shared precision is the average over new
    classes. Returns a fitted :class:`GDA` over the new classes (text weights = ``new_text_weights``,
    same ``alpha``).
    """
    check_is_fitted(gda)
    X = check_features(X_base, "X_base", ndims=(2, 3), n_features=gda.n_features_in_, device=gda.device_)
    X = X.flatten(0, -2)
    T = F.normalize(check_text_weights(new_text_weights, gda.n_features_in_, gda.device_), dim=-1)
    check_params("synthesize_new_classes", {"k": [Int(2, X.shape[0])], "text_repeat": [NON_NEGATIVE_INT],
                                            "chunk": [POSITIVE_INT]}, {"k": k, "text_repeat": text_repeat, "chunk": chunk})
    nearest = torch.topk(T @ X.T, k, dim=1).indices
    neighbours = X[nearest]
    means = (neighbours.sum(dim=1) + text_repeat * T) / (k + text_repeat)
    precision = sum(_ks_precision_batch(neighbours[i:i + chunk] - T[i:i + chunk, None]).sum(dim=0)
                    for i in range(0, T.shape[0], chunk)) / T.shape[0]
    new = GDA(alpha=gda.alpha, device=gda.device)
    new.classes_, new.n_features_in_, new.device_, new.text_weights_ = (
        np.arange(T.shape[0]), gda.n_features_in_, gda.device_, T)
    new._set_classifier(means, precision.float(), np.log(1.0 / T.shape[0]))
    new._make_contiguous()
    return new
