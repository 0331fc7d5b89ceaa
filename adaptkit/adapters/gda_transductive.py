"""Unsupervised (transductive) GDA (Wang et al., ICLR 2024, Sec. 4.3): EM on unlabeled features."""

from __future__ import annotations

import torch

from .._params import Float, Int
from .._validation import check_features
from .gda import GDA
from .registry import FitInput


class TransductiveGDA(GDA):
    """Unsupervised (transductive) GDA: EM on unlabeled features, initialised from zero-shot.

    The paper describes this variant (Sec. 4.3); the official repository has no code for it.
    E-step: responsibilities R = softmax of the GDA posterior (class priors, means and shared
    covariance of the current M-step; the first R is the zero-shot softmax(100 · X Tᵀ)).
    M-step: weighted class means, priors and the shrunk shared covariance of GDA. The final
    classifier is GDA's, ensembled with zero-shot through ``alpha``.

    ``fit(X, y, *, text_weights, unlabeled)``: the EM runs on ``unlabeled`` (M, D) or (M, V, D)
    features (the test set, as the method prescribes); the labelled support set X, y is only
    checked, as :class:`ZeroShot` checks it. Fitted attributes: those of :class:`GDA` plus
    ``responsibilities_`` (M, C) and ``n_iter_``. The unlabeled features are kept in memory
    (not in saved files) so that ``ak.tune`` can refit for other ``n_iter`` and ``tol``.
    """

    name = "gda_transductive"
    fit_inputs = {"unlabeled": FitInput("unlabeled features (M, D) the EM fits on, e.g. the test set's",
                                        rows="features")}
    _parameter_constraints = {**GDA._parameter_constraints, "n_iter": [Int(1, None, closed="left")],
                              "tol": [Float(0, None, closed="left")]}
    state_params = frozenset({"n_iter", "tol"})
    needs_text = True
    fitted_tensors = {**GDA.fitted_tensors, "responsibilities_": torch.float32}
    fitted_attributes = {**GDA.fitted_attributes, "n_iter_": int}

    def __init__(self, alpha: float = 1.0, n_iter: int = 20, tol: float = 1e-4, device: str = "auto"):
        super().__init__(alpha=alpha, device=device)
        self.n_iter = n_iter
        self.tol = tol

    def _take_inputs(self, X: torch.Tensor, unlabeled=None) -> None:
        unlabeled = check_features(unlabeled, "unlabeled", ndims=(2, 3), n_features=self.n_features_in_,
                                   device=self.device_)
        self._unlabeled = unlabeled.flatten(0, -2)
        self._warn_if_not_normalised(self._unlabeled, "unlabeled")

    def _support_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        if "_unlabeled" not in self.__dict__:
            raise ValueError("this TransductiveGDA was loaded from a file without its unlabeled features; "
                             "fit it again to tune n_iter or tol")
        return self._unlabeled, torch.zeros(self._unlabeled.shape[0], dtype=torch.int64, device=self.device_)

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        X = self._unlabeled
        n, d = X.shape
        if n < 2:
            raise ValueError(f"TransductiveGDA needs at least 2 unlabeled samples to estimate a covariance; got {n}")
        responsibilities = torch.softmax(self._zero_shot_logits(X), dim=1)
        gram = (X.T @ X).double()
        for iteration in range(1, self.n_iter + 1):  # noqa: B007  (n_iter_ records where it stopped)
            weights = responsibilities.sum(dim=0).clamp_min(1e-8)
            means = (responsibilities.T @ X) / weights[:, None]
            scatter = gram - (means.T.double() * weights.double()) @ means.double()
            regularised = scatter + (torch.trace(scatter) / (n - 1)) * torch.eye(d, dtype=scatter.dtype,
                                                                                   device=X.device)
            inverse = torch.linalg.inv(regularised)
            log_prior = torch.log(weights / n)
            precision = (n * inverse).float()
            posterior = X @ precision @ means.T - 0.5 * ((means @ precision) * means).sum(dim=1) + log_prior
            updated = torch.softmax(posterior, dim=1)
            change = (updated - responsibilities).abs().max().item()
            responsibilities = updated
            if change < self.tol:
                break
        self.responsibilities_ = responsibilities
        self.n_iter_ = iteration
        self._set_classifier(means, (d * inverse).float(), log_prior)
