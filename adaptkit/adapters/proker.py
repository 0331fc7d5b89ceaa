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

Large support sets (above ``EXACT_ROWS`` rows the exact search takes minutes to hours) can use the
Nyström approximation, chosen with ``rank=m``: m landmark rows L drawn from the support set
(seeded by ``random_state``) give features Φ = K_SL R⁻ᵀ with R Rᵀ = K_LL + εI, so K_SS ≈ ΦΦᵀ and
K_XS ≈ K_XL R⁻ᵀ Φᵀ; by the Woodbury identity the coefficients over the landmarks are
R⁻ᵀ (ΦᵀΦ / λ + I)⁻¹ Φᵀ (Y − f₀(S)): an m × m system per (β, λ) instead of N_s × N_s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._clip import LOGIT_SCALE
from .._params import FLOAT32_MAX, Float, Int
from ..progress import progress_bar
from .base import Adapter

EXACT_ROWS = 8192
"""Support rows (views flattened) above which :func:`adaptkit.leaderboard` skips the exact ProKeR
and says why: each (β, λ) factorises an N_s × N_s float32 system, N_s³/3 multiply-adds (8,192 rows:
0.27 GB and about 2-3 s per point on one core, minutes for the default 63 points; 16,000 rows: 1 GB
and about 20 s per point). ``rank`` selects the Nyström approximation instead."""
PROGRESS_ROWS = 4096
"""Systems above this many rows (N_s exact, m with ``rank``) show a bar over the grid's solves,
with tqdm's rate and time left (where a bar is drawn: see :mod:`adaptkit.progress`)."""
NYSTROM_JITTER = 1e-5
"""ε added to the landmark kernel's diagonal (which is 1) so that repeated landmarks factorise."""


def cosines(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """cos(a, b) between the rows of A and B, clamped to [−1, 1]: (N_a, N_b)."""
    return (F.normalize(A, dim=-1) @ F.normalize(B, dim=-1).T).clamp_(-1.0, 1.0)


def kernel_of(cosine: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(−β (1 − cos)) of precomputed cosines (a new tensor; ``cosine`` is kept)."""
    return cosine.mul(beta).sub_(beta).exp_()


def exp_kernel(A: torch.Tensor, B: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(−β (1 − cos(a, b))) between the rows of A and B: (N_a, N_b)."""
    return kernel_of(cosines(A, B), beta)


def landmark_positions(n_rows: int, rank: int, seed: int) -> torch.Tensor:
    """min(rank, n_rows) distinct row positions, drawn uniformly with ``seed``, in increasing order: (m,)."""
    if rank >= n_rows:
        return torch.arange(n_rows)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_rows, generator=generator)[:rank].sort().values


def nystrom_system(cross: torch.Tensor, inner: torch.Tensor, targets: torch.Tensor):
    """From K_SL (N_s, m) and K_LL (m, m): the factor R of K_LL + εI, G = ΦᵀΦ (m, m) and
    B = Φᵀ (Y − f₀(S)) (m, C), with Φ = K_SL R⁻ᵀ."""
    system = inner.clone()
    system.diagonal().add_(NYSTROM_JITTER)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:
        factor = torch.linalg.cholesky(system.double()).to(system.dtype)
    features_t = torch.linalg.solve_triangular(factor, cross.T, upper=False)
    return factor, features_t @ features_t.T, features_t @ targets


def nystrom_coef(factor: torch.Tensor, gram: torch.Tensor, projected: torch.Tensor, lam: float) -> torch.Tensor:
    """R⁻ᵀ (G / λ + I)⁻¹ B: the coefficients over the landmarks (m, C)."""
    return torch.linalg.solve_triangular(factor.T, ridge_solve(gram, projected, lam), upper=True)


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
    rank : ``None`` (exact) or m ≥ 1: the Nyström approximation with m landmark rows (every row
        when m ≥ N_s).
    random_state : seed of the landmark draw.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Fitted attributes: ``support_`` (N_s, D), ``support_labels_`` (N_s,), ``targets_`` (N_s, C)
    = Y − f₀(S), ``coef_`` (N_s, C), or with ``rank`` (m, C) over the landmarks, whose positions
    in ``support_`` are ``landmarks_`` (m,).
    """

    name = "proker"
    param_grid = {"beta": (0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0),
                  "lam": (0.001, 0.0031622776601683794, 0.01, 0.03162277660168379, 0.1, 0.31622776601683794,
                          1.0, 3.1622776601683795, 10.0)}
    _parameter_constraints = {**Adapter._parameter_constraints, "beta": [Float(0, FLOAT32_MAX)],
                              "lam": [Float(0, FLOAT32_MAX, closed="right")],
                              "rank": [Int(1, None, closed="left"), None], "random_state": [Int(0, None, closed="left")]}
    state_params = frozenset({"beta", "lam", "rank", "random_state"})
    batched_params = frozenset({"beta", "lam"})
    fitted_tensors = {**Adapter.fitted_tensors, "support_": torch.float32, "support_labels_": torch.int64,
                      "targets_": torch.float32, "coef_": torch.float32, "landmarks_": torch.int64}
    optional_tensors = Adapter.optional_tensors | {"landmarks_"}
    training_views = "flatten"

    def __init__(self, beta: float = 1.0, lam: float = 0.1, rank: int | None = None, random_state: int = 0,
                 device: str = "auto"):
        self.beta = beta
        self.lam = lam
        self.rank = rank
        self.random_state = random_state
        self.device = device

    def _skip_reason(self, n_rows: int) -> str | None:
        if self.rank is None and n_rows > EXACT_ROWS:
            return (f"the exact search over {n_rows:,} support rows factorises a {n_rows:,}² system per point "
                    f"({n_rows ** 2 * 4 / 2 ** 30:.1f} GiB each), more than the {EXACT_ROWS:,} rows it runs at; "
                    "pass ProKeR(rank=...) for the Nyström approximation")
        return None

    def _approximation(self) -> str | None:
        return None if self.rank is None else f"Nyström, rank {self.rank}"

    def _centres(self) -> torch.Tensor:
        """The rows the kernel expansion runs over: the support set, or its landmarks."""
        return self.support_ if self.rank is None else self.support_[self.landmarks_]

    def _prior(self, X: torch.Tensor) -> torch.Tensor:
        return self._zero_shot_logits(X) / LOGIT_SCALE

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.support_ = X
        self.support_labels_ = y
        self.targets_ = F.one_hot(y, self.n_classes_).float() - self._prior(X)
        if self.rank is None:
            self.__dict__.pop("landmarks_", None)
        else:
            self.landmarks_ = landmark_positions(X.shape[0], self.rank, self.random_state).to(X.device)
        self.coef_ = self._solver(cosines(X, self._centres()), self.beta)(self.lam)

    def _support_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.support_, self.support_labels_

    def _grid_logits(self, X, candidates):
        """The cosine matrices once; per distinct β its kernels (and with ``rank`` the landmark
        system), one solve per (β, λ) computed as ``fit`` computes it (the fitted point reuses
        ``coef_``), and one product of the cross kernel with every λ's coefficients side by side."""
        prior = self._prior(X)
        out = X.new_empty(len(candidates), X.shape[0], self.n_classes_)
        by_beta: dict[float, list[int]] = {}
        for i, candidate in enumerate(candidates):
            by_beta.setdefault(candidate.get("beta", self.beta), []).append(i)
        cross_cosine, support_cosine = cosines(X, self._centres()), None
        rows = self.coef_.shape[0]
        bar = progress_bar(total=len(candidates), progress=rows > PROGRESS_ROWS, desc=f"ProKeR {rows:,}² solves",
                           unit="solve", leave=False)
        for beta, members in by_beta.items():
            solve, coefs = None, []
            for i in members:
                lam = candidates[i].get("lam", self.lam)
                bar.update()
                if beta == self.beta and lam == self.lam:
                    coefs.append(self.coef_)
                    continue
                if support_cosine is None:
                    support_cosine = cosines(self.support_, self._centres())
                if solve is None:
                    solve = self._solver(support_cosine, beta)
                coefs.append(solve(lam))
            products = kernel_of(cross_cosine, beta) @ torch.cat(coefs, dim=1)
            out[members] = products.view(X.shape[0], len(members), -1).transpose(0, 1).add_(prior)
        bar.close()
        return out

    def _solver(self, support_cosine: torch.Tensor, beta: float):
        """λ -> coefficients at β from the support × centre cosines (N_s, N_s or m): the one path
        of ``_fit`` and the grid, so both compute the same coefficients."""
        support = kernel_of(support_cosine, beta)
        if self.rank is None:
            return lambda lam: ridge_solve(support, self.targets_, lam)
        system = nystrom_system(support, kernel_of(support_cosine[self.landmarks_], beta), self.targets_)
        return lambda lam: nystrom_coef(*system, lam)
