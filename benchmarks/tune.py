"""How close ``ak.tune`` runs to the arithmetic limit, against what the official searches really do.

Features are synthetic but shaped like CLIP's: unit vectors sharing a common direction (image-image
cosines around 0.7), class clusters, text weights near the class centres. For each adapter with a
grid, at each size, every column warmed up once and then the best of ``--repeats`` calls, on
``--threads`` torch threads (default one, so that machine load does not skew the ratios):

- ``ak.tune`` over the adapter's default grid;
- ``official search``: a transcription of the official repository's search (each function cites
  the file and function): what it hoists and what it recomputes per point; timed on a sample of
  ``--sample`` points (in grid order) and scaled to the whole grid;
- ``competent loop``: plain float32 torch a careful user would write: products shared by the grid
  once, one exp and class product per distinct β, one combine and argmax per point, whole grid;
- ``floor``: the work no exact search avoids: the shared products, one exp and class product per
  distinct β, and per point one combine (into a reused buffer) and one max over the classes; for
  ProKeR one factorisation and solve per (β, λ).

The second table times GDA + Tip-Adapter tuning over five CoOp-sized datasets (10 × 10 Tip grid,
7 GDA alphas) against the competent float32 loop over the same grids; then Tip-Adapter's search at
N_val = 10,000 against 1,649, and ``ak.leaderboard`` against its most expensive member.

    python benchmarks/tune.py            # Caltech101 16-shot size
    python benchmarks/tune.py --full     # also C = 1000, D = 1024, N_val = 10,000
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F

import adaptkit as ak
from adaptkit.adapters import APE, GDA, LinearProbe, ProKeR, TipAdapter, TipX
from adaptkit.adapters.proker import exp_kernel, ridge_solve
from adaptkit.adapters.tip_x import kl_affinity, log_signatures


def clip_like(n_classes: int, dim: int, shots: int, n_val: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    common = F.normalize(torch.randn(dim, generator=g), dim=0)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)

    def sample(labels):
        noise = torch.randn(len(labels), dim, generator=g) / dim ** 0.5 * 4
        return F.normalize(2.0 * common + centres[labels] + 1.2 * noise, dim=-1)

    y = torch.arange(n_classes).repeat_interleave(shots)
    y_val = torch.arange(n_val) % n_classes
    text = F.normalize(centres + 0.8 * torch.randn(n_classes, dim, generator=g) / dim ** 0.5 * 4, dim=-1)
    return sample(y), y, sample(y_val), y_val, text


def accuracy(logits, labels):
    return float((logits.argmax(dim=1) == labels).float().mean())


# --- the official repositories' searches, transcribed (one grid point at a time) ---------------


def official_tip(X, y, Xv, yv, T, points):
    """gaopengcuhk/Tip-Adapter, utils.py ``search_hp``: per (β, α) the affinity, the exp and class
    product, and the zero-shot logits, all recomputed."""
    keys, values = F.normalize(X, dim=-1), F.one_hot(y).float()
    for p in points:
        affinity = Xv @ keys.T
        cache = torch.exp(-(p["beta"] - p["beta"] * affinity)) @ values
        accuracy(100.0 * Xv @ T.T + p["alpha"] * cache, yv)


def official_tip_x(X, y, Xv, yv, T, points):
    """vishaal27/SuS-X, tipx.py ``hparam_search``: the KL divergences once, before the search; per
    (α, β) the affinity, the exp and class product, the zero-shot logits, the KL rescaled to the
    affinity's range and its class product; γ is the inner loop and only re-combines."""
    keys, values = F.normalize(X, dim=-1), F.one_hot(y).float()
    kl = kl_affinity(log_signatures(Xv, T, 0.5), log_signatures(keys, T, 0.5))
    by_pair: dict = {}
    for p in points:
        by_pair.setdefault((p["alpha"], p["beta"]), []).append(p["gamma"])
    for (alpha, beta), gammas in by_pair.items():
        affinity = Xv @ keys.T
        cache = torch.exp(-(beta - beta * affinity)) @ values
        zero_shot = 100.0 * Xv @ T.T
        scaled = (kl - kl.min()) / (kl.max() - kl.min()) * (affinity.max() - affinity.min()) + affinity.min()
        kl_logits = -scaled @ values
        for gamma in gammas:
            accuracy(zero_shot + kl_logits * gamma + cache * alpha, yv)


def official_ape(X, y, Xv, yv, T, points, adapter):
    """yangyangyang127/APE, main.py ``APE``: the refined affinity R_fF and the zero-shot logits R_fW
    once, before the search; per (β, α, γ) the weighted values, the exp and class product."""
    refined_keys, values = adapter.refined_keys_, F.one_hot(adapter.key_labels_).float()
    affinity = F.normalize(Xv[:, adapter.channels_], dim=-1) @ refined_keys.T
    zero_shot = 100.0 * Xv @ T.T
    for p in points:
        weighted = values * torch.exp(p["gamma"] * adapter.key_divergence_)[:, None]
        cache = torch.exp(-(p["beta"] - p["beta"] * affinity)) @ weighted
        accuracy(zero_shot + p["alpha"] * cache, yv)


def official_proker(X, y, Xv, yv, T, points):
    """ProKeR's ``trainers/proker.py`` (as in omarnust/BReg-Adapter; the official repository was not
    reachable): the two kernels once per β, an LU solve (``torch.linalg.solve``) per λ."""
    targets = F.one_hot(y).float() - X @ T.T
    by_beta: dict = {}
    for p in points:
        by_beta.setdefault(p["beta"], []).append(p["lam"])
    for beta, lams in by_beta.items():
        kernel = torch.exp(-beta * (1 - X @ X.T))
        cross = torch.exp(-beta * (1 - Xv @ X.T))
        for lam in lams:
            coef = torch.linalg.solve(kernel / lam + torch.eye(len(X)), targets)
            accuracy(Xv @ T.T + cross @ coef, yv)


def official_gda(X, y, Xv, yv, T, points):
    """GDA's search: one fit, then per α the zero-shot and GDA logits combined (α enters linearly)."""
    gda = GDA(device="cpu").fit(X, y, text_weights=T)
    for p in points:
        accuracy(100.0 * Xv @ T.T + p["alpha"] * (Xv @ gda.weight_ + gda.bias_), yv)


def official_linear_probe(X, y, Xv, yv, T, points):
    for p in points:
        LinearProbe(C=p["C"], device="cpu").fit(X, y).score(Xv, yv)


# --- a plain competent loop: shared work hoisted, one exp per β, one argmax per point ----------


def competent(name, X, y, Xv, yv, T, adapter, points):
    """What a careful user writes in plain float32 torch: products shared by the grid once, one exp
    (and class product) per distinct β (per (β, γ) for APE's weighted values), then per point one
    combine and one argmax."""
    zero_shot = 100.0 * Xv @ T.T
    if name == "gda":
        gda_logits = Xv @ adapter.weight_ + adapter.bias_
        for p in points:
            accuracy(zero_shot + p["alpha"] * gda_logits, yv)
        return
    if name == "linear_probe":
        return official_linear_probe(X, y, Xv, yv, T, points)
    if name == "proker":
        return official_proker(X, y, Xv, yv, T, points)
    if name == "ape":
        affinity = F.normalize(Xv[:, adapter.channels_], dim=-1) @ adapter.refined_keys_.T
        values = F.one_hot(adapter.key_labels_).float()
    else:
        affinity, values = Xv @ adapter.keys_.T, F.one_hot(adapter.key_labels_).float()
    kl_logits = None
    if name == "tip_x":
        kl = kl_affinity(log_signatures(Xv, T, 0.5), log_signatures(adapter.keys_, T, 0.5))
        scaled = (kl - kl.min()) / (kl.max() - kl.min()) * (affinity.max() - affinity.min()) + affinity.min()
        kl_logits = -scaled @ values
    by_beta: dict = {}
    for p in points:
        by_beta.setdefault(p["beta"], []).append(p)
    for beta, members in by_beta.items():
        exp = torch.mul(affinity, beta).sub_(beta).exp_()
        caches = {}
        for p in members:
            gamma = p.get("gamma", 0.0)
            if gamma not in caches:
                weights = values * torch.exp(gamma * adapter.key_divergence_)[:, None] if name == "ape" else values
                caches[gamma] = exp @ weights
            logits = zero_shot + p["alpha"] * caches[gamma]
            if kl_logits is not None:
                logits = logits + gamma * kl_logits
            accuracy(logits, yv)


def floor(name, X, y, Xv, yv, T, adapter, points):
    """The work no exact search avoids: the shared products, one exp and class product per
    distinct β (per (β, γ) for APE), and per point one combine into a reused buffer and one max
    over the classes (the least a count of correct rows needs); for ProKeR one factorisation and
    solve per (β, λ)."""
    if name == "linear_probe":
        return float("nan")
    start = time.perf_counter()
    if name == "proker":
        for beta in sorted({p["beta"] for p in points}):
            kernel = exp_kernel(X, X, beta)
            for p in (q for q in points if q["beta"] == beta):
                ridge_solve(kernel, adapter.targets_, p["lam"])
        return time.perf_counter() - start
    zero_shot = 100.0 * Xv @ T.T
    buffer = torch.empty_like(zero_shot)
    if name == "gda":
        extra = Xv @ adapter.weight_ + adapter.bias_
        for p in points:
            torch.add(zero_shot, extra, alpha=p["alpha"], out=buffer).amax(1)
        return time.perf_counter() - start
    keys = adapter.refined_keys_ if name == "ape" else adapter.keys_
    queries = F.normalize(Xv[:, adapter.channels_], dim=-1) if name == "ape" else Xv
    affinity = queries @ keys.T
    values = F.one_hot(adapter.key_labels_).float()
    kl_logits = None
    if name == "tip_x":
        kl_logits = kl_affinity(log_signatures(queries, T, 0.5), log_signatures(keys, T, 0.5)) @ values
    groups: dict = {}
    for p in points:
        groups.setdefault((p["beta"], p.get("gamma", 0.0) if name == "ape" else 0.0), []).append(p)
    for (beta, gamma), members in groups.items():
        exp = torch.mul(affinity, beta).sub_(beta).exp_()
        cache = exp @ (values * torch.exp(gamma * adapter.key_divergence_)[:, None] if name == "ape" else values)
        for p in members:
            torch.add(zero_shot, cache, alpha=p["alpha"], out=buffer)
            if kl_logits is not None:
                buffer.add_(kl_logits, alpha=p["gamma"])
            buffer.amax(1)
    return time.perf_counter() - start


def best_of(repeats, function, *args):
    """The shortest of ``repeats`` timed calls (after one untimed warm-up call)."""
    function(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


ADAPTERS = {"tip_adapter": (TipAdapter, official_tip), "tip_x": (TipX, official_tip_x), "ape": (APE, official_ape),
            "proker": (ProKeR, official_proker), "gda": (GDA, official_gda),
            "linear_probe": (LinearProbe, official_linear_probe)}


def grid_points(grid):
    names = list(grid)
    return [dict(zip(names, v)) for v in itertools.product(*(grid[n] for n in names))]


def one_size(n_classes, dim, n_val, sample, repeats, shots=16):
    X, y, Xv, yv, T = clip_like(n_classes, dim, shots, n_val)
    print(f"\nC = {n_classes}, D = {dim}, {shots} shots ({len(X)} keys), N_val = {n_val}")
    print("| adapter | grid points | ak.tune (s) | official search (s) | vs official | competent loop (s) | "
          "vs competent | floor (s) | tune / floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (cls, official) in ADAPTERS.items():
        if name == "proker" and len(X) > 4000:
            print(f"| {name} | – | skipped: a {len(X)}² kernel system per point | | | | | | |")
            continue
        adapter = cls(device="cpu").fit(X, y, text_weights=T)
        points = grid_points(cls.param_grid)
        tuned = best_of(repeats, ak.tune, adapter, Xv, yv)
        rng = np.random.default_rng(0)
        picked = [points[i] for i in np.sort(rng.choice(len(points), min(sample, len(points)), replace=False))]
        arguments = (X, y, Xv, yv, T, picked, adapter) if name == "ape" else (X, y, Xv, yv, T, picked)
        loop = best_of(repeats, official, *arguments) * len(points) / len(picked)
        plain = best_of(repeats, competent, name, X, y, Xv, yv, T, adapter, points)
        least = min(floor(name, X, y, Xv, yv, T, adapter, points) for _ in range(repeats + 1))
        ratio = "–" if np.isnan(least) else f"{tuned / least:.1f}×"
        least_text = "–" if np.isnan(least) else f"{least:.2f}"
        print(f"| {name} | {len(points)} | {tuned:.2f} | {loop:.1f} | {loop / tuned:.1f}× | {plain:.2f} | "
              f"{plain / tuned:.1f}× | {least_text} | {ratio} |", flush=True)


def loop_gda_tip(X, y, Xv, yv, T, tip_grid, alphas):
    """GDA and Tip-Adapter searched by a plain float32 torch loop with the same hoisting as the
    competent loop above: GDA fitted once, the affinity and zero-shot logits once, one exp and
    class product per β, one combine and argmax per point."""
    gda = GDA(device="cpu").fit(X, y, text_weights=T)
    zero_shot, gda_logits = 100.0 * Xv @ T.T, Xv @ gda.weight_ + gda.bias_
    best = max(accuracy(zero_shot + alpha * gda_logits, yv) for alpha in alphas)
    affinity, values = Xv @ F.normalize(X, dim=-1).T, F.one_hot(y).float()
    for beta in sorted({p["beta"] for p in tip_grid}):
        cache = torch.mul(affinity, beta).sub_(beta).exp_() @ values
        best = max([best] + [accuracy(zero_shot + p["alpha"] * cache, yv) for p in tip_grid if p["beta"] == beta])
    return best


def five_datasets(repeats):
    sizes = {"caltech101": (100, 1649), "oxford_pets": (37, 736), "dtd": (47, 1128), "eurosat": (10, 5400),
             "oxford_flowers": (102, 1633)}
    grid = {"beta": list(np.linspace(0.5, 7.0, 10)), "alpha": list(np.linspace(0.1, 3.0, 10))}
    alphas = list(GDA.param_grid["alpha"])
    reference = ours = 0.0
    print("\nGDA + Tip-Adapter over five CoOp-sized datasets (16 shots, D = 512; 10 × 10 Tip grid, 7 GDA alphas)")
    print("| dataset | classes | N_val | float32 loop, hoisted (s) | adaptkit (s) | speed-up |")
    print("|---|---|---|---|---|---|")
    for i, (name, (n_classes, n_val)) in enumerate(sizes.items()):
        X, y, Xv, yv, T = clip_like(n_classes, 512, 16, n_val, seed=i)
        loop = best_of(repeats, loop_gda_tip, X, y, Xv, yv, T, grid_points(grid), alphas)

        def adaptkit_gda_tip(X=X, y=y, Xv=Xv, yv=yv, T=T):
            ak.tune(GDA(device="cpu").fit(X, y, text_weights=T), Xv, yv, {"alpha": alphas})
            ak.tune(TipAdapter(device="cpu").fit(X, y, text_weights=T), Xv, yv, grid)

        fast = best_of(repeats, adaptkit_gda_tip)
        reference, ours = reference + loop, ours + fast
        print(f"| {name} | {n_classes} | {n_val} | {loop:.3f} | {fast:.3f} | {loop / fast:.1f}× |", flush=True)
    print(f"| all five | | | {reference:.3f} | {ours:.3f} | {reference / ours:.1f}× |")


def validation_scaling(repeats):
    """Tip-Adapter's search at N_val = 10,000 against 1,649 (6× the queries): the cache engine's
    chunks are sized to stay in the CPU's cache, so the cost should grow about as the work."""
    costs = {}
    for n_val in (1649, 10000):
        X, y, Xv, yv, T = clip_like(100, 512, 16, n_val)
        costs[n_val] = best_of(repeats, ak.tune, TipAdapter(device="cpu").fit(X, y, text_weights=T), Xv, yv)
    print(f"\nTip-Adapter search, C = 100, 1,600 keys: N_val = 1,649 {costs[1649]:.2f} s, N_val = 10,000 "
          f"{costs[10000]:.2f} s: {costs[10000] / costs[1649]:.1f}× the cost for 6.1× the queries")


def leaderboard_time(repeats):
    """``ak.leaderboard`` over the whole family at the Caltech size, against its most expensive
    member's fit + tune as the board itself reports them."""
    X, y, Xv, yv, T = clip_like(100, 512, 16, 1649)
    def run():
        return ak.leaderboard(X, y, Xv, yv, text_weights=T, progress=False)

    seconds = best_of(repeats, run)
    board = run()
    costs = {row["adapter"]: row["fit_seconds"] + row["tune_seconds"] for row in board.rows}
    slowest = max(costs, key=costs.get)
    print(f"\nak.leaderboard, whole family, Caltech size: {seconds:.1f} s; its most expensive member, {slowest}: "
          f"{costs[slowest]:.1f} s ({seconds / costs[slowest]:.1f}× of it)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the large sizes (tens of minutes)")
    parser.add_argument("--sample", type=int, default=40, help="official-search points timed per adapter")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per column, after one warm-up call")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: ratios that load does not skew)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); every column: one warm-up call, then the "
          f"best of {args.repeats}")
    one_size(100, 512, 1649, args.sample, args.repeats)
    if args.full:
        one_size(100, 1024, 10000, args.sample, args.repeats)
        one_size(1000, 512, 1600, args.sample, args.repeats)
        one_size(1000, 1024, 10000, args.sample, args.repeats)
    five_datasets(args.repeats)
    validation_scaling(args.repeats)
    leaderboard_time(args.repeats)


if __name__ == "__main__":
    main()
