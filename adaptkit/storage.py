"""Files that survive crashes and are checked when read back.

- :func:`atomic_write`: write a temporary file next to the target, fsync it, rename it onto the
  target. A crash leaves the old file or the new one, never a mix. The file gets the mode the
  process umask gives new files (``0o666 & ~umask``), like ``open(path, "w")`` would.
- :func:`write_checked` / :func:`read_checked`: one safetensors file whose metadata holds a JSON
  header (format name, version, adaptkit version, anything else) and a SHA-256 over that header
  and every tensor. Reading verifies format, version and digest, and copies the tensors out of
  the file, so a later rewrite of the file never changes what was loaded.
- :func:`file_lock`: an advisory inter-process lock (``filelock``) that logs once while waiting.

Every error names the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._version import __version__

logger = logging.getLogger("adaptkit")

HEADER_KEY = "adaptkit"
"""The safetensors metadata entry that holds adaptkit's JSON header."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of the file at ``path``; the errors name ``what`` it is and the file:
    ``FileNotFoundError`` when absent, ``ValueError`` for a folder or text that is not UTF-8."""
    path = expand_path(path, what)
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some editors write, is dropped
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a {what}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: {what} is not UTF-8 text ({err})") from None


def expand_path(path: str | os.PathLike, name: str = "path") -> Path:
    """``path`` as a :class:`Path` with ``~`` expanded; a ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike); got {type(path).__name__}")
    return Path(os.path.expanduser(os.fspath(path)))


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)``, then fsync and rename the temporary file onto ``path``.

    The temporary file lies in the target's folder (so the rename is atomic) and ends with the
    mode the umask gives new files (set after ``write``: some writers, safetensors among them,
    create 0600 files). A directory at ``path`` is refused; errors name ``path``.
    """
    path = expand_path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path to write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err}") from err
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # safetensors reports a full disk or a file-size limit as its own error, not an OSError
        if isinstance(err, SafetensorError) or (isinstance(err, OSError) and not isinstance(err, FileNotFoundError)):
            raise OSError(f"cannot write {path}: {getattr(err, 'strerror', None) or err}") from err
        raise
    _fsync_directory(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a CPU tensor, without copying when it is contiguous (none when it is empty)."""
    if tensor.numel() == 0:
        return memoryview(b"")
    return memoryview(tensor.detach().cpu().contiguous().view(torch.uint8).numpy()).cast("B")


def digest(header: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the canonical JSON of ``header`` and, by name, every tensor's name and bytes."""
    hasher = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        hasher.update(name.encode())
        hasher.update(tensor_bytes(tensors[name]))
    return hasher.hexdigest()


def json_sha256(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (keys sorted): how adaptkit names what it hashes."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 24) -> str:
    """Hex SHA-256 of a file's content, read in 16 MiB chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            hasher.update(chunk)
    return hasher.hexdigest()


def tensor_specs(tensors: dict[str, torch.Tensor]) -> dict[str, dict]:
    """{name: {"shape": [...], "dtype": "torch.float32"}} for a header."""
    return {name: {"shape": list(t.shape), "dtype": str(t.dtype)} for name, t in tensors.items()}


def write_checked(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    """Write ``tensors`` and ``header`` (JSON-able, with at least ``format`` and ``format_version``)
    as one safetensors file, atomically, adding the adaptkit version, the tensor specs and a SHA-256."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {**header, "adaptkit": __version__, "tensors": tensor_specs(tensors)}
    header["sha256"] = digest(header, tensors)
    metadata = {HEADER_KEY: json.dumps(header)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.2.3rc1"`` -> (1, 2, 3): the numeric release parts."""
    parts = []
    for part in str(version).split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


class UntrustedFileError(ValueError):
    """A stored file is missing, truncated, edited, of another format or from a newer adaptkit."""


def read_checked(path: str | os.PathLike, formats: str | tuple[str, ...], max_version: int,
                 what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a file written by :func:`write_checked`; return (header, tensors).

    ``formats`` are the accepted ``format`` values and ``max_version`` the newest format version
    this adaptkit reads. Raises :class:`UntrustedFileError` (a ``ValueError``) that names the file
    and says why, and ``FileNotFoundError`` when there is no file. Tensors are copied out of the
    file's memory map.
    """
    path = expand_path(path)
    formats = (formats,) if isinstance(formats, str) else formats

    def refuse(reason: str) -> UntrustedFileError:
        return UntrustedFileError(f"{path} is not {what} adaptkit can trust: {reason}")

    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise refuse("it is a directory")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name).clone() for name in handle.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise refuse(f"unreadable or truncated ({err})") from err
    try:
        header = json.loads(metadata[HEADER_KEY])
        if not isinstance(header, dict):
            raise TypeError("header is not an object")
        expected = header.pop("sha256")
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise refuse("it has no adaptkit header") from err
    if header.get("format") not in formats:
        raise refuse(f"format {header.get('format')!r}, expected {' or '.join(map(repr, formats))}")
    version = header.get("format_version")
    if not isinstance(version, int) or version > max_version or \
            version_tuple(str(header.get("adaptkit", "0"))) > version_tuple(__version__):
        raise refuse(f"written by adaptkit {header.get('adaptkit')} (format {version}); this is adaptkit "
                     f"{__version__}: upgrade adaptkit to read it")
    if digest(header, tensors) != expected:
        raise refuse("its content does not match its SHA-256 (edited or damaged)")
    specs = header.get("tensors")
    if not isinstance(specs, dict) or set(specs) != set(tensors) or any(
            specs[n] != {"shape": list(t.shape), "dtype": str(t.dtype)} for n, t in tensors.items()):
        raise refuse("its tensors do not match the shapes and dtypes its header records")
    return header, tensors


def peek_format(path: str | os.PathLike) -> str | None:
    """The ``format`` an adaptkit file declares, without verifying it; ``None`` when it has none."""
    try:
        with safe_open(str(expand_path(path)), framework="pt") as handle:
            return json.loads((handle.metadata() or {})[HEADER_KEY]).get("format")
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, AttributeError):
        return None


@contextmanager
def file_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created if needed); log once when another process holds
    it and this one waits."""
    path = expand_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.warning("waiting for another process that holds %s (%s)", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
