"""Scoring a sweep of one linear weight in closed form: how many queries each α classifies right.

Along a sweep, the logits are P + α · Q (P, Q: (N, C); α ≥ 0), so query n is classified as its
label y exactly when every other class c loses: (P_y − P_c) + α (Q_y − Q_c) > 0, one half-line of
α per class, and the α where that holds form an interval. Two intervals per query bound what the
float32 logits decide, whose rounding moves a logit difference by at most 8u (|P| + α|Q|) (u the
unit roundoff) and whose intervals are computed here in float32: shifting every constraint by
``SLACK`` (|P| + α|Q|) gives the α where the query is surely right, and shifting it the other way
those where it may be. An α inside the first is counted; one in the second only is scored exactly
by the adapter's own float32 combine (ties included), so the counts equal scoring every point.
The cost is a few passes over (N, C) per sweep instead of a combine and an argmax per point.
"""

from __future__ import annotations

import torch

SLACK = 2.0 ** -18
"""Relative shift of each constraint: 64u of float32, the combine's 8u rounding bound plus this
module's own float32 arithmetic, with room to spare."""
MIN_SWEEP = 8
"""Sweeps shorter than this are scored point by point (a sweep costs about as much as 6 points)."""


def alpha_intervals(offset: torch.Tensor, slope: torch.Tensor, y: torch.Tensor, strict: bool):
    """Per row, the α ≥ 0 interval where offset_c + α · slope_c > 0 (``strict``) or ≥ 0 holds for
    every class c ≠ y: (low, high), each (N,); empty rows get low = +inf. ``offset`` and ``slope``
    are overwritten."""
    offset.scatter_(1, y[:, None], 1.0)
    slope.scatter_(1, y[:, None], 1.0)
    ratio = offset / slope
    low = torch.where(slope > 0, ratio, torch.inf).amin(dim=1).neg_()
    high = torch.where(slope < 0, ratio, -torch.inf).amax(dim=1).neg_()
    flat = slope == 0
    if bool(flat.any()):
        blocked = (flat & ((offset <= 0) if strict else (offset < 0))).any(dim=1)
        low.masked_fill_(blocked, torch.inf)
    return low, high


def sweep_counts(base: torch.Tensor, weighted: torch.Tensor, base_magnitude: torch.Tensor,
                 weighted_magnitude: torch.Tensor, alphas: list[float], y: torch.Tensor):
    """For logits base + α · weighted (N, C) at each α of ``alphas`` (all ≥ 0), given per-row
    bounds (N,) of the magnitudes summed into ``base`` and of ``weighted``: the number of rows
    surely right (A,), and the (A, N) mask of rows that need an exact evaluation."""
    true_base = base.gather(1, y[:, None])
    true_weighted = weighted.gather(1, y[:, None])
    offset, slope = true_base - base, true_weighted - weighted
    shift_base = (SLACK * base_magnitude)[:, None]
    shift_weighted = (SLACK * weighted_magnitude)[:, None]
    sure_low, sure_high = alpha_intervals(offset - shift_base, slope - shift_weighted, y, strict=True)
    maybe_low, maybe_high = alpha_intervals(offset + shift_base, slope + shift_weighted, y, strict=False)
    grid = torch.tensor(alphas, dtype=base.dtype, device=base.device)[:, None]
    sure = (sure_low < grid) & (grid < sure_high)
    maybe = (maybe_low <= grid) & (grid <= maybe_high)
    return sure.sum(dim=1), maybe & ~sure
