"""The soft-label store: a folder of fixed-size ``.npy`` shards plus ``manifest.json``.

Layout::

    STORE/
      manifest.json                 identity, dtypes, shard list with completion state
      shard-00000-logp.npy          [n, C] dense log-probs, or [n, K] top-k log-probs
      shard-00000-index.npy         [n, K] class indices (top-k only; uint8/16/32)
      shard-00000-tail.npy          [n] probability mass outside the top K (top-k only)
      shard-00000-label.npy         [n] int64 hard labels of the data (-1 = none), if any
      shard-00000-feat0.npy         [n, ...] feature target 0 (``--features``), ...

Every shard holds ``shard_size`` consecutive samples in data order (the last one
may hold fewer); each file is a plain ``.npy`` array, readable and memory-mappable
with numpy alone. A shard file is written to a temporary name and moved into place
with ``os.replace``; the manifest is rewritten the same way after each shard, so
a crash leaves complete shards and a manifest that lists them, never a torn file.

The manifest's *identity* (teacher sha256, tapped tensor, K, dtypes, features,
shard size, data fingerprint and count) decides whether an existing store may be
resumed; anything different is refused and the store is left untouched.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxcomp.errors import InvalidInputError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "index_dtype",
    "read_manifest",
    "shard_file",
    "write_array",
    "write_manifest",
]

FORMAT = "onnxcomp-distill-store"
VERSION = 1
MANIFEST = "manifest.json"

#: Manifest keys that must match for a store to be resumed.
IDENTITY_KEYS = (
    "format",
    "version",
    "teacher_sha256",
    "output",
    "tapped",
    "tap",
    "classes",
    "top_k",
    "dtypes",
    "features",
    "labels",
    "shard_size",
    "samples",
    "data_fingerprint",
)


def index_dtype(classes: int) -> np.dtype[Any]:
    """The smallest unsigned integer dtype that holds class indices ``0..classes-1``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if classes - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def shard_file(shard: int, key: str) -> str:
    """File name of one array of one shard."""
    return f"shard-{shard:05d}-{key}.npy"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_array(path: Path, array: np.ndarray) -> str:
    """Write one ``.npy`` atomically; returns its sha256."""
    buf = _io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    data = buf.getvalue()
    _atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def write_manifest(store: Path, manifest: dict[str, Any]) -> None:
    """Rewrite ``manifest.json`` atomically (temp file + ``os.replace``)."""
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    _atomic_write_bytes(store / MANIFEST, text.encode())


def read_manifest(store: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a store's manifest.

    Raises:
        InvalidInputError: Missing folder or manifest, or not a store of this format.
    """
    path = Path(store)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise InvalidInputError(f"{path}: not a soft-label store (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{mpath}: unreadable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInputError(f"{mpath}: not an {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise InvalidInputError(
            f"{mpath}: store format version {manifest.get('version')} is not supported "
            f"(this onnxcomp reads version {VERSION})"
        )
    return manifest


def identity_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why an existing store cannot be resumed with ``new`` (None when it can)."""
    for key in IDENTITY_KEYS:
        a, b = old.get(key), new.get(key)
        if a != b:
            if key == "teacher_sha256":
                return (
                    f"it was made from another teacher (sha256 {str(a)[:12]}... vs "
                    f"{str(b)[:12]}...)"
                )
            if key == "data_fingerprint":
                return f"it was made from other data ({a!r} vs now {b!r})"
            return f"its {key} is {a!r}, this run would write {b!r}"
    return None


@dataclass(frozen=True)
class ShardResult:
    """What a finished shard wrote: its index and each file's name and sha256."""

    index: int
    start: int
    count: int
    files: dict[str, str]
    sha256: dict[str, str]

    def to_entry(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start,
            "count": self.count,
            "complete": True,
            "files": self.files,
            "sha256": self.sha256,
        }


def shard_complete(store: Path, entry: dict[str, Any]) -> bool:
    """A manifest entry marked complete whose files are all present."""
    if not entry.get("complete"):
        return False
    return all((store / name).is_file() for name in entry.get("files", {}).values())
