"""APE, training-free (Zhu et al., ICCV 2023, "Not All Features Matter").

Feature-channel refinement: per channel k, the inter-class similarity
S_k = mean over class pairs i ≠ j of m_i,k · m_j,k (m_i the mean of class i's text weight and
support keys) and the variance V_k of the text weights over classes; the ``n_channels`` channels
with the largest −w_s · S + w_v · V are kept. On those channels (renormalised) the cache affinity
is X' K'ᵀ, and each cache value is re-weighted by exp(γ · KL(onehot ‖ softmax(K' T'ᵀ))) with the
KL in bits, as in the official code. logits = 100 · X Tᵀ + α · exp(−β (1 − X' K'ᵀ)) (V ⊙ w).

The official code's criterion multiplies a class's features with themselves (its loop over pairs
i ≠ j indexes class i twice); adaptkit implements the paper's inter-class similarity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._params import FLOAT32_MAX, Float, Int
from .cache import WEIGHT, CacheAdapter, Neighbours, sharpen


def channel_criterion(text_weights: torch.Tensor, keys: torch.Tensor, y: torch.Tensor,
                      w_similarity: float, w_variance: float) -> torch.Tensor:
    """−w_s · inter-class similarity + w_v · variance of the text weights over classes, per channel: (D,)."""
    n_classes = text_weights.shape[0]
    counts = torch.bincount(y, minlength=n_classes).to(keys.dtype) + 1.0
    sums = text_weights.clone().index_add_(0, y, keys)
    means = sums / counts[:, None]
    total = means.sum(dim=0)
    similarity = (total ** 2 - (means ** 2).sum(dim=0)) / (n_classes * (n_classes - 1))
    return -w_similarity * similarity + w_variance * text_weights.var(dim=0)


class APE(CacheAdapter):
    """APE adapter (training-free).

    Parameters
    ----------
    alpha, beta : cache weight and sharpness, as in :class:`~adaptkit.adapters.TipAdapter`.
    gamma : strength of the value re-weighting exp(γ · KL), ≥ 0.
    n_channels : channels kept; ``None`` keeps half of them (the official configs keep 500-900
        of RN50's 1024).
    w_similarity, w_variance : weights of the channel criterion (0.7, 0.3 officially).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Fitted attributes: those of :class:`~adaptkit.adapters.cache.CacheAdapter`, ``channels_`` (n_channels,),
    ``refined_keys_`` (N_s, n_channels), ``key_divergence_`` (N_s,).
    The cache is always dense (its affinity lives in the refined channel subspace).
    """

    name = "ape"
    param_grid = {"beta": tuple((0.1 + np.arange(200) * 6.9 / 200).tolist()),
                  "gamma": (0.0, 0.1, 0.2, 0.3, 0.4),
                  "alpha": tuple((0.1 + np.arange(20) * 6.9 / 20).tolist())}
    _parameter_constraints = {**CacheAdapter._parameter_constraints, "alpha": WEIGHT, "beta": WEIGHT, "gamma": WEIGHT,
                              "n_channels": [Int(1, None, closed="left"), None],
                              "w_similarity": [Float(-FLOAT32_MAX, FLOAT32_MAX)],
                              "w_variance": [Float(-FLOAT32_MAX, FLOAT32_MAX)]}
    state_params = frozenset({"n_channels", "w_similarity", "w_variance"})
    fitted_tensors = {**CacheAdapter.fitted_tensors, "channels_": torch.int64, "refined_keys_": torch.float32,
                      "key_divergence_": torch.float32}
    needs_text = True
    cache_params = ("beta", "gamma")

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.1, n_channels: int | None = None,
                 w_similarity: float = 0.7, w_variance: float = 0.3, device: str = "auto"):
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.n_channels = n_channels
        self.w_similarity = w_similarity
        self.w_variance = w_variance
        self.device = device

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        n_features = X.shape[1]
        n_channels = n_features // 2 if self.n_channels is None else self.n_channels
        if not 1 <= n_channels <= n_features:
            raise ValueError(f"n_channels must lie in [1, {n_features}] (the feature dimension); got {n_channels}")
        if self.n_classes_ < 2:
            raise ValueError("APE needs at least two classes")
        super()._fit(X, y)
        criterion = channel_criterion(self.text_weights_, self.keys_, self.key_labels_, self.w_similarity,
                                      self.w_variance)
        self.channels_ = torch.topk(criterion, n_channels).indices.sort().values
        refined_keys = F.normalize(self.keys_[:, self.channels_], dim=-1)
        refined_text = F.normalize(self.text_weights_[:, self.channels_], dim=-1)
        key_probs = torch.softmax(refined_keys @ refined_text.T, dim=-1)
        own = key_probs.gather(1, self.key_labels_[:, None]).squeeze(1)
        eps = 1e-6
        self.key_divergence_ = torch.log2((1.0 + eps) / (own + eps))
        self.refined_keys_ = refined_keys

    def _shared(self, X: torch.Tensor) -> dict[str, Any]:
        refined = F.normalize(X[:, self.channels_], dim=-1)
        return {"zero_shot": self._zero_shot_logits(X), "near": Neighbours(),
                "affinity": (refined @ self.refined_keys_.T).clamp_(-1.0, 1.0)}

    def _cache_term(self, shared: dict[str, Any], params: dict[str, Any]) -> torch.Tensor:
        """exp(−β (1 − A')) (V ⊙ exp(γ · KL)); the sharpened affinity is reused across the γ of one β."""
        weights = torch.exp(params["gamma"] * self.key_divergence_)
        if not bool(torch.isfinite(weights).all()):
            raise ValueError(f"The 'gamma' parameter of APE is too large ({params['gamma']}): exp(gamma · KL) "
                             "overflows float32")
        beta, sharpened = shared.get("sharpened", (None, None))
        if beta != params["beta"]:
            sharpened = sharpen(shared["affinity"], params["beta"])
            shared["sharpened"] = (params["beta"], sharpened)
        return self._class_sum(sharpened, shared["near"], weights)
