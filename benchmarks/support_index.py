"""Top-k search over support memories: each SupportIndex kind against dense torch matmul + topk.

For every pool size it builds each index once and, for every query count, prints its build time,
queries per second, recall@10 (against the exact top-10 of the dense reference, computed in the
same run) and the speed ratio to dense.
Data: unit vectors around 1,000 random cluster centres, like CLIP features of a large pool.

    python benchmarks/support_index.py                   # 10^4 and 10^5 keys: about 70 s on 2 cores
    python benchmarks/support_index.py --sizes 10000,100000,1000000   # adds 10^6 keys (about 15 minutes)
    [--queries 1000,10000] [--kinds flat,ivf_flat,ivf_pq,hnsw] [--dim 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from adaptkit.support import SupportIndex

K = 10
OPTIONS = {
    "flat": {},
    "ivf_flat": {"nprobe": 16},
    "ivf_pq": {"nprobe": 16, "pq_m": 64, "refine": 4},
    "hnsw": {"hnsw_m": 32, "ef_search": 128},
}


def clustered(n: int, dim: int, centres: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    out = []
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        which = torch.randint(0, centres.shape[0], (m,), generator=generator)
        out.append(F.normalize(centres[which] + 0.4 * torch.randn(m, dim, generator=generator) / dim ** 0.5,
                               dim=-1))
    return torch.cat(out)


def dense_topk(keys: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    return torch.cat([torch.topk(queries[i:i + chunk] @ keys.T, k, dim=1).indices
                      for i in range(0, queries.shape[0], chunk)])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help=
                        "pool sizes; add 1000000 for the large case (about 15 minutes on 2 cores)")
    parser.add_argument("--queries", default="1000,10000")
    parser.add_argument("--kinds", default="flat,ivf_flat,ivf_pq,hnsw")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(1000, args.dim, generator=g), dim=-1)
    print(f"device={args.device} threads={torch.get_num_threads()} dim={args.dim} k={K}")
    print("| keys | queries | method | build s | QPS | recall@10 | QPS vs dense |")
    print("|---|---|---|---|---|---|---|")
    for n_keys in (int(s) for s in args.sizes.split(",")):
        keys = clustered(n_keys, args.dim, centres, g).to(args.device)
        query_sets = {int(q): clustered(int(q), args.dim, centres, g).to(args.device) for q in args.queries.split(",")}
        truths = {}
        for n_queries, queries in query_sets.items():
            start = time.perf_counter()
            truth = dense_topk(keys, queries, K)
            sync(args.device)
            truths[n_queries] = ([set(row) for row in truth.cpu().tolist()], time.perf_counter() - start)
            print(f"| {n_keys:,} | {n_queries:,} | dense matmul+topk | - | {n_queries / truths[n_queries][1]:,.0f} | "
                  "1.000 | 1.00 |", flush=True)
        for kind in args.kinds.split(","):
            start = time.perf_counter()
            index = SupportIndex(args.dim, kind, device=args.device, **OPTIONS[kind]).add(keys)
            build_s = time.perf_counter() - start
            for n_queries, queries in query_sets.items():
                truth_sets, dense_s = truths[n_queries]
                start = time.perf_counter()
                _, positions = index.search(queries, K)
                sync(args.device)
                search_s = time.perf_counter() - start
                recall = sum(len(set(row) & t) for row, t in zip(positions.cpu().tolist(), truth_sets)) / (K * n_queries)
                print(f"| {n_keys:,} | {n_queries:,} | {kind} | {build_s:.1f} | {n_queries / search_s:,.0f} | "
                      f"{recall:.3f} | {dense_s / search_s:.2f} |", flush=True)
            del index

if __name__ == "__main__":
    main()
