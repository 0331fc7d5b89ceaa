"""TCA: training-free test-time adaptation by token condensation (arXiv 2410.14729).

For each test image the ViT runs with a condensation policy (``condense``), prepending at each
condensation block the domain anchor — the reservoir's per-class mean <cls> token of that block —
most similar to the image's current <cls> token. A context-token reservoir keeps, per predicted
class, up to ``reservoir_size`` items (feature, entropy, per-block <cls> tokens); over capacity the
item with the highest entropy + mean similarity to the class's other items is dropped (the official
rule). Anchors refresh once every class holds at least two items. The logits are corrected as

    logits = 100 · f Tᵀ + λ · Σ_j exp(−β (1 − a_j)) onehot(class_j),
    a_j = Σ_l w_l cos(cls_l(x), cls_l(item_j)),  w ∝ exp(linspace(0, 1, L) / scale)

(depth-weighted <cls> similarity, as in the official code). The released code assumes batches of
one; here a batch runs through the ViT with the anchors of the batch's start, then its samples
update the reservoir one by one in order, each predicted right after its own update.
The official per-dataset λ, β, scale configs are not released; the defaults below are adaptkit's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._clip import LOGIT_SCALE
from .._params import FLOAT32_MAX, Float, Int, StrOptions, check_params
from .._validation import check_features
from ..backbones import Backbone
from ..data.decode import load_image
from .condense import POLICIES, default_layers, flops_per_image, make_policy
from .state import check_state, read_state, refuse, save_state
from .tokens import check_vit, vit_forward


class TCA:
    """Streaming TCA on images.

    Parameters
    ----------
    backbone : a ViT :class:`adaptkit.Backbone`.
    text_weights : (C, D) zero-shot classifier.
    reservoir_size : items kept per predicted class.
    condense : ``"tca"``, ``"evit"``, ``"tome"`` or ``None`` (no reduction).
    keep : keep rate of the condensation (``tca``: R = 1 − keep).
    layers : blocks after which to condense (default L/4, L/2, 3L/4).
    ranking : ``"mean"`` (released code, default) or ``"consensus"`` (paper) for ``tca``.
    lam, beta, scale : logit correction strength, sharpness and depth-weight temperature.
    use_anchors : prepend domain anchors at the condensation blocks.

    ``state_dict()`` returns copies and ``load_state_dict`` copies in; ``save(path)`` writes a
    checksummed file with the hyper-parameters, text weights and backbone identity, which
    :meth:`from_file` (or ``adaptkit.load``) turns back into a TCA.
    """

    _parameter_constraints = {"reservoir_size": [Int(1, None, closed="left")],
                              "condense": [StrOptions(set(POLICIES)), None], "keep": [Float(0, 1, closed="right")],
                              "layers": [list, tuple, None], "ranking": [StrOptions({"mean", "consensus"})],
                              "lam": [Float(0, FLOAT32_MAX)], "beta": [Float(0, FLOAT32_MAX)],
                              "scale": [Float(0, FLOAT32_MAX, closed="right")], "use_anchors": ["boolean"]}

    def __init__(self, backbone: Backbone, text_weights, *, reservoir_size: int = 3, condense: str | None = "tca",
                 keep: float = 0.9, layers: Sequence[int] | None = None, ranking: str = "mean", lam: float = 2.0,
                 beta: float = 5.0, scale: float = 0.5, use_anchors: bool = True):
        params = {"reservoir_size": reservoir_size, "condense": condense, "keep": keep, "layers": layers,
                  "ranking": ranking, "lam": lam, "beta": beta, "scale": scale, "use_anchors": use_anchors}
        check_params("TCA", self._parameter_constraints, params)
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be an adaptkit.Backbone; got {type(backbone).__name__}")
        visual = check_vit(backbone)
        n_blocks = len(visual.transformer.resblocks)
        self.backbone = backbone
        self.text_weights = F.normalize(check_features(text_weights, "text_weights", n_features=backbone.embed_dim,
                                                       device=backbone.device, estimator=backbone.name), dim=-1)
        if self.text_weights.shape[0] < 2:
            raise ValueError(f"TCA needs text weights of at least two classes; got {self.text_weights.shape[0]}")
        if layers is not None and not all(isinstance(layer, int) and not isinstance(layer, bool) for layer in layers):
            raise TypeError(f"layers must be a list of block indices; got {layers!r}")
        self._params = {**params, "layers": None if layers is None else list(layers)}
        self.layers = tuple(layers) if layers is not None else default_layers(n_blocks)
        if any(not 0 <= layer < n_blocks for layer in self.layers):
            raise ValueError(f"layers must lie in [0, {n_blocks}); got {self.layers}")
        options = {"ranking": ranking} if condense == "tca" else {}
        self.policy = make_policy(condense, keep, self.layers, **options) if condense else None
        self.reservoir_size, self.lam, self.beta, self.use_anchors = reservoir_size, lam, beta, use_anchors
        depth = torch.exp(torch.linspace(0, 1, n_blocks) / scale)
        self.depth_weights = (depth / depth.sum()).to(backbone.device)
        self.reset()

    @property
    def n_classes(self) -> int:
        return self.text_weights.shape[0]

    def reset(self) -> None:
        """Empty the reservoir and drop the anchors."""
        self.reservoir: list[list[dict]] = [[] for _ in range(self.n_classes)]
        self.anchors: torch.Tensor | None = None

    def _similarity(self, cls: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Depth-weighted cosine between (L, W) and (K, L, W) per-block <cls> tokens: (K,)."""
        return (F.cosine_similarity(cls[None], others, dim=-1) * self.depth_weights).sum(dim=-1)

    def _anchor(self, block: int, cls: torch.Tensor) -> torch.Tensor | None:
        if self.anchors is None or not self.use_anchors or block not in self.layers:
            return None
        candidates = self.anchors[:, block]
        best = (F.normalize(cls, dim=-1) @ F.normalize(candidates, dim=-1).T).argmax(dim=1)
        return candidates[best]

    def _update(self, pred: int, item: dict) -> None:
        items = self.reservoir[pred]
        items.append(item)
        if len(items) > self.reservoir_size:
            tokens = torch.stack([it["cls"] for it in items])
            similarity = torch.stack([self._similarity(t, tokens) for t in tokens])
            mean_similarity = (similarity.sum(dim=1) - similarity.diagonal()) / (len(items) - 1)
            score = torch.tensor([it["entropy"] for it in items], device=tokens.device) + mean_similarity
            items.pop(int(score.argmax()))
        self._refresh_anchors()

    def _refresh_anchors(self) -> None:
        """Anchors = per-class mean per-block <cls> tokens, once every class holds ≥ 2 items."""
        if all(len(r) >= 2 for r in self.reservoir):
            self.anchors = torch.stack([torch.stack([it["cls"] for it in r]).mean(dim=0) for r in self.reservoir])

    def _pixels(self, images) -> torch.Tensor:
        """(N, 3, H, W) preprocessed pixels, checked: non-empty, finite, the backbone's size."""
        if isinstance(images, torch.Tensor):
            pixels = images[None] if images.ndim == 3 else images
            expected = (3, *self.backbone.image_size)
            if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
                raise ValueError(f"images as a tensor must have shape (N, {', '.join(map(str, expected))}) (the "
                                 f"backbone's preprocessing); got {tuple(images.shape)}")
            if not pixels.is_floating_point() or not bool(torch.isfinite(pixels).all()):
                raise ValueError("images as a tensor must hold finite float pixels (preprocessed, normalised)")
        else:
            if not isinstance(images, (list, tuple)):
                images = [images]
            if not images:
                raise ValueError("images is empty: pass at least one image")
            pixels = torch.stack([self.backbone.preprocess(load_image(im)) for im in images])
        if pixels.shape[0] == 0:
            raise ValueError("images is empty: pass at least one image")
        return pixels

    @torch.inference_mode()
    def update_predict(self, images) -> torch.Tensor:
        """Process images (paths, PIL images or a preprocessed (N, 3, H, W) batch) in order;
        returns corrected logits (N, C)."""
        trace = vit_forward(self.backbone, self._pixels(images), self.policy, anchors=self._anchor,
                            proportional_attention=self.policy is not None and self.policy.name == "tome")
        zero_shot = LOGIT_SCALE * trace.features @ self.text_weights.T
        probabilities = zero_shot.softmax(dim=-1)
        entropies = -(probabilities * torch.log(probabilities + 1e-10)).sum(dim=-1)
        out = zero_shot.clone()
        for i in range(zero_shot.shape[0]):
            cls = trace.cls_tokens[i]
            self._update(int(zero_shot[i].argmax()), {"feature": trace.features[i], "entropy": float(entropies[i]),
                                                       "cls": cls})
            stored = [(c, it["cls"]) for c, items in enumerate(self.reservoir) for it in items]
            classes = torch.tensor([c for c, _ in stored], device=cls.device)
            affinity = self._similarity(cls, torch.stack([t for _, t in stored]))
            out[i] += self.lam * torch.zeros(self.n_classes, device=cls.device).index_add_(
                0, classes, torch.exp(-self.beta * (1.0 - affinity)))
        return out

    def flops(self) -> tuple[int, int]:
        """(FLOPs per image under the policy, FLOPs per image of the dense ViT)."""
        return flops_per_image(self.backbone, self.policy), flops_per_image(self.backbone)

    def _state_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        c, s = self.n_classes, self.reservoir_size
        layers, width = self.depth_weights.shape[0], check_vit(self.backbone).transformer.width
        return {"features": ((c, s, self.text_weights.shape[1]), "finite"), "entropy": ((c, s), "entropy"),
                "cls": ((c, s, layers, width), "finite")}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The reservoir as padded tensors (new copies, on CPU): features (C, S, D), entropies
        (C, S; inf = empty), <cls> tokens (C, S, L, W)."""
        shapes = self._state_shapes()
        features = torch.zeros(shapes["features"][0])
        entropy = torch.full(shapes["entropy"][0], torch.inf)
        cls = torch.zeros(shapes["cls"][0])
        for k, items in enumerate(self.reservoir):
            for j, it in enumerate(items):
                features[k, j], entropy[k, j], cls[k, j] = it["feature"].cpu(), it["entropy"], it["cls"].cpu()
        return {"features": features, "entropy": entropy, "cls": cls}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a reservoir saved by :meth:`state_dict` (copied, validated; anchors recomputed)."""
        state = check_state(state, self._state_shapes(), "TCA")
        self.reset()
        device = self.backbone.device
        for k in range(self.n_classes):
            for j in range(self.reservoir_size):
                if torch.isfinite(state["entropy"][k, j]):
                    self.reservoir[k].append({"feature": state["features"][k, j].to(device),
                                              "entropy": float(state["entropy"][k, j]),
                                              "cls": state["cls"][k, j].to(device)})
        self._refresh_anchors()

    def save(self, path: str | os.PathLike) -> None:
        """Write the reservoir, hyper-parameters, text weights and backbone identity to a
        checksummed file (atomically)."""
        save_state(path, "tca", {**self.state_dict(), "text_weights": self.text_weights},
                   {"params": self._params, "backbone": self.backbone.identity})

    @classmethod
    def from_file(cls, path: str | os.PathLike, backbone: Backbone | None = None, **backbone_options) -> TCA:
        """A TCA rebuilt from a file written by :meth:`save`; the backbone is rebuilt from the
        recorded identity unless given (its weights must match)."""
        header, tensors = read_state(path, "tca")
        if backbone is None:
            backbone = Backbone.from_identity(header["backbone"], **backbone_options)
        elif backbone.identity["weights"] != header["backbone"]["weights"]:
            raise ValueError(f"{path} was written with backbone {header['backbone']}, not {backbone.identity}")
        try:
            tca = cls(backbone, tensors.pop("text_weights"), **header["params"])
            tca.load_state_dict(tensors)
        except (KeyError, ValueError, TypeError) as err:
            raise refuse(path, "tca", err) from None
        return tca
