"""How ``ak.tune`` and ``ak.leaderboard`` scale with classes, validation size and feature width.

Synthetic CLIP-like features (``benchmarks/tune.py``'s ``clip_like``), 16 shots per class. Each
adapter's ``ak.tune`` over its default grid, then ``ak.leaderboard`` over the same adapters, each
in a process of its own so that its peak memory (resident set) is its own; printed with the path
that ran: exact, approximate (and its setting), or skipped (and why).

    python benchmarks/scale.py                                    # Caltech size: C = 100, N_val = 1,649, D = 512
    python benchmarks/scale.py --classes 1000 --n-val 10000       # ImageNet size (tens of minutes)
    python benchmarks/scale.py --classes 1000 --proker-rank 2048  # ProKeR by Nyström above 8,192 rows
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from tune import clip_like

import adaptkit as ak
from adaptkit.adapters import ADAPTERS

FAMILY = ["zero_shot", "gda", "linear_probe", "tip_adapter", "tip_x", "ape", "proker"]


def configured(name: str, proker_rank: int | None):
    return ak.ProKeR(rank=proker_rank, device="cpu") if name == "proker" else ADAPTERS[name](device="cpu")


def measure(args) -> dict:
    """One measurement in this process: an adapter's tune, or the leaderboard (``--one board``)."""
    torch.set_num_threads(args.threads)
    X, y, Xv, yv, T = clip_like(args.classes, args.dim, 16, args.n_val)
    names = args.adapters.split(",")
    start = time.perf_counter()
    if args.one == "board":
        board = ak.leaderboard(X, y, Xv, yv, text_weights=T, progress=False,
                               adapters=[configured(n, args.proker_rank) for n in names])
        path = "; ".join([f"{r['adapter']}: {r['approximation'] or 'exact'}" for r in board.rows] +
                         [f"{n}: skipped" for n in board.skipped])
        accuracy = board.rows[0]["val_accuracy"]
        params = {r["adapter"]: r["params"] for r in board.rows}
    else:
        adapter = configured(args.one, args.proker_rank)
        why = adapter._skip_reason(X.shape[0])
        if why is not None:
            return {"seconds": 0.0, "peak_gib": 0.0, "path": f"skipped: {why}", "val_accuracy": None, "params": {}}
        tuned = ak.tune(adapter.fit(X, y, text_weights=T), Xv, yv)
        path, accuracy = tuned._approximation() or "exact", tuned.tuning_results_["best_score"]
        params = {args.one: tuned.tuning_results_["best_params"]}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {"seconds": seconds, "peak_gib": peak, "path": path, "val_accuracy": accuracy, "params": params}


def in_child(args, one: str) -> dict:
    command = [sys.executable, __file__, "--one", one, "--classes", str(args.classes), "--n-val", str(args.n_val),
               "--dim", str(args.dim), "--threads", str(args.threads), "--adapters", args.adapters]
    if args.proker_rank is not None:
        command += ["--proker-rank", str(args.proker_rank)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--n-val", type=int, default=1649)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per process")
    parser.add_argument("--adapters", default=",".join(FAMILY), help="comma-separated adapter names")
    parser.add_argument("--proker-rank", type=int, default=None, help="ProKeR's Nyström rank (default: exact)")
    parser.add_argument("--no-board", action="store_true", help="time the adapters alone, not ak.leaderboard")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args)))
        return
    print(f"C = {args.classes}, {16 * args.classes:,} keys, N_val = {args.n_val:,}, D = {args.dim}; torch "
          f"{torch.__version__}, {args.threads} thread(s); each row its own process\n")
    print("| run | seconds | peak memory (GiB) | val accuracy | path |\n|---|---|---|---|---|")
    costs, chosen = {}, {}
    for name in args.adapters.split(",") + ([] if args.no_board else ["board"]):
        result = in_child(args, name)
        costs[name] = result["seconds"]
        chosen[name] = result["params"]
        accuracy = "–" if result["val_accuracy"] is None else f"{100 * result['val_accuracy']:.2f}"
        print(f"| {'ak.leaderboard' if name == 'board' else name} | {result['seconds']:.1f} | "
              f"{result['peak_gib']:.2f} | {accuracy} | {result['path']} |", flush=True)
    if args.no_board:
        return
    differ = [n for n, params in chosen["board"].items() if chosen.get(n, {}).get(n) != params]
    print(f"\nleaderboard rows whose chosen parameters differ from tuning the adapter alone: {differ or 'none'}")
    slowest = max((n for n in costs if n != "board"), key=costs.get)
    print(f"\nak.leaderboard: {costs['board']:.1f} s, {costs['board'] / costs[slowest]:.1f}× its most expensive "
          f"member ({slowest}, {costs[slowest]:.1f} s), {costs['board'] / sum(costs[n] for n in costs if n != 'board'):.2f}× "
          "the sum of its members")


if __name__ == "__main__":
    main()
