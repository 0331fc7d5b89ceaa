"""TIP-X (Udandarao et al., ICCV 2023, "SuS-X"): Tip-Adapter plus a KL-signature affinity.

Signatures are the zero-shot class distributions softmax(x Tᵀ / τ) of a test sample and of each
support key. The KL divergence KL(test ‖ key) becomes an affinity Ã in [0, 1] by min-max
rescaling each test sample's row (1 = closest key), and adds γ · Ã V to the Tip-Adapter logits.
Signatures are kept as log-probabilities (``log_softmax``), so a small τ never takes log 0.

The official code rescales the whole test × support KL matrix into the value range of the whole
affinity matrix X Kᵀ of the evaluated batch, so a sample's prediction depends on the other samples
evaluated with it; adaptkit rescales per sample, which keeps ``predict`` batch-independent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._params import Float
from .cache import WEIGHT, Neighbours, gathered_dot
from .tip_adapter import TipAdapter


def log_signatures(X: torch.Tensor, text_weights: torch.Tensor, tau: float) -> torch.Tensor:
    """log softmax(X Tᵀ / τ) over classes: (N, C), finite for any τ > 0 that float32 can divide by."""
    return torch.log_softmax(X @ text_weights.T / tau, dim=-1)


def kl_affinity(test_log: torch.Tensor, key_log: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """1 − rowwise-minmax(KL(q_i ‖ s_j)) in [0, 1], larger = more similar: (N, N_s) over all keys,
    or (N, k) over the keys at ``positions``; q and s given as log-probabilities."""
    test = test_log.exp()
    entropy_term = (test * test_log).sum(dim=1, keepdim=True)
    if positions is None:
        kl = entropy_term - test @ key_log.T
    else:
        kl = entropy_term - gathered_dot(test, key_log, positions)
    low, high = kl.min(dim=1, keepdim=True).values, kl.max(dim=1, keepdim=True).values
    return 1.0 - (kl - low) / (high - low).clamp_min(torch.finfo(kl.dtype).tiny)


class TipX(TipAdapter):
    """TIP-X: logits = 100 · X Tᵀ + α · exp(−β (1 − X Kᵀ)) V + γ · Ã V.

    Parameters
    ----------
    alpha, beta, top_k : as in :class:`TipAdapter` (with ``top_k`` the KL term, too, sees only
        each query's k nearest keys).
    gamma : weight of the KL-signature term, ≥ 0.
    tau : temperature of the signatures (0.5 in the paper), > 0.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Fitted attributes: those of :class:`TipAdapter` and ``key_log_signatures_`` (N_s, C).
    """

    name = "tip_x"
    param_grid = {"beta": tuple((0.1 + np.arange(50) * 6.9 / 50).tolist()),
                  "alpha": tuple((0.1 + np.arange(20) * 2.9 / 20).tolist()),
                  "gamma": (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)}
    _parameter_constraints = {**TipAdapter._parameter_constraints, "gamma": WEIGHT,
                              "tau": [Float(0, None, closed="neither")]}
    state_params = TipAdapter.state_params | {"tau"}
    fitted_tensors = {**TipAdapter.fitted_tensors, "key_log_signatures_": torch.float32}
    needs_text = True

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.1, tau: float = 0.5,
                 top_k: int | str | None = "auto", device: str = "auto"):
        super().__init__(alpha=alpha, beta=beta, top_k=top_k, device=device)
        self.gamma = gamma
        self.tau = tau

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        super()._fit(X, y)
        self.key_log_signatures_ = log_signatures(self.keys_, self.text_weights_, self.tau)
        if not bool(torch.isfinite(self.key_log_signatures_).all()):
            raise ValueError(f"The 'tau' parameter of {type(self).__name__} is too small ({self.tau}): the "
                             "signatures overflow float32")

    def _shared(self, X: torch.Tensor) -> dict[str, Any]:
        shared = super()._shared(X)
        near: Neighbours = shared["near"]
        test_log = log_signatures(shared["queries"], self.text_weights_, self.tau)
        if not bool(torch.isfinite(test_log).all()):
            raise ValueError(f"The 'tau' parameter of {type(self).__name__} is too small ({self.tau}): the "
                             "signatures overflow float32")
        shared["kl"] = self._class_sum(kl_affinity(test_log, self.key_log_signatures_, near.positions), near)
        return shared

    def _term_scales(self, shared, cache):
        return {**super()._term_scales(shared, cache), "kl": float(shared["kl"].abs().max())}

    def _logit_bound(self, scales, params):
        return super()._logit_bound(scales, params) + abs(params["gamma"]) * scales["kl"]

    def _linear_base(self, shared, params):
        zero_shot, magnitude = super()._linear_base(shared, params)
        if "kl_magnitude" not in shared:
            shared["kl_magnitude"] = shared["kl"].abs().amax(dim=1)
        gamma = params["gamma"]
        return zero_shot + gamma * shared["kl"], magnitude + abs(gamma) * shared["kl_magnitude"]

    def _combine(self, shared, cache, params):
        logits = super()._combine(shared, cache, params)
        gammas = torch.tensor([p["gamma"] for p in params], dtype=cache.dtype, device=cache.device)
        return logits.addcmul_(gammas.view(-1, 1, 1), shared["kl"])
