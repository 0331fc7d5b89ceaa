"""ProKeR, training-free (Bendou et al., CVPR 2025, "A kernel perspective on few-shot adaptation").

Kernel ridge regression in the RKHS of k(a, b) = exp(−β (1 − cos(a, b))), regularised towards the
zero-shot predictor f₀(x) = cos(x, T) (plain cosine, without CLIP's ×100, as in the official code):
coefficients A = (K_SS / λ + I)⁻¹ (Y − f₀(S)) over the support set S, and
logits = f₀(X) + K_XS A. Every augmented view is a support sample, as in the official code, so
the (N_s × N_s) system grows with views × shots × classes.

The system is solved by a float32 Cholesky factorisation (the official code solves in float32
too), in float64 when float32 cannot factorise it. A grid search builds each β's kernels once and
factorises one system per (β, λ), with exactly the arithmetic of ``fit``; one factorisation per
point is the floor here: an eigendecomposition shared by every λ costs about ten of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._clip import LOGIT_SCALE
from .._params import FLOAT32_MAX, Float
from .base import Adapter


def cosines(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """cos(a, b) between the rows of A and B, clamped to [−1, 1]: (N_a, N_b)."""
    return (F.normalize(A, dim=-1) @ F.normalize(B, dim=-1).T).clamp_(-1.0, 1.0)


def kernel_of(cosine: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(−β (1 − cos)) of precomputed cosines (a new tensor; ``cosine`` is kept)."""
    return cosine.mul(beta).sub_(beta).exp_()


def exp_kernel(A: torch.Tensor, B: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(−β (1 − cos(a, b))) between the rows of A and B: (N_a, N_b)."""
    return kernel_of(cosines(A, B), beta)


def ridge_solve(kernel: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """(K / λ + I)⁻¹ R: a float32 Cholesky solve, float64 when float32 cannot factorise (N_s, C)."""
    system = kernel / lam
    system.diagonal().add_(1.0)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        return torch.cholesky_solve(targets, factor)
    factor = torch.linalg.cholesky(system.double())
    return torch.cholesky_solve(targets.double(), factor).to(targets.dtype)


class ProKeR(Adapter):
    """ProKeR adapter.

    Parameters
    ----------
    beta : kernel sharpness, ≥ 0.
    lam : regularisation λ > 0 (larger trusts the support set more).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Fitted attributes: ``support_`` (N_s, D), ``support_labels_`` (N_s,), ``targets_`` (N_s, C)
    = Y − f₀(S), ``coef_`` (N_s, C).
    """

    name = "proker"
    param_grid = {"beta": (0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0),
                  "lam": (0.001, 0.0031622776601683794, 0.01, 0.03162277660168379, 0.1, 0.31622776601683794,
                          1.0, 3.1622776601683795, 10.0)}
    _parameter_constraints = {**Adapter._parameter_constraints, "beta": [Float(0, FLOAT32_MAX)],
                              "lam": [Float(0, FLOAT32_MAX, closed="right")]}
    state_params = frozenset({"beta", "lam"})
    batched_params = frozenset({"beta", "lam"})
    fitted_tensors = {**Adapter.fitted_tensors, "support_": torch.float32, "support_labels_": torch.int64,
                      "targets_": torch.float32, "coef_": torch.float32}
    training_views = "flatten"

    def __init__(self, beta: float = 1.0, lam: float = 0.1, device: str = "auto"):
        self.beta = beta
        self.lam = lam
        self.device = device

    def _prior(self, X: torch.Tensor) -> torch.Tensor:
        return self._zero_shot_logits(X) / LOGIT_SCALE

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.support_ = X
        self.support_labels_ = y
        self.targets_ = F.one_hot(y, self.n_classes_).float() - self._prior(X)
        self.coef_ = ridge_solve(kernel_of(cosines(X, X), self.beta), self.targets_, self.lam)

    def _support_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.support_, self.support_labels_

    def _grid_logits(self, X, candidates):
        """The two cosine matrices once; per distinct β its two kernels, one factorisation per
        (β, λ) computed as ``fit`` computes it (the fitted point reuses ``coef_``), and one
        product of the cross kernel with every λ's coefficients side by side."""
        prior = self._prior(X)
        out = X.new_empty(len(candidates), X.shape[0], self.n_classes_)
        by_beta: dict[float, list[int]] = {}
        for i, candidate in enumerate(candidates):
            by_beta.setdefault(candidate.get("beta", self.beta), []).append(i)
        cross_cosine, support_cosine = cosines(X, self.support_), None
        for beta, members in by_beta.items():
            support, coefs = None, []
            for i in members:
                lam = candidates[i].get("lam", self.lam)
                if beta == self.beta and lam == self.lam:
                    coefs.append(self.coef_)
                    continue
                if support_cosine is None:
                    support_cosine = cosines(self.support_, self.support_)
                if support is None:
                    support = kernel_of(support_cosine, beta)
                coefs.append(ridge_solve(support, self.targets_, lam))
            products = kernel_of(cross_cosine, beta) @ torch.cat(coefs, dim=1)
            out[members] = products.view(X.shape[0], len(members), -1).transpose(0, 1).add_(prior)
        return out
