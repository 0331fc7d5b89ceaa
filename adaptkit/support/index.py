"""``SupportIndex``: a faiss inner-product index over L2-normalised features with their labels.

Kinds and their trade-offs (D = dimension, N = keys):

=========== ================================================ ==========================================
kind        what it is                                       when
=========== ================================================ ==========================================
``flat``    exact inner product (``IndexFlatIP``)            default; exact; O(N·D) per query
``ivf_flat`` inverted lists over ``nlist`` k-means cells,    10^5-10^7 keys; needs training; recall set
            ``nprobe`` cells visited per query               by ``nprobe`` (more = slower, exacter)
``ivf_pq``  IVF + product quantisation (``pq_m`` sub-vectors 10^7+ keys or tight memory: ~``pq_m`` bytes
            of ``pq_bits`` bits); ``refine=r`` re-ranks the  per key; approximate similarities (recall
            r·k best PQ candidates with exact similarities   ~0.88 at k=10 on clustered data without
            (keeps the raw vectors too, CPU only)            refine, ≥0.95 with refine=4)
``hnsw``    HNSW graph (``hnsw_m`` links, ``ef_search``)     CPU, no training, high recall, more memory
=========== ================================================ ==========================================

On ``device="auto"`` the index moves to the GPU when faiss-gpu and a CUDA device are present
(HNSW stays on CPU: faiss has no GPU HNSW); exact search gives the same results on either.
Queries and features may be numpy arrays or torch tensors (CPU or CUDA); results come back as
torch tensors on the queries' device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take and return torch tensors)
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .._validation import check_features
from ..storage import atomic_write

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")


def gpu_available() -> bool:
    """True when faiss was built with GPU support and sees a CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class SupportIndex:
    """Nearest-neighbour memory of labelled features.

    Parameters
    ----------
    dim : feature dimension D.
    kind : one of :data:`KINDS` (see the module docstring).
    device : ``"auto"`` (GPU when faiss-gpu and CUDA are present), ``"cpu"`` or ``"cuda"``.
    nlist : IVF cells (default ≈ 4·√N at training time).
    nprobe : IVF cells visited per query (default 16).
    pq_m, pq_bits : product-quantiser sub-vectors (must divide D; default D/8) and bits each.
    refine : for ``ivf_pq``, re-rank ``refine × k`` candidates with exact similarities (``None``: off).
    hnsw_m, ef_search : HNSW links per node and search breadth.
    """

    def __init__(self, dim: int, kind: str = "flat", *, device: str = "auto", nlist: int | None = None,
                 nprobe: int = 16, pq_m: int | None = None, pq_bits: int = 8, refine: int | None = None,
                 hnsw_m: int = 32, ef_search: int = 128):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
        if device == "cuda" and not gpu_available():
            raise ValueError("device='cuda' needs faiss-gpu and a CUDA device; install the gpu extra or use 'cpu'")
        pq_m = pq_m or max(1, dim // 8)
        if kind == "ivf_pq" and dim % pq_m:
            raise ValueError(f"pq_m must divide dim={dim}; got {pq_m}")
        self.dim, self.kind = int(dim), kind
        self.options = {"nlist": nlist, "nprobe": nprobe, "pq_m": pq_m, "pq_bits": pq_bits, "refine": refine,
                        "hnsw_m": hnsw_m, "ef_search": ef_search}
        cpu_only = kind == "hnsw" or (kind == "ivf_pq" and refine)
        self.on_gpu = not cpu_only and (device == "cuda" or (device == "auto" and gpu_available()))
        self.labels = np.zeros(0, dtype=np.int64)
        self.ids = np.zeros(0, dtype=np.int64)
        self.paths: list[str] = []
        self.captions: list[str] = []
        self.metadata: dict = {}
        self._index = None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def __repr__(self) -> str:
        where = "GPU" if self.on_gpu else "CPU"
        return f"SupportIndex(kind={self.kind!r}, dim={self.dim}, keys={len(self)}, {where})"

    def _new_index(self, n_train: int):
        o = self.options
        if self.kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, o["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = o["ef_search"]
            index.hnsw.efConstruction = max(40, o["ef_search"])
        else:
            nlist = o["nlist"] or max(1, min(int(4 * np.sqrt(n_train)), n_train // 39 or 1))
            o["nlist"] = nlist
            quantizer = faiss.IndexFlatIP(self.dim)
            if self.kind == "ivf_flat":
                index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, o["pq_m"], o["pq_bits"],
                                         faiss.METRIC_INNER_PRODUCT)
            index.nprobe = o["nprobe"]
            if self.kind == "ivf_pq" and o["refine"]:
                index = faiss.IndexRefineFlat(index)
                index.k_factor = float(o["refine"])
        return self._to_device(index)

    def _to_device(self, index):
        if not self.on_gpu:
            return index
        self._resources = getattr(self, "_resources", None) or faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(self._resources, torch.cuda.current_device(), index)
        if hasattr(gpu_index, "nprobe"):
            gpu_index.nprobe = self.options["nprobe"]
        return gpu_index

    def _prepare(self, features, name: str) -> torch.Tensor:
        tensor = check_features(features, name, n_features=self.dim, estimator="this SupportIndex")
        tensor = F.normalize(tensor, dim=-1)
        return tensor if self.on_gpu and tensor.is_cuda else tensor.cpu().contiguous()

    def add(self, features, labels=None, *, ids=None, paths=None, captions=None) -> SupportIndex:
        """Add (N, D) features (L2-normalised here) with optional labels (N,), integer ids (default:
        running positions), file paths and captions. IVF kinds train on the first batch added."""
        X = self._prepare(features, "features")
        n = X.shape[0]
        labels = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(
            labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        ids = np.arange(len(self), len(self) + n) if ids is None else np.asarray(ids, dtype=np.int64)
        for name, values in (("labels", labels), ("ids", ids), ("paths", paths), ("captions", captions)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} must have one entry per feature ({n}); got {len(values)}")
        if (paths is None) != (not self.paths) and len(self):
            raise ValueError("paths must be given for every batch added or for none")
        if (captions is None) != (not self.captions) and len(self):
            raise ValueError("captions must be given for every batch added or for none")
        if self._index is None:
            self._index = self._new_index(n)
            if not self._index.is_trained:
                self._index.train(X)
        self._index.add(X)
        self.labels = np.concatenate([self.labels, labels])
        self.ids = np.concatenate([self.ids, ids])
        self.paths += [str(p) for p in paths or []]
        self.captions += list(captions or [])
        return self

    def search(self, queries, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most similar keys of each (N, D) query (L2-normalised here).

        Returns (similarities (N, k) float32, positions (N, k) int64) as torch tensors on the
        queries' device, best first; ``positions`` index ``labels``/``ids``/``paths``.
        """
        if self._index is None:
            raise ValueError("the index is empty: add features before searching")
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self):
            raise ValueError(f"k must be an integer in [1, {len(self)}] (the number of keys); got {k!r}")
        device = queries.device if isinstance(queries, torch.Tensor) else torch.device("cpu")
        Q = self._prepare(queries, "queries")
        similarities, positions = self._index.search(Q, int(k))
        return similarities.to(device), positions.to(device)

    def reconstruct(self, positions) -> torch.Tensor:
        """The stored (normalised) features at ``positions``: (n, D) float32 on CPU; approximate
        for ``ivf_pq``."""
        if self._index is None:
            raise ValueError("the index is empty")
        index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        if self.kind == "ivf_flat" or (self.kind == "ivf_pq" and not self.options["refine"]):
            index.make_direct_map()
        positions = np.asarray(positions, dtype=np.int64)
        return torch.as_tensor(np.stack([index.reconstruct(int(p)) for p in positions]) if positions.size else
                               np.zeros((0, self.dim), dtype=np.float32))

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` (faiss's own index format), ``path.safetensors`` (labels, ids) and
        ``path.json`` (kind, options, paths, captions, metadata). Each file is written atomically."""
        if self._index is None:
            raise ValueError("cannot save an empty index")
        path = Path(path)
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        atomic_write(path, lambda tmp: faiss.write_index(cpu_index, str(tmp)))
        tensors = {"labels": torch.from_numpy(self.labels), "ids": torch.from_numpy(self.ids)}
        atomic_write(path.with_name(path.name + ".safetensors"), lambda tmp: save_file(tensors, tmp))
        sidecar = {"dim": self.dim, "kind": self.kind, "options": self.options, "paths": self.paths,
                   "captions": self.captions, "metadata": self.metadata}
        atomic_write(path.with_name(path.name + ".json"), lambda tmp: Path(tmp).write_text(json.dumps(sidecar)))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> SupportIndex:
        """Read an index written by :meth:`save`; a missing or damaged part raises ``ValueError``."""
        path = Path(path)
        try:
            sidecar = json.loads(path.with_name(path.name + ".json").read_text())
            tensors = load_file(str(path.with_name(path.name + ".safetensors")))
            index = faiss.read_index(str(path))
        except Exception as err:  # faiss raises RuntimeError, safetensors its own error, json ValueError
            raise ValueError(f"support index {path} is missing a part or damaged ({err})") from err
        options = sidecar["options"]
        loaded = cls(sidecar["dim"], sidecar["kind"], device=device, **options)
        loaded.labels, loaded.ids = tensors["labels"].numpy(), tensors["ids"].numpy()
        loaded.paths, loaded.captions, loaded.metadata = sidecar["paths"], sidecar["captions"], sidecar["metadata"]
        if index.ntotal != len(loaded.labels) or index.d != loaded.dim:
            raise ValueError(f"support index {path}: the faiss index holds {index.ntotal} keys of dimension "
                             f"{index.d}, the sidecar {len(loaded.labels)} of dimension {loaded.dim}")
        loaded._index = loaded._to_device(index)
        return loaded
