"""Token condensation policies for :func:`adaptkit.tta.tokens.vit_forward`.

Each policy reduces the patch tokens after the blocks in ``layers`` (default: after blocks
L/4, L/2 and 3L/4, i.e. 3, 6, 9 of a 12-block ViT-B), keeping a fraction ``keep`` of them:

- ``evit``: keep the top tokens by <cls> attention averaged over heads, fuse the rest into one
  token (their attention-weighted average);
- ``tome``: bipartite soft matching (ToMe): tokens alternate into sets A and B, each A token's most
  similar B token is its edge, the most similar edges merge by size-weighted averages;
- ``tca``: TCA's condensation with R = 1 − keep: left = ⌈(1 − R)(N − 1)⌉, m = N − left; keep the top
  left − 2m tokens, merge the next 2m into 4 coreset centres (farthest-point seeds, members
  averaged with weights 1 / (1 + distance to their seed)), fuse the rest into one token weighted
  by attention (197 → 143 → 104 → 77 tokens at keep = 0.9; below keep ≈ 2/3 no token survives
  unmerged and a stage leaves <cls>, 4 centres and at most one fused token). Tokens are ranked by head-averaged
  <cls> attention (``ranking="mean"``, the released code) or by the paper's cross-head consensus
  (``ranking="consensus"``: a token's score is its best per-head rank, so only tokens that every
  head ranks low are dropped).
Every policy works on batches and tracks token sizes (how many patches a token stands for).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .._options import CONDENSE_POLICIES
from .tokens import vit_forward

POLICIES = CONDENSE_POLICIES


def default_layers(n_blocks: int) -> tuple[int, ...]:
    """Blocks after which to condense: L/4, L/2, 3L/4 (3, 6, 9 for 12 blocks)."""
    return tuple(sorted({max(0, n_blocks * k // 4) for k in (1, 2, 3)}))


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, ...) at index (B, K) -> (B, K, ...)."""
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:]))


def _fuse(tokens: torch.Tensor, sizes: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per batch row: the weights-normalised average of tokens (B, K, W); sizes add."""
    w = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (w[..., None] * tokens).sum(dim=1, keepdim=True), sizes.sum(dim=1, keepdim=True)


class Condenser:
    """Base: calls :meth:`reduce` after the blocks in ``layers``."""

    name = "none"

    def __init__(self, keep: float = 0.9, layers: tuple[int, ...] = (3, 6, 9)):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must lie in (0, 1]; got {keep}")
        self.keep, self.layers = keep, tuple(layers)

    def __call__(self, block: int, x, sizes, cls_attention):
        if block not in self.layers or x.shape[1] <= 2 or self.keep >= 1.0:
            return x, sizes
        return self.reduce(x, sizes, cls_attention)

    def reduce(self, x, sizes, cls_attention):
        raise NotImplementedError

    def scores(self, cls_attention: torch.Tensor) -> torch.Tensor:
        """(B, N − 1) importance of each patch token: head-averaged <cls> attention."""
        return cls_attention.mean(dim=1)


class EViT(Condenser):
    """Keep the top ⌈keep · (N − 1)⌉ patch tokens by <cls> attention; fuse the rest into one."""

    name = "evit"

    def reduce(self, x, sizes, cls_attention):
        patches, patch_sizes, score = x[:, 1:], sizes[:, 1:], self.scores(cls_attention)
        n_keep = math.ceil(self.keep * patches.shape[1])
        if n_keep >= patches.shape[1]:
            return x, sizes
        order = torch.argsort(score, dim=1, descending=True)
        kept, rest = order[:, :n_keep].sort(dim=1).values, order[:, n_keep:]
        fused, fused_size = _fuse(_gather(patches, rest), _gather(patch_sizes, rest), _gather(score, rest))
        return (torch.cat([x[:, :1], _gather(patches, kept), fused], dim=1),
                torch.cat([sizes[:, :1], _gather(patch_sizes, kept), fused_size], dim=1))


class ToMe(Condenser):
    """Bipartite soft matching: merge r = (N − 1) − ⌈keep · (N − 1)⌉ tokens per application."""

    name = "tome"

    def reduce(self, x, sizes, cls_attention):
        patches, patch_sizes = x[:, 1:], sizes[:, 1:]
        a, b = patches[:, ::2], patches[:, 1::2]
        size_a, size_b = patch_sizes[:, ::2], patch_sizes[:, 1::2]
        r = min(patches.shape[1] - math.ceil(self.keep * patches.shape[1]), a.shape[1])
        if r <= 0:
            return x, sizes
        similarity = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)
        best, destination = similarity.max(dim=-1)
        order = torch.argsort(best, dim=1, descending=True)
        merged, unmerged = order[:, :r], order[:, r:].sort(dim=1).values
        target = torch.gather(destination, 1, merged)
        weighted_b = b * size_b[..., None]
        merged_sizes = _gather(size_a, merged)
        weighted_b = weighted_b.scatter_add(1, target[..., None].expand(-1, -1, b.shape[2]),
                                            _gather(a, merged) * merged_sizes[..., None])
        new_size_b = size_b.scatter_add(1, target, merged_sizes)
        new_b = weighted_b / new_size_b[..., None]
        return (torch.cat([x[:, :1], _gather(a, unmerged), new_b], dim=1),
                torch.cat([sizes[:, :1], _gather(size_a, unmerged), new_size_b], dim=1))


class TCACondense(Condenser):
    """TCA's prune / coreset-merge / fuse step (see the module docstring)."""

    name = "tca"
    n_centres = 4

    def __init__(self, keep: float = 0.9, layers: tuple[int, ...] = (3, 6, 9), ranking: str = "mean"):
        super().__init__(keep, layers)
        if ranking not in ("mean", "consensus"):
            raise ValueError(f"ranking must be 'mean' (released code) or 'consensus' (paper); got {ranking!r}")
        self.ranking = ranking

    def scores(self, cls_attention: torch.Tensor) -> torch.Tensor:
        if self.ranking == "mean":
            return cls_attention.mean(dim=1)
        ranks = cls_attention.argsort(dim=-1).argsort(dim=-1).float()
        return ranks.max(dim=1).values + cls_attention.mean(dim=1) / (cls_attention.mean(dim=1).max() + 1)

    def reduce(self, x, sizes, cls_attention):
        n = x.shape[1]
        left = math.ceil(self.keep * (n - 1))
        m = n - left
        n_top = max(0, left - 2 * m)
        n_middle = min(2 * m, n - 1 - n_top)
        patches, patch_sizes, score = x[:, 1:], sizes[:, 1:], self.scores(cls_attention)
        order = torch.argsort(score, dim=1, descending=True)
        top, middle = order[:, :n_top].sort(dim=1).values, order[:, n_top:n_top + n_middle]
        rest = order[:, n_top + n_middle:]
        centres, centre_sizes = self._coreset(_gather(patches, middle), _gather(patch_sizes, middle))
        parts, part_sizes = [x[:, :1], _gather(patches, top), centres], [sizes[:, :1], _gather(patch_sizes, top),
                                                                         centre_sizes]
        if rest.shape[1]:
            fused, fused_size = _fuse(_gather(patches, rest), _gather(patch_sizes, rest), _gather(score, rest))
            parts.append(fused)
            part_sizes.append(fused_size)
        return torch.cat(parts, dim=1), torch.cat(part_sizes, dim=1)

    def _coreset(self, tokens: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge (B, K, W) tokens (ordered by importance) into ≤ 4 centres: farthest-point seeds from
        the most important token, nearest-seed assignment, 1 / (1 + distance)-weighted averages."""
        k = min(self.n_centres, tokens.shape[1])
        seeds = [torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)]
        distance = torch.cdist(tokens, _gather(tokens, seeds[0][:, None])).squeeze(-1)
        for _ in range(k - 1):
            seeds.append(distance.argmax(dim=1))
            distance = torch.minimum(distance, torch.cdist(tokens, _gather(tokens, seeds[-1][:, None])).squeeze(-1))
        seed_tokens = _gather(tokens, torch.stack(seeds, dim=1))
        to_seed = torch.cdist(tokens, seed_tokens)
        assignment = to_seed.argmin(dim=-1)
        weights = 1.0 / (1.0 + to_seed.gather(2, assignment[..., None]).squeeze(-1))
        membership = F.one_hot(assignment, k).to(tokens.dtype) * weights[..., None]
        centres = membership.transpose(1, 2) @ tokens / membership.sum(dim=1)[..., None].clamp_min(1e-12)
        centre_sizes = (F.one_hot(assignment, k).to(sizes.dtype) * sizes[..., None]).sum(dim=1)
        return centres, centre_sizes


def make_policy(name: str, keep: float, layers: tuple[int, ...], **options) -> Condenser:
    """A policy by name (:data:`POLICIES`)."""
    classes = {"evit": EViT, "tome": ToMe, "tca": TCACondense}
    if name not in classes:
        raise ValueError(f"condense must be one of {POLICIES}; got {name!r}")
    return classes[name](keep, layers, **options)


def flops_per_image(backbone, policy: Condenser | None = None, **forward_options) -> int:
    """FLOPs of one image through the image tower under ``policy`` (torch's FlopCounterMode)."""
    pixels = torch.zeros(1, 3, *backbone.image_size)
    with FlopCounterMode(display=False) as counter:
        vit_forward(backbone, pixels, policy, **forward_options)
    return int(counter.get_total_flops())
