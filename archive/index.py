"""The FAISS index of chunk vectors: a derived cache of `chunks.vector`, saved atomically with a manifest.

Layout under the index directory:
  manifest.json          the commit point: generation, file name, counts, model, what it was built from
  chunks.<gen>.faiss     the index the manifest names (older generations are removed after a save)
  .lock                  held by writers (load, delete, rebuild, repair) so two never interleave

Saving writes the new index file under a new name, fsyncs it, then replaces the manifest, so a reader sees
either the old index or the new one, never half of one. Readers (the Datasette plugin) `stat` the
manifest per query and reload when it changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .models import ArchiveError

MANIFEST = "manifest.json"


class IndexMissing(ArchiveError):
    pass


class IndexCorrupt(ArchiveError):
    pass


class ChunkIndex:
    """Inner product over unit vectors (cosine), keyed by chunk id."""

    kind = "flat"

    def __init__(self, dim: int, index: faiss.Index | None = None):
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids) -> int:
        if not len(ids):
            return 0
        return int(self.index.remove_ids(np.asarray(list(ids), dtype=np.int64)))

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return np.vstack([self.index.reconstruct(int(i)) for i in ids]) if len(ids) else np.zeros((0, self.dim))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
        """Top-k (scores, chunk ids) per query; `allowed` restricts to those chunk ids (a pre-filter)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.ntotal)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids


@dataclass
class Manifest:
    generation: int
    file: str
    count: int
    max_chunk_id: int
    dimensions: int
    model_fingerprint: str
    index_type: str
    db_generation: int
    size: int
    sha256: str

    @classmethod
    def read(cls, index_dir: Path) -> Manifest:
        path = index_dir / MANIFEST
        if not path.exists():
            raise IndexMissing(f"{path}: no index manifest (run `archive index --rebuild`)")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise IndexCorrupt(f"{path}: unreadable manifest ({e}); run `archive index --rebuild`") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save(index: ChunkIndex, index_dir: Path, *, model_fingerprint: str, db_generation: int) -> Manifest:
    """Write the index under a new generation, then commit it by replacing the manifest."""
    index_dir.mkdir(parents=True, exist_ok=True)
    try:
        generation = Manifest.read(index_dir).generation + 1
    except ArchiveError:
        generation = 1
    name = f"chunks.{generation}.faiss"
    data = faiss.serialize_index(index.index).tobytes()
    _fsync_write(index_dir / name, data)
    ids = index.ids()
    manifest = Manifest(
        generation=generation,
        file=name,
        count=index.ntotal,
        max_chunk_id=int(ids.max()) if len(ids) else 0,
        dimensions=index.dim,
        model_fingerprint=model_fingerprint,
        index_type=index.kind,
        db_generation=db_generation,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    tmp = index_dir / (MANIFEST + ".tmp")
    _fsync_write(tmp, json.dumps(manifest.__dict__, indent=2).encode())
    os.replace(tmp, index_dir / MANIFEST)
    _fsync_dir(index_dir)
    for old in index_dir.glob("chunks.*.faiss"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return manifest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(index_dir: Path, *, check_sha: bool = False) -> tuple[ChunkIndex, Manifest]:
    """Read the index the manifest names; a missing, truncated or corrupt file raises a clear error."""
    manifest = Manifest.read(index_dir)
    path = index_dir / manifest.file
    if not path.exists():
        raise IndexMissing(f"{path}: index file named by the manifest is missing; run `archive index --rebuild`")
    size = path.stat().st_size
    if size != manifest.size:
        raise IndexCorrupt(f"{path}: {size} bytes, manifest says {manifest.size}; run `archive index --rebuild`")
    if check_sha and _sha256(path) != manifest.sha256:
        raise IndexCorrupt(f"{path}: checksum differs from the manifest; run `archive index --rebuild`")
    try:
        raw = faiss.read_index(str(path))
    except RuntimeError as e:
        raise IndexCorrupt(
            f"{path}: FAISS cannot read it ({str(e).splitlines()[0]}); run `archive index --rebuild`"
        ) from None
    return ChunkIndex(manifest.dimensions, raw), manifest


class LiveIndex:
    """A reader's view of the index that reloads when the manifest changes (checked with one `stat`)."""

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self._sig = None
        self._loaded: tuple[ChunkIndex, Manifest] | None = None
        self._lock = threading.Lock()

    def current(self) -> tuple[ChunkIndex, Manifest]:
        try:
            st = os.stat(self.index_dir / MANIFEST)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            raise IndexMissing(f"{self.index_dir / MANIFEST}: no index yet; load articles first") from None
        with self._lock:
            if sig != self._sig or self._loaded is None:
                self._loaded = load(self.index_dir)
                self._sig = sig
            return self._loaded


@contextmanager
def writer_lock(index_dir: Path):
    """Exclusive lock for anything that writes the database and the index together."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(
                f"{index_dir}: another `archive` command is writing this archive; try again when it ends"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
