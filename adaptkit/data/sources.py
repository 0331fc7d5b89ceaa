"""Where the images of an :class:`~adaptkit.data.ImageSet` come from.

Every source gives random access by position (``load(i)``, ``raw(i)``), a printable name per image
for errors, a per-image identity (what changes when the image changes, used to key cached
features), and ``take(indices)`` for subsets. Sources are picklable, so DataLoader workers and Ray
tasks read them directly; open files are reopened lazily in each process.

- :class:`PathSource`: image files; identity = absolute path, size, modification time.
- :class:`ArraySource`: an in-memory uint8 (N, H, W, 3) array; identity = the pixel bytes.
- :class:`WebDatasetSource`: webdataset tar shards (LAION-style pools, img2dataset output),
  indexed once by member offsets and read in place, never unpacked.
- :class:`ParquetSource`: parquet files with an image-bytes column (the Hugging Face datasets
  layout: a struct with ``bytes``, or plain binary), read one row group at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import ImageDecodeError, decode_image, display_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")


def file_identity(path: str) -> bytes:
    """Absolute path, size and modification time of a file, as bytes (any file name encoding)."""
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        if os.path.islink(path):  # a broken symlink: reading it fails later, where on_error applies
            return os.fsencode(os.path.abspath(path)) + b"|broken-link"
        raise FileNotFoundError(f"image file not found: {display_path(path)}") from err
    except OSError as err:  # a symlink loop, a permission: reading it fails later, where on_error applies
        return os.fsencode(os.path.abspath(path)) + f"|unreadable|{err.errno}".encode()
    return os.fsencode(os.path.abspath(path)) + f"|{info.st_size}|{info.st_mtime_ns}".encode()


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """The visible image files under ``folder`` (no part of the path starting with "."), sorted.
    Broken symbolic links with an image extension are listed too: reading them fails by name,
    where ``on_error`` applies, instead of their being left out without a word."""
    folder = Path(folder)
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                  and (p.is_file() or (p.is_symlink() and not p.exists()))
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class SourceChanged(ValueError):
    """A file of an indexed source (a tar shard, a parquet file) changed since it was indexed."""


def check_unchanged(paths: Sequence[str], identities: Sequence[bytes], what: str) -> None:
    """Raise :class:`SourceChanged` naming the first of ``paths`` whose size or modification time
    differs from its recorded identity (``file_identity`` at indexing time)."""
    for path, identity in zip(paths, identities):
        if not os.path.isfile(path):
            raise SourceChanged(f"{what} {display_path(path)} is gone since the pool was indexed")
        if file_identity(path) != identity:
            raise SourceChanged(f"{what} {display_path(path)} changed since the pool was indexed (its size or "
                                "modification time differs): the member offsets no longer hold; open the pool "
                                "again to index it anew")


class ImageSource:
    """Base class: random access to N encoded or decoded images."""

    kind = "abstract"

    def check_unchanged(self) -> None:
        """Raise :class:`SourceChanged` when a file the source indexed changed since (no-op for
        sources that read each image whole)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        """Image ``index`` as an RGB PIL image (:func:`decode_image` rules and errors)."""
        raw = self.raw(index)
        return decode_image(raw, self.describe(index))

    def raw(self, index: int) -> bytes:
        """The encoded bytes of image ``index``."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """What errors and ``metadata["skipped"]`` call image ``index``."""
        raise NotImplementedError

    def identity(self, index: int) -> bytes:
        """Bytes that change whenever image ``index`` changes."""
        raise NotImplementedError

    def take(self, indices: np.ndarray) -> ImageSource:
        """The images at ``indices``, in that order."""
        raise NotImplementedError

    def __getstate__(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_open")}

    def __setstate__(self, state):
        self.__dict__.update(state)


class PathSource(ImageSource):
    """Image files given by path."""

    kind = "paths"

    def __init__(self, paths: Sequence[str | os.PathLike | bytes]):
        # os.fsdecode: a bytes path (os.listdir(b".") gives them for non-UTF-8 names) names a file;
        # it is never the image's content
        self.paths = [os.fsdecode(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def _regular(self, index: int) -> str:
        """The path, after checking it is a regular file: opening a FIFO or a device would block."""
        path = self.paths[index]
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            if os.path.islink(path):
                raise ImageDecodeError(display_path(path), "a broken symbolic link (its target does not exist)") from None
            raise FileNotFoundError(f"image file not found: {display_path(path)}") from None
        except OSError as err:
            raise ImageDecodeError(display_path(path), f"cannot be read ({err})") from None
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(display_path(path), "not a regular file (a FIFO, a device or a folder)")
        return path

    def load(self, index: int) -> Image.Image:
        return decode_image(self._regular(index))

    def raw(self, index: int) -> bytes:
        return Path(self._regular(index)).read_bytes()

    def describe(self, index: int) -> str:
        return display_path(self.paths[index])

    def identity(self, index: int) -> bytes:
        return file_identity(self.paths[index])

    def take(self, indices) -> PathSource:
        return PathSource([self.paths[i] for i in indices])


class ArraySource(ImageSource):
    """Images held in memory as a uint8 (N, H, W, 3) array."""

    kind = "array"

    def __init__(self, array: np.ndarray):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            shape = getattr(array, "shape", None)
            raise ValueError(f"images as an array must be uint8 of shape (N, H, W, 3); got "
                             f"{getattr(array, 'dtype', type(array).__name__)} {shape}")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.array[index])

    def raw(self, index: int) -> bytes:
        raise ValueError("in-memory images have no encoded bytes")

    def describe(self, index: int) -> str:
        return f"array[{index}]"

    def identity(self, index: int) -> bytes:
        return hashlib.sha256(np.ascontiguousarray(self.array[index]).tobytes()).digest()

    def take(self, indices) -> ArraySource:
        return ArraySource(self.array[np.asarray(indices, dtype=np.int64)])


@dataclass(frozen=True)
class TarMember:
    """One image inside a tar shard: which shard, where its bytes start, how many."""

    shard: int
    name: str
    offset: int
    size: int


def _split_key(name: str) -> tuple[str, str]:
    """webdataset's convention: the sample key is the path up to the first dot of the file name,
    the extension is the rest (``a/b.seg.png`` -> (``a/b``, ``seg.png``))."""
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower() if dot else ""


def _check_archive_end(shard: str, end: int, samples: int) -> None:
    """Refuse a tar shard that stops before its end-of-archive block: Python's tarfile ends the
    listing quietly at a truncated header or member, which would drop the rest of the shard."""
    with open(shard, "rb") as handle:
        handle.seek(end)
        marker = handle.read(tarfile.BLOCKSIZE)
    if len(marker) < tarfile.BLOCKSIZE or any(marker):
        size = os.path.getsize(shard)
        raise ValueError(f"{display_path(shard)} is truncated or damaged: its listing stops at byte {end} of {size} "
                         f"after {samples} sample(s), with no end-of-archive block; download or write the shard again")


class WebDatasetSource(ImageSource):
    """Images in webdataset tar shards, read in place by member offset.

    Build one with :meth:`index` (or :meth:`adaptkit.data.ImageSet.from_webdataset`), which scans
    each shard's headers once.
    """

    kind = "webdataset"

    def __init__(self, shards: Sequence[str], members: Sequence[TarMember], shard_identities: Sequence[bytes]):
        self.shards, self.members, self.shard_identities = list(shards), list(members), list(shard_identities)

    @classmethod
    def index(cls, urls: str | Sequence[str], *, image_keys: Sequence[str] = WEBDATASET_IMAGE_KEYS,
              label_key: str | None = "cls") -> tuple[WebDatasetSource, list[str | None]]:
        """Scan tar shards (local paths; brace patterns like ``pool-{000..009}.tar`` expand) and
        return the source and, per sample, the text of its ``label_key`` member (or ``None``).

        A sample is the group of members sharing a key; the first member whose extension is in
        ``image_keys`` is its image. Samples without an image are left out."""
        from braceexpand import braceexpand  # an optional dependency (the pools extra)

        patterns = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
        shards = [path for pattern in patterns for path in braceexpand(os.fspath(pattern))]
        if not shards:
            raise ValueError("urls names no tar shards")
        members, labels, identities = [], [], []
        for number, shard in enumerate(shards):
            if not os.path.isfile(shard):
                raise FileNotFoundError(f"webdataset shard not found: {display_path(shard)}")
            identities.append(file_identity(shard))
            samples: dict[str, dict[str, tarfile.TarInfo]] = {}
            try:
                with tarfile.open(shard, "r:") as archive:
                    for info in archive:
                        if info.isfile():
                            key, extension = _split_key(info.name)
                            samples.setdefault(key, {})[extension] = info
                            if label_key and extension == label_key:
                                samples[key]["_label"] = archive.extractfile(info).read().decode().strip()
                    end = archive.offset
            except tarfile.TarError as err:
                raise ValueError(f"{display_path(shard)} is not a readable tar shard: {err}") from err
            _check_archive_end(shard, end, len(samples))
            for parts in samples.values():
                image = next((parts[k] for k in image_keys if k in parts), None)
                if image is None:
                    continue
                members.append(TarMember(number, image.name, image.offset_data, image.size))
                labels.append(parts.get("_label"))
        if not members:
            raise ValueError(f"no images with extensions {tuple(image_keys)} in {len(shards)} tar shard(s)")
        return cls(shards, members, identities), labels

    def __len__(self) -> int:
        return len(self.members)

    def check_unchanged(self) -> None:
        check_unchanged(self.shards, self.shard_identities, "webdataset shard")

    def raw(self, index: int) -> bytes:
        member = self.members[index]
        handles = self.__dict__.setdefault("_open_handles", {})
        handle = handles.get(member.shard)
        if handle is None:
            handle = handles[member.shard] = open(self.shards[member.shard], "rb")
        handle.seek(member.offset)
        return handle.read(member.size)

    def describe(self, index: int) -> str:
        member = self.members[index]
        return f"{display_path(self.shards[member.shard])}:{member.name}"

    def identity(self, index: int) -> bytes:
        member = self.members[index]
        return self.shard_identities[member.shard] + b"|" + member.name.encode("utf-8", "surrogateescape")

    def take(self, indices) -> WebDatasetSource:
        return WebDatasetSource(self.shards, [self.members[i] for i in indices], self.shard_identities)


def _huggingface_classnames(schema, label_column: str) -> list[str] | None:
    """Class names a Hugging Face datasets parquet file records for its ClassLabel column."""
    metadata = schema.metadata or {}
    try:
        info = json.loads(metadata[b"huggingface"])
        feature = info["info"]["features"][label_column]
        return list(feature["names"]) if feature.get("_type") == "ClassLabel" else None
    except (KeyError, TypeError, ValueError):
        return None


class ParquetSource(ImageSource):
    """Images stored as bytes in a parquet column, one row per image.

    Build one with :meth:`open` (or :meth:`adaptkit.data.ImageSet.from_parquet`)."""

    kind = "parquet"

    def __init__(self, files: Sequence[str], column: str, rows: np.ndarray, row_groups: list[np.ndarray],
                 file_identities: Sequence[bytes]):
        self.files, self.column, self.file_identities = list(files), column, list(file_identities)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.row_groups = row_groups

    @classmethod
    def open(cls, paths: str | os.PathLike | Sequence[str | os.PathLike], image_column: str = "image",
             label_column: str | None = "label"):
        """Index parquet files; return (source, labels or None, class names the files record or None)."""
        import pyarrow.parquet as pq  # an optional dependency (the pools extra)

        files = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
        if not files:
            raise ValueError("paths names no parquet files")
        rows, groups, identities, labels, classnames = [], [], [], [], None
        offset = 0
        for number, path in enumerate(files):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"parquet file not found: {display_path(path)}")
            identities.append(file_identity(path))
            try:
                handle = pq.ParquetFile(path)
            except Exception as err:  # pyarrow raises ArrowInvalid and OSError subclasses for one cause
                raise ValueError(f"{display_path(path)} is not a readable parquet file: {err}") from err
            schema = handle.schema_arrow
            if image_column not in schema.names:
                raise ValueError(f"{display_path(path)} has no column {image_column!r} (columns: {schema.names})")
            sizes = [handle.metadata.row_group(g).num_rows for g in range(handle.num_row_groups)]
            starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            groups.append(starts)
            rows += [(number, r) for r in range(int(starts[-1]))]
            if label_column is not None:
                if label_column not in schema.names:
                    raise ValueError(f"{display_path(path)} has no label column {label_column!r} "
                                     f"(columns: {schema.names}); pass label_column=None for an unlabeled pool")
                labels.append(handle.read(columns=[label_column]).column(0).to_numpy(zero_copy_only=False))
                classnames = classnames or _huggingface_classnames(schema, label_column)
            offset += int(starts[-1])
        source = cls(files, image_column, np.asarray(rows, dtype=np.int64).reshape(-1, 2), groups, identities)
        return source, (np.concatenate(labels) if labels else None), classnames

    def __len__(self) -> int:
        return len(self.rows)

    def check_unchanged(self) -> None:
        check_unchanged(self.files, self.file_identities, "parquet file")

    def raw(self, index: int) -> bytes:
        import pyarrow.parquet as pq  # an optional dependency (the pools extra)

        file_number, row = (int(v) for v in self.rows[index])
        starts = self.row_groups[file_number]
        group = int(np.searchsorted(starts, row, side="right") - 1)
        cached = self.__dict__.get("_open_group")
        if cached is None or cached[0] != (file_number, group):
            table = pq.ParquetFile(self.files[file_number]).read_row_group(group, columns=[self.column])
            cached = self.__dict__["_open_group"] = ((file_number, group), table.column(0).to_pylist())
        value = cached[1][row - int(starts[group])]
        if isinstance(value, dict):
            value = value.get("bytes")
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError(f"{self.describe(index)}: column {self.column!r} holds no image bytes "
                             f"(got {type(value).__name__})")
        return bytes(value)

    def describe(self, index: int) -> str:
        file_number, row = (int(v) for v in self.rows[index])
        return f"{display_path(self.files[file_number])}:row {row}"

    def identity(self, index: int) -> bytes:
        file_number, row = (int(v) for v in self.rows[index])
        return self.file_identities[file_number] + f"|{self.column}|{row}".encode()

    def take(self, indices) -> ParquetSource:
        return ParquetSource(self.files, self.column, self.rows[np.asarray(indices, dtype=np.int64)],
                             self.row_groups, self.file_identities)
