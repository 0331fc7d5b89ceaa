"""How close ``ak.tune`` runs to the arithmetic limit, against the official one-point-at-a-time loops.

Features are synthetic but shaped like CLIP's: unit vectors sharing a common direction (image-image
cosines around 0.7), class clusters, text weights near the class centres. For each adapter with a
grid, at each size:

- ``tune``: ``ak.tune`` over the adapter's default grid (whole grid);
- ``official``: the official repositories' loop structure, one grid point at a time (affinity
  product, exp, class product, accuracy per point), timed on a sample of points and scaled to the
  whole grid;
- ``floor``: the work no exact method avoids, timed alone: the query-key product and one exp per
  distinct β (plus the KL product for TIP-X); for ProKeR one factorisation per (β, λ).

The second table times GDA + Tip-Adapter tuning over five CoOp-sized datasets (10 × 10 Tip grid,
7 GDA alphas) against a straightforward numpy loop over the same grids.

    python benchmarks/tune.py            # Caltech101 16-shot size; about 3 minutes on 2 CPU cores
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


def official_tip(X, y, Xv, yv, T, points):
    keys, values = F.normalize(X, dim=-1), F.one_hot(y).float()
    for p in points:
        affinity = Xv @ keys.T
        cache = torch.exp(-(p["beta"] - p["beta"] * affinity)) @ values
        accuracy(100.0 * Xv @ T.T + p["alpha"] * cache, yv)


def official_tip_x(X, y, Xv, yv, T, points):
    keys, values = F.normalize(X, dim=-1), F.one_hot(y).float()
    kl = kl_affinity(log_signatures(Xv, T, 0.5), log_signatures(keys, T, 0.5)) @ values
    for p in points:
        cache = torch.exp(-(p["beta"] - p["beta"] * (Xv @ keys.T))) @ values
        accuracy(100.0 * Xv @ T.T + p["alpha"] * cache + p["gamma"] * kl, yv)


def official_ape(X, y, Xv, yv, T, points, adapter):
    channels, refined_keys = adapter.channels_, adapter.refined_keys_
    values = F.one_hot(adapter.key_labels_).float()
    for p in points:
        refined = F.normalize(Xv[:, channels], dim=-1)
        weighted = values * torch.exp(p["gamma"] * adapter.key_divergence_)[:, None]
        cache = torch.exp(-(p["beta"] - p["beta"] * (refined @ refined_keys.T))) @ weighted
        accuracy(100.0 * Xv @ T.T + p["alpha"] * cache, yv)


def official_proker(X, y, Xv, yv, T, points):
    targets = F.one_hot(y).float() - X @ T.T
    for p in points:
        kernel = torch.exp(-p["beta"] * (1 - X @ X.T))
        coef = torch.linalg.solve(kernel / p["lam"] + torch.eye(len(X)), targets)
        accuracy(Xv @ T.T + torch.exp(-p["beta"] * (1 - Xv @ X.T)) @ coef, yv)


def official_gda(X, y, Xv, yv, T, points):
    gda = GDA(device="cpu").fit(X, y, text_weights=T)
    for p in points:
        accuracy(100.0 * Xv @ T.T + p["alpha"] * (Xv @ gda.weight_ + gda.bias_), yv)


def official_linear_probe(X, y, Xv, yv, T, points):
    for p in points:
        LinearProbe(C=p["C"], device="cpu").fit(X, y).score(Xv, yv)


def best_of(repeats, function, *args):
    """The shortest of ``repeats`` timed calls (after one untimed warm-up call)."""
    function(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def floor(name, X, y, Xv, T, adapter):
    """The unavoidable work of the default grid, timed alone."""
    start = time.perf_counter()
    grid = type(adapter).param_grid
    if name == "proker":
        for beta in grid["beta"]:
            kernel = exp_kernel(X, X, beta)
            for lam in grid["lam"]:
                ridge_solve(kernel, adapter.targets_, lam)
    elif name == "gda":
        GDA(device="cpu").fit(X, y, text_weights=T)
    elif name == "linear_probe":
        return float("nan")
    else:
        keys = adapter.refined_keys_ if name == "ape" else adapter.keys_
        queries = F.normalize(Xv[:, adapter.channels_] if name == "ape" else Xv, dim=-1)
        affinity = queries @ keys.T
        for beta in grid["beta"]:
            torch.mul(affinity, beta).sub_(beta).exp_()
        if name == "tip_x":
            log_signatures(queries, T, 0.5) @ log_signatures(keys, T, 0.5).T
    return time.perf_counter() - start


ADAPTERS = {"tip_adapter": (TipAdapter, official_tip), "tip_x": (TipX, official_tip_x), "ape": (APE, official_ape),
            "proker": (ProKeR, official_proker), "gda": (GDA, official_gda),
            "linear_probe": (LinearProbe, official_linear_probe)}


def grid_points(grid):
    names = list(grid)
    return [dict(zip(names, v)) for v in itertools.product(*(grid[n] for n in names))]


def one_size(n_classes, dim, n_val, sample, shots=16):
    X, y, Xv, yv, T = clip_like(n_classes, dim, shots, n_val)
    print(f"\nC = {n_classes}, D = {dim}, {shots} shots ({len(X)} keys), N_val = {n_val}")
    print("| adapter | grid points | ak.tune (s) | official loop (s, scaled) | speed-up | floor (s) | tune / floor |")
    print("|---|---|---|---|---|---|---|")
    for name, (cls, official) in ADAPTERS.items():
        if name == "proker" and len(X) > 4000:
            print(f"| {name} | – | skipped: a {len(X)}² kernel system per point | | | | |")
            continue
        adapter = cls(device="cpu").fit(X, y, text_weights=T)
        points = grid_points(cls.param_grid)
        tuned = best_of(2, ak.tune, adapter, Xv, yv)
        rng = np.random.default_rng(0)
        picked = [points[i] for i in rng.choice(len(points), min(sample, len(points)), replace=False)]
        start = time.perf_counter()
        official(X, y, Xv, yv, T, picked, adapter) if name == "ape" else official(X, y, Xv, yv, T, picked)
        loop = (time.perf_counter() - start) * len(points) / len(picked)
        least = min(floor(name, X, y, Xv, T, adapter) for _ in range(3))
        ratio = "–" if np.isnan(least) else f"{tuned / least:.1f}×"
        least_text = "–" if np.isnan(least) else f"{least:.2f}"
        print(f"| {name} | {len(points)} | {tuned:.2f} | {loop:.1f} | {loop / tuned:.0f}× | {least_text} | {ratio} |",
              flush=True)


def numpy_gda_tip(X, y, Xv, yv, T, tip_grid, alphas):
    """Fit GDA and Tip-Adapter in numpy and score their grids one point at a time."""
    X, Xv, T, y, yv = X.numpy().astype(np.float64), Xv.numpy().astype(np.float64), T.numpy().astype(np.float64), \
        y.numpy(), yv.numpy()
    n_classes, dim = T.shape
    means = np.stack([X[y == c].mean(axis=0) for c in range(n_classes)])
    centred = X - means[y]
    cov = np.cov(centred, rowvar=False)
    precision = dim * np.linalg.pinv((len(X) - 1) * cov + np.trace(cov) * np.eye(dim))
    W, b = precision @ means.T, np.log(1 / n_classes) - 0.5 * np.einsum("cd,de,ce->c", means, precision, means)
    best = 0.0
    for alpha in alphas:
        best = max(best, np.mean((100 * Xv @ T.T + alpha * (Xv @ W + b)).argmax(1) == yv))
    values = np.eye(n_classes)[y]
    for p in tip_grid:
        cache = np.exp(-p["beta"] * (1 - Xv @ X.T)) @ values
        best = max(best, np.mean((100 * Xv @ T.T + p["alpha"] * cache).argmax(1) == yv))
    return best


def five_datasets():
    sizes = {"caltech101": (100, 1649), "oxford_pets": (37, 736), "dtd": (47, 1128), "eurosat": (10, 5400),
             "oxford_flowers": (102, 1633)}
    grid = {"beta": list(np.linspace(0.5, 7.0, 10)), "alpha": list(np.linspace(0.1, 3.0, 10))}
    alphas = list(GDA.param_grid["alpha"])
    reference = ours = 0.0
    print("\nGDA + Tip-Adapter over five CoOp-sized datasets (16 shots, D = 512; 10 × 10 Tip grid, 7 GDA alphas)")
    print("| dataset | classes | N_val | numpy loop (s) | adaptkit (s) | speed-up |")
    print("|---|---|---|---|---|---|")
    for i, (name, (n_classes, n_val)) in enumerate(sizes.items()):
        X, y, Xv, yv, T = clip_like(n_classes, 512, 16, n_val, seed=i)
        loop = best_of(2, numpy_gda_tip, X, y, Xv, yv, T, grid_points(grid), alphas)

        def adaptkit_gda_tip(X=X, y=y, Xv=Xv, yv=yv, T=T):
            ak.tune(GDA(device="cpu").fit(X, y, text_weights=T), Xv, yv, {"alpha": alphas})
            ak.tune(TipAdapter(device="cpu").fit(X, y, text_weights=T), Xv, yv, grid)

        fast = best_of(3, adaptkit_gda_tip)
        reference, ours = reference + loop, ours + fast
        print(f"| {name} | {n_classes} | {n_val} | {loop:.2f} | {fast:.3f} | {loop / fast:.0f}× |", flush=True)
    print(f"| all five | | | {reference:.2f} | {ours:.3f} | {reference / ours:.0f}× |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the large sizes (tens of minutes)")
    parser.add_argument("--sample", type=int, default=40, help="official-loop points timed per adapter")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    one_size(100, 512, 1649, args.sample)
    if args.full:
        one_size(100, 1024, 10000, args.sample)
        one_size(1000, 512, 1600, args.sample)
        one_size(1000, 1024, 10000, args.sample)
    five_datasets()


if __name__ == "__main__":
    main()
