"""Token-level access to an open_clip ``VisionTransformer``.

:func:`vit_forward` reruns the ViT block by block. It exposes, per block, the <cls> token and the
per-head attention of the <cls> token to every other token, accepts a token-reduction policy
applied after chosen blocks, and can prepend an extra (anchor) token to a block's input for that
block's attention only. With no policy and no anchor it computes exactly ``encode_image``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from ..storage import version_tuple

TESTED_OPEN_CLIP = ((2, 24), (3, 4))
"""open_clip releases whose ViT internals (``_embeds``, ``_pool``, block layout) this module is
tested with: from 2.24 up to, not including, 3.4 (pyproject.toml pins the same range)."""


def check_open_clip(version: str | None = None) -> None:
    """Refuse an open_clip release outside :data:`TESTED_OPEN_CLIP`: its internals may differ, and
    re-running the blocks would give wrong tokens rather than an error."""
    version = version or open_clip.__version__
    low, high = TESTED_OPEN_CLIP
    if not low <= version_tuple(version)[:2] < high:
        raise ValueError(f"token access (TCA, ToMe, EViT) re-runs open_clip's ViT block by block and is tested with "
                         f"open_clip {'.'.join(map(str, low))} to {'.'.join(map(str, high))} (exclusive); this is "
                         f"open_clip {version}. Install a tested release: pip install 'open_clip_torch>="
                         f"{'.'.join(map(str, low))},<{'.'.join(map(str, high))}'")


@dataclass
class TokenTrace:
    """What :func:`vit_forward` saw.

    features : (B, D) L2-normalised image embeddings.
    cls_tokens : (B, L, W) the <cls> token after each of the L blocks.
    cls_attention : per block, (B, H, N_l − 1) attention of <cls> to the other tokens (heads kept).
    token_counts : per block, the number of tokens (with <cls>) entering it.
    """

    features: torch.Tensor
    cls_tokens: torch.Tensor
    cls_attention: list[torch.Tensor] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)


def check_vit(backbone) -> VisionTransformer:
    """The backbone's open_clip VisionTransformer; a clear error for other image towers and for
    untested open_clip releases."""
    check_open_clip()
    visual = backbone.model.visual
    if not isinstance(visual, VisionTransformer):
        raise ValueError(f"token condensation needs a ViT image tower; {backbone.name} has "
                         f"{type(visual).__name__}. Use a ViT backbone such as ViT-B-16 (or TDA, which works "
                         "on any backbone's features).")
    blocks = visual.transformer.resblocks
    if not all(hasattr(visual, name) for name in ("_embeds", "_pool", "proj")) or \
            not all(isinstance(b, ResidualAttentionBlock) and b.attn.batch_first for b in blocks) or \
            getattr(visual, "attn_pool", None) is not None:
        raise ValueError(f"{backbone.name}: only open_clip's standard ViT blocks (batch-first "
                         "nn.MultiheadAttention, token pooling) are supported for token access")
    return visual


Policy = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""policy(block, tokens (B, N, W), sizes (B, N), cls_attention (B, H, N−1)) -> (tokens, sizes),
called after a block; returning the inputs unchanged means no reduction there."""


def _block(block: ResidualAttentionBlock, x: torch.Tensor, sizes: torch.Tensor | None):
    """One residual attention block returning (x, attention weights (B, H, N, N))."""
    q = block.ln_1(x)
    mask = None
    if sizes is not None:
        heads = block.attn.num_heads
        bias = sizes.log()[:, None, :].expand(-1, x.shape[1], -1)
        mask = bias.repeat_interleave(heads, dim=0).to(q.dtype)
    out, weights = block.attn(q, q, q, need_weights=True, average_attn_weights=False, attn_mask=mask)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x))), weights


@torch.inference_mode()
def vit_forward(backbone, pixels: torch.Tensor, policy: Policy | None = None,
                anchors: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
                proportional_attention: bool = False) -> TokenTrace:
    """Run the image tower on (B, 3, H, W) pixels, block by block.

    ``anchors(block, cls)`` may return (B, W) tokens to prepend (after <cls>) to that block's
    input; they take part in its attention and are dropped after it. ``proportional_attention``
    adds log(token size) to the attention logits (ToMe), so merged tokens count as many.
    """
    visual = check_vit(backbone)
    x = visual._embeds(pixels.to(backbone.device))
    sizes = torch.ones(x.shape[:2], device=x.device, dtype=x.dtype)
    cls_tokens, attentions, counts = [], [], []
    for i, block in enumerate(visual.transformer.resblocks):
        counts.append(x.shape[1])
        anchor = anchors(i, x[:, 0]) if anchors is not None else None
        if anchor is not None:
            x = torch.cat([x[:, :1], anchor[:, None].to(x.dtype), x[:, 1:]], dim=1)
            sizes = torch.cat([sizes[:, :1], torch.ones_like(sizes[:, :1]), sizes[:, 1:]], dim=1)
        x, weights = _block(block, x, sizes if proportional_attention else None)
        if anchor is not None:
            keep = [0] + list(range(2, x.shape[1]))
            x, sizes = x[:, keep], sizes[:, keep]
            cls_attention = weights[:, :, 0, 2:]
        else:
            cls_attention = weights[:, :, 0, 1:]
        cls_tokens.append(x[:, 0])
        attentions.append(cls_attention)
        if policy is not None:
            x, sizes = policy(i, x, sizes, cls_attention)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return TokenTrace(F.normalize(pooled.float(), dim=-1), torch.stack(cls_tokens, dim=1).float(), attentions,
                      counts)
