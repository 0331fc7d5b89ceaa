"""TDA: training-free dynamic adapter for test-time adaptation (Karmanov et al., CVPR 2024).

Test samples arrive one at a time. A positive cache keeps, per zero-shot predicted class, the
``pos_capacity`` lowest-entropy features seen so far (a new sample replaces the class's
highest-entropy entry when its entropy is lower). A negative cache keeps, likewise per predicted
class, up to ``neg_capacity`` samples whose normalised entropy lies in ``neg_entropy``; its values
are 0/1 masks of the classes whose zero-shot probability lies in ``neg_mask``. Each sample first
updates the caches, then gets

    logits = 100 · x Tᵀ + α⁺ · exp(−β⁺ (1 − x K⁺ᵀ)) V⁺ − α⁻ · exp(−β⁻ (1 − x K⁻ᵀ)) M⁻

Entropy normalisation: the official code divides a natural-log entropy by log₂(C), so its
"normalised" entropy spans [0, ln 2] rather than [0, 1]; ``entropy_normalization="log2"`` (default)
reproduces that and the published band [0.2, 0.5]; ``"ln"`` divides by ln(C) for a true [0, 1]
scale (then choose the band accordingly).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from .._clip import LOGIT_SCALE
from .._params import DEVICE, FLOAT32_MAX, Float, Int, StrOptions, check_params
from .._validation import check_features, resolve_device
from .state import check_state, read_state, refuse, save_state

WEIGHT = [Float(0, FLOAT32_MAX)]
BAND = [tuple, list]


class TDA:
    """Streaming TDA over cached (or freshly encoded) image features.

    Parameters
    ----------
    text_weights : (C, D) zero-shot classifier.
    pos_capacity, pos_alpha, pos_beta : positive cache (official ImageNet defaults 3, 2.0, 5.0).
    neg_capacity, neg_alpha, neg_beta : negative cache (2, 0.117, 1.0).
    neg_entropy : (low, high) normalised-entropy band for negative samples, exclusive.
    neg_mask : (low, high) probability band that marks negative classes, exclusive.
    entropy_normalization : ``"log2"`` (official) or ``"ln"`` (see the module docstring).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.

    ``state_dict()`` returns copies and ``load_state_dict`` copies in (a state is a value);
    ``save(path)`` writes a checksummed file with the hyper-parameters and text weights, which
    :meth:`from_file` (or ``adaptkit.load``) turns back into a TDA.
    """

    _parameter_constraints = {"pos_capacity": [Int(1, None, closed="left")], "pos_alpha": WEIGHT, "pos_beta": WEIGHT,
                              "neg_capacity": [Int(1, None, closed="left")], "neg_alpha": WEIGHT, "neg_beta": WEIGHT,
                              "neg_entropy": BAND, "neg_mask": BAND,
                              "entropy_normalization": [StrOptions({"log2", "ln"})], "device": [DEVICE]}

    def __init__(self, text_weights, *, pos_capacity: int = 3, pos_alpha: float = 2.0, pos_beta: float = 5.0,
                 neg_capacity: int = 2, neg_alpha: float = 0.117, neg_beta: float = 1.0,
                 neg_entropy: tuple[float, float] = (0.2, 0.5), neg_mask: tuple[float, float] = (0.03, 1.0),
                 entropy_normalization: str = "log2", device: str = "auto"):
        params = {"pos_capacity": pos_capacity, "pos_alpha": pos_alpha, "pos_beta": pos_beta,
                  "neg_capacity": neg_capacity, "neg_alpha": neg_alpha, "neg_beta": neg_beta,
                  "neg_entropy": neg_entropy, "neg_mask": neg_mask, "entropy_normalization": entropy_normalization,
                  "device": device}
        check_params("TDA", self._parameter_constraints, params)
        for name, band, top in (("neg_entropy", neg_entropy, None), ("neg_mask", neg_mask, 1.0)):
            valid = len(band) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                           for v in band) and 0.0 <= band[0] < band[1] and (top is None or band[1] <= top)
            if not valid:
                raise ValueError(f"The {name!r} parameter of TDA must be a (low, high) pair with 0 <= low < high"
                                 f"{' <= 1' if top else ''}; got {band!r}")
        self.device = resolve_device(device)
        self.text_weights = F.normalize(check_features(text_weights, "text_weights", device=self.device), dim=-1)
        n_classes = self.text_weights.shape[0]
        if n_classes < 2:
            raise ValueError(f"TDA needs text weights of at least two classes; got {n_classes}")
        self.pos_capacity, self.pos_alpha, self.pos_beta = pos_capacity, pos_alpha, pos_beta
        self.neg_capacity, self.neg_alpha, self.neg_beta = neg_capacity, neg_alpha, neg_beta
        self.neg_entropy, self.neg_mask = tuple(neg_entropy), tuple(neg_mask)
        self.max_entropy = math.log2(n_classes) if entropy_normalization == "log2" else math.log(n_classes)
        self.entropy_normalization = entropy_normalization
        self._params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k != "device"}
        self.reset()

    @property
    def n_classes(self) -> int:
        return self.text_weights.shape[0]

    def reset(self) -> None:
        """Empty both caches."""
        c, d = self.text_weights.shape
        z = dict(device=self.device)
        self.pos_keys = torch.zeros(c, self.pos_capacity, d, **z)
        self.pos_entropy = torch.full((c, self.pos_capacity), torch.inf, **z)
        self.neg_keys = torch.zeros(c, self.neg_capacity, d, **z)
        self.neg_entropy_values = torch.full((c, self.neg_capacity), torch.inf, **z)
        self.neg_masks = torch.zeros(c, self.neg_capacity, c, **z)

    @staticmethod
    def _insert(keys, entropies, extra, cls: int, feature, entropy: float, extra_value=None) -> None:
        """Fill the first empty slot of class ``cls``, else replace its highest-entropy entry when
        ``entropy`` is strictly lower (the official rule)."""
        slots = entropies[cls]
        empty = torch.nonzero(torch.isinf(slots)).flatten()
        if empty.numel():
            slot = int(empty[0])
        else:
            slot = int(torch.argmax(slots))
            if not entropy < float(slots[slot]):
                return
        keys[cls, slot], slots[slot] = feature, entropy
        if extra is not None:
            extra[cls, slot] = extra_value

    @staticmethod
    def _cache_term(x, keys, entropies, values, beta: float) -> torch.Tensor:
        filled = torch.isfinite(entropies).flatten()
        if not filled.any():
            return x.new_zeros(values.shape[-1])
        k, v = keys.flatten(0, 1)[filled], values.flatten(0, 1)[filled]
        return torch.exp(-beta * (1.0 - k @ x)) @ v

    def __repr__(self) -> str:
        filled = int(torch.isfinite(self.pos_entropy).sum()), int(torch.isfinite(self.neg_entropy_values).sum())
        return (f"TDA({self.text_weights.shape[0]} classes, pos_capacity={self.pos_capacity}, pos_alpha={self.pos_alpha}, "
                f"pos_beta={self.pos_beta}, neg_capacity={self.neg_capacity}, neg_alpha={self.neg_alpha}, "
                f"neg_beta={self.neg_beta}, device='{self.device}'; cached: {filled[0]} positive, {filled[1]} negative)")

    def update_predict(self, X) -> torch.Tensor:
        """Process (N, D) features (or one (D,) feature) in order, updating the caches with each
        before predicting it; returns logits (N, C) on the cache device."""
        X = torch.as_tensor(X) if not isinstance(X, torch.Tensor) else X
        X = check_features(X[None] if X.ndim == 1 else X, "X", n_features=self.text_weights.shape[1],
                           device=self.device, estimator="TDA")
        X = F.normalize(X, dim=-1)
        zero_shot = LOGIT_SCALE * X @ self.text_weights.T
        probabilities = zero_shot.softmax(dim=-1)
        entropies = -(probabilities * torch.log(probabilities + 1e-10)).sum(dim=-1)
        eye = torch.eye(self.n_classes, device=self.device)
        out = torch.empty_like(zero_shot)
        for i in range(X.shape[0]):
            x, pred, h = X[i], int(zero_shot[i].argmax()), float(entropies[i])
            self._insert(self.pos_keys, self.pos_entropy, None, pred, x, h)
            if self.neg_entropy[0] < h / self.max_entropy < self.neg_entropy[1]:
                mask = ((probabilities[i] > self.neg_mask[0]) & (probabilities[i] < self.neg_mask[1])).float()
                self._insert(self.neg_keys, self.neg_entropy_values, self.neg_masks, pred, x, h, mask)
            positive = self._cache_term(x, self.pos_keys, self.pos_entropy, eye[:, None, :].expand(
                -1, self.pos_capacity, -1), self.pos_beta)
            negative = self._cache_term(x, self.neg_keys, self.neg_entropy_values, self.neg_masks, self.neg_beta)
            out[i] = zero_shot[i] + self.pos_alpha * positive - self.neg_alpha * negative
        return out

    def _state_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        c, d = self.text_weights.shape
        return {"pos_keys": ((c, self.pos_capacity, d), "keys"), "pos_entropy": ((c, self.pos_capacity), "entropy"),
                "neg_keys": ((c, self.neg_capacity, d), "keys"), "neg_entropy": ((c, self.neg_capacity), "entropy"),
                "neg_masks": ((c, self.neg_capacity, c), "mask")}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of the caches (infinite entropy marks an empty slot), on CPU."""
        return {"pos_keys": self.pos_keys.cpu().clone(), "pos_entropy": self.pos_entropy.cpu().clone(),
                "neg_keys": self.neg_keys.cpu().clone(), "neg_entropy": self.neg_entropy_values.cpu().clone(),
                "neg_masks": self.neg_masks.cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore caches saved by :meth:`state_dict` (copied; validated before use)."""
        state = check_state(state, self._state_shapes(), "TDA")
        on = {name: tensor.to(self.device) for name, tensor in state.items()}
        self.pos_keys, self.pos_entropy = on["pos_keys"], on["pos_entropy"]
        self.neg_keys, self.neg_entropy_values, self.neg_masks = on["neg_keys"], on["neg_entropy"], on["neg_masks"]

    def save(self, path: str | os.PathLike) -> None:
        """Write the caches, hyper-parameters and text weights to a checksummed file (atomically)."""
        save_state(path, "tda", {**self.state_dict(), "text_weights": self.text_weights}, {"params": self._params})

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str = "auto") -> TDA:
        """A TDA rebuilt from a file written by :meth:`save`: its hyper-parameters, text weights
        and caches."""
        header, tensors = read_state(path, "tda")
        try:
            tda = cls(tensors.pop("text_weights"), **{**header["params"], "device": device})
            tda.load_state_dict(tensors)
        except (KeyError, ValueError, TypeError) as err:
            raise refuse(path, "tda", err) from None
        return tda
