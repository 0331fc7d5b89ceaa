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

Pools larger than memory: :meth:`SupportIndex.from_entry` builds an IVF (or IVF-PQ) index from a
stored feature-cache entry (``extract(..., load=False)``) out of core: it trains on a sample drawn
across the entry's shards, adds the shards one at a time into per-shard blocks, and merges them
into inverted lists kept in a file on disk (faiss's ``OnDiskInvertedLists``), memory-mapped at
search time; labels and ids are memory-mapped ``.npy`` files. RAM then holds the coarse quantiser
and one shard.

Each build is one versioned folder, ``FOLDER/build-<time>-<id>/`` (``lists.ivfdata``,
``labels.npy``, ``ids.npy``, and ``COMPLETE`` written last with every file's size and SHA-256):
a rebuild into the same ``FOLDER`` never touches an earlier build, so an index in use keeps
answering while another is built, and a killed build leaves only a folder without ``COMPLETE``
(removed by a later build once an hour old). Earlier complete builds stay until deleted by hand.

:meth:`save` writes one checksummed safetensors file (the faiss index serialised, labels, ids,
paths, captions, options); an on-disk index records its build folder (absolute) and its files'
sizes and SHA-256. :meth:`load` checks every file's size and the labels' and ids' SHA-256 (so a
truncated file is refused by name, never met as a SIGBUS); :meth:`verify` also hashes the lists.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path

try:  # faiss is an extra (its cpu or its gpu build, never both): everything else works without it
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take and return torch tensors)
except ImportError:
    faiss = None
import numpy as np
import torch
import torch.nn.functional as F

from ._params import POSITIVE_INT, Int, StrOptions, check_params
from ._validation import check_features
from .index_build import BUILD_FILES, check_build_files, remove_stale_builds, write_build
from .storage import expand_path, read_checked, write_checked

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")
INDEX_FORMAT = "adaptkit-support-index"
INDEX_FORMAT_VERSION = 1


def require_faiss() -> None:
    """Raise a clear ImportError when neither faiss build is installed."""
    if faiss is None:
        raise ImportError("support indexes and sparse caches need faiss: pip install 'adaptkit[cpu]' "
                          "(or 'adaptkit[gpu]' for faiss-gpu-cu12; never both)")


def gpu_available() -> bool:
    """True when faiss was built with GPU support and sees a CUDA device."""
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


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

    _parameter_constraints = {"dim": [POSITIVE_INT], "kind": [StrOptions(set(KINDS))],
                              "device": [StrOptions({"auto", "cpu", "cuda"})], "nlist": [POSITIVE_INT, None],
                              "nprobe": [POSITIVE_INT], "pq_m": [POSITIVE_INT, None],
                              "pq_bits": [Int(1, 16)], "refine": [POSITIVE_INT, None],
                              "hnsw_m": [Int(2, None, closed="left")], "ef_search": [POSITIVE_INT]}

    def __init__(self, dim: int, kind: str = "flat", *, device: str = "auto", nlist: int | None = None,
                 nprobe: int = 16, pq_m: int | None = None, pq_bits: int = 8, refine: int | None = None,
                 hnsw_m: int = 32, ef_search: int = 128):
        require_faiss()
        check_params("SupportIndex", self._parameter_constraints,
                     {"dim": dim, "kind": kind, "device": device, "nlist": nlist, "nprobe": nprobe, "pq_m": pq_m,
                      "pq_bits": pq_bits, "refine": refine, "hnsw_m": hnsw_m, "ef_search": ef_search})
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
        self.lists_folder: str | None = None
        self.lists_files: dict[str, dict] = {}
        self._index = None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def __repr__(self) -> str:
        where = "GPU" if self.on_gpu else ("CPU, lists on disk" if self.lists_folder else "CPU")
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
            self._check_training_size(n_train, nlist)
            quantizer = faiss.IndexFlatIP(self.dim)
            if self.kind == "ivf_flat":
                index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, o["pq_m"], o["pq_bits"],
                                         faiss.METRIC_INNER_PRODUCT)
                # one warning of ours (see _check_training_size) instead of faiss's per sub-quantiser
                index.pq.cp.min_points_per_centroid = 1
            index.cp.min_points_per_centroid = 1
            index.nprobe = o["nprobe"]
            if self.kind == "ivf_pq" and o["refine"]:
                index = faiss.IndexRefineFlat(index)
                index.k_factor = float(o["refine"])
        return self._to_device(index)

    def _check_training_size(self, n_train: int, nlist: int) -> None:
        """Refuse what faiss cannot train (fewer keys than centroids), naming the parameter; warn
        once below faiss's 39 keys per centroid (recall may suffer)."""
        o = self.options
        if n_train < nlist:
            raise ValueError(f"nlist={nlist} IVF cells need at least {nlist} keys to train; got {n_train}: "
                             "lower nlist, add more keys in the first batch, or use kind='flat'")
        centroids = 2 ** o["pq_bits"] if self.kind == "ivf_pq" else 0
        if n_train < centroids:
            raise ValueError(f"pq_bits={o['pq_bits']} needs at least {centroids} keys to train the product quantiser; "
                             f"got {n_train}: lower pq_bits (pq_bits=4 needs 16), or use kind='ivf_flat' or 'flat'")
        needed = 39 * max(nlist, centroids)
        if n_train < needed:
            warnings.warn(f"{self.kind} trains on {n_train} keys; faiss recommends at least {needed} (39 per "
                          f"centroid) for nlist={nlist}" + (f", pq_bits={o['pq_bits']}" if centroids else "") +
                          ": recall may suffer", UserWarning, stacklevel=4)

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
        if self.lists_folder:
            raise ValueError("an on-disk index is built once by SupportIndex.from_entry; it takes no more keys")
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
        queries' device, best first; ``positions`` index ``labels``/``ids``/``paths``. When the
        cells an IVF search visits hold fewer than ``k`` keys, a ``ValueError`` says so (faiss
        would pad with position -1 and similarity -3.4e38, which must never pass for neighbours).
        """
        if self._index is None:
            raise ValueError("the index is empty: add features before searching")
        check_params("SupportIndex.search", {"k": [Int(1, len(self))]}, {"k": k})
        device = queries.device if isinstance(queries, torch.Tensor) else torch.device("cpu")
        Q = self._prepare(queries, "queries")
        similarities, positions = self._index.search(Q, int(k))
        missing = positions < 0
        if bool(missing.any()):
            reachable = int((~missing).sum(dim=1).min())
            raise ValueError(f"only {reachable} of the k={k} nearest keys are reachable for some queries: the "
                             f"nprobe={self.options['nprobe']} cells visited (of nlist={self.options['nlist']}) hold "
                             "fewer keys; raise nprobe or lower k")
        if bool((positions >= len(self.labels)).any()):
            where = f"its lists file {Path(self.lists_folder) / 'lists.ivfdata'}" if self.lists_folder else "the index"
            raise ValueError(f"the search returned positions beyond the {len(self.labels)} keys: {where} is damaged; "
                             "SupportIndex.verify() checks it, rebuilding repairs it")
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

    # --- out of core ----------------------------------------------------------------------------

    @classmethod
    def from_entry(cls, entry, folder: str | os.PathLike, kind: str = "ivf_flat", *, train_size: int = 65536,
                   seed: int = 0, **options) -> SupportIndex:
        """Build an IVF or IVF-PQ index over a stored feature entry (``extract(..., load=False)``)
        out of core, its inverted lists in ``folder`` on disk (see the module docstring).

        ``train_size`` rows, drawn evenly across the shards with ``seed``, train the coarse
        quantiser (and the product quantiser); ``options`` are the constructor's."""
        if kind not in ("ivf_flat", "ivf_pq"):
            raise ValueError(f"kind must be 'ivf_flat' or 'ivf_pq' for an on-disk index; got {kind!r}")
        check_params("SupportIndex.from_entry", {"train_size": [POSITIVE_INT]}, {"train_size": train_size})
        shape = entry.shape
        if len(shape) != 2:
            raise ValueError(f"the entry holds features of shape {shape}; an index needs one view per image (N, D)")
        index = cls(shape[1], kind, device="cpu", **options)
        folder = expand_path(folder, "folder").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(folder)
        build = folder / f"build-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        build.mkdir()
        n_shards = len(entry.manifest["shards"])
        rng = np.random.default_rng(seed)
        per_shard = max(1, -(-min(train_size, shape[0]) // n_shards))
        sample = []
        for features, _, _ in entry.iter_shards():
            take = rng.choice(features.shape[0], min(per_shard, features.shape[0]), replace=False)
            sample.append(F.normalize(features[torch.as_tensor(np.sort(take))], dim=-1))
        trained = index._new_index(shape[0])
        trained.train(torch.cat(sample).contiguous())
        del sample
        try:
            files = write_build(build, entry, trained)
        except (OSError, RuntimeError) as err:  # faiss reports a failed write as a RuntimeError
            if isinstance(err, RuntimeError) and not any(w in str(err).lower() for w in ("write", "space", "trunc")):
                raise
            raise OSError(f"cannot write the support index build {build}: {getattr(err, 'strerror', None) or err}; "
                          "the folder is left unfinished (a later build removes it), every earlier build is "
                          "untouched") from err
        index._index = trained
        index.labels = np.load(build / "labels.npy", mmap_mode="r")
        index.ids = np.load(build / "ids.npy", mmap_mode="r")
        index.lists_folder, index.lists_files = str(build), files
        index.metadata = {"entry": entry.key, "name": entry.metadata.get("name"), "train_size": train_size,
                          "seed": seed, "classnames": entry.classnames}
        return index

    def verify(self) -> None:
        """Check an on-disk index's build folder in full: every file's size and SHA-256 (the lists
        file too, which :meth:`load` only sizes). Raises ``ValueError`` naming the file; an
        in-memory index has nothing on disk to check."""
        if self.lists_folder:
            check_build_files(Path(self.lists_folder), self.lists_files, BUILD_FILES)

    # --- files ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to one checksummed safetensors file (atomically). An on-disk index
        records its build folder (absolute) and every file's size and SHA-256; the folder must
        stay where it is."""
        if self._index is None:
            raise ValueError("cannot save an empty index")
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        tensors = {"index": torch.from_numpy(faiss.serialize_index(cpu_index))}
        if not self.lists_folder:
            tensors.update(labels=torch.from_numpy(np.asarray(self.labels)), ids=torch.from_numpy(np.asarray(self.ids)))
        header = {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "dim": self.dim, "kind": self.kind,
                  "options": self.options, "paths": self.paths, "captions": self.captions, "metadata": self.metadata,
                  "lists_folder": self.lists_folder, "lists_files": self.lists_files}
        write_checked(expand_path(path), tensors, header)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> SupportIndex:
        """Read an index written by :meth:`save`; a missing or damaged file raises ``ValueError``
        (``FileNotFoundError`` when absent) naming it."""
        require_faiss()
        path = expand_path(path)
        header, tensors = read_checked(path, INDEX_FORMAT, INDEX_FORMAT_VERSION, "a support index file")
        loaded = cls(header["dim"], header["kind"], device=device, **header["options"])
        loaded.paths, loaded.captions, loaded.metadata = header["paths"], header["captions"], header["metadata"]
        loaded.lists_folder, loaded.lists_files = header["lists_folder"], header.get("lists_files") or {}
        if loaded.lists_folder and set(loaded.lists_files) != set(BUILD_FILES):
            raise ValueError(f"support index {path} records no sizes and checksums of its lists folder "
                             f"{loaded.lists_folder} (an index built before adaptkit checked them); rebuild it with "
                             "SupportIndex.from_entry")
        try:
            if loaded.lists_folder:
                folder = Path(loaded.lists_folder)
                check_build_files(folder, loaded.lists_files, ("labels.npy", "ids.npy"))
                loaded.labels = np.load(folder / "labels.npy", mmap_mode="r")
                loaded.ids = np.load(folder / "ids.npy", mmap_mode="r")
                loaded.on_gpu = False
            else:
                loaded.labels, loaded.ids = tensors["labels"].numpy(), tensors["ids"].numpy()
            index = faiss.deserialize_index(tensors["index"].numpy())
        except (RuntimeError, OSError, KeyError) as err:
            raise ValueError(f"support index {path}: cannot rebuild the index ({err})") from err
        if index.ntotal != len(loaded.labels) or index.d != loaded.dim:
            raise ValueError(f"support index {path}: the faiss index holds {index.ntotal} keys of dimension "
                             f"{index.d}, the file records {len(loaded.labels)} of dimension {loaded.dim}")
        loaded._index = index if loaded.lists_folder else loaded._to_device(index)
        return loaded

