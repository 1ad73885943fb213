"""The FAISS index of chunk vectors: a derived cache of `chunks.vector`, saved atomically with a manifest.

Layout under the index directory:
  manifest.json          the commit point: generation, file name, counts, model, what it was built from
  chunks.<gen>.faiss     the index the manifest names (older generations are removed after a save)
  .lock                  held by writers (load, delete, rebuild, repair) so two never interleave

Index types (`kind`), chosen by size unless asked for (`choose_kind`, `build`):
  flat      exact inner product (IndexIDMap2 over IndexFlatIP): while the archive is small
  ivf       IndexIVFFlat with the chunk ids as its own ids: past FLAT_MAX vectors; recall@10 >= 0.95 against
            exact at the nprobe chosen by `benchmarks/ann.py`; removal is native (no rebuild)
  ivf-sq8   the same lists holding 8-bit scalar-quantised vectors: 1/4 of flat's vector memory
A filtered (pre-filtered) search on an IVF index probes every list, so it stays exact over the allowed ids.

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
KINDS = ("auto", "flat", "ivf", "ivf-sq8")
FLAT_MAX = 50_000  # past this `auto` builds IVF: at 100k flat took 92 ms a query, IVF 1.8 ms (benchmarks/ann.py)
NPROBE = 32  # lists probed: recall@10 0.975 at 1M (0.978 at 100k) in benchmarks/ann.py; 16 gave 0.95


class IndexMissing(ArchiveError):
    pass


class IndexCorrupt(ArchiveError):
    pass


class ChunkIndex:
    """Inner product over unit vectors (cosine), keyed by chunk id."""

    def __init__(self, dim: int, index: faiss.Index | None = None):
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index)) if _is_ivf(self.index) else None

    @property
    def kind(self) -> str:
        if self._ivf is None:
            return "flat"
        return "ivf-sq8" if isinstance(self._ivf, faiss.IndexIVFScalarQuantizer) else "ivf"

    @property
    def tolerance(self) -> float:
        """How far a stored vector may come back from the index (compressed kinds are lossy)."""
        return 0.02 if self.kind == "ivf-sq8" else 1e-5

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
        if self._ivf is None:
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return np.concatenate([self._list_ids(i) for i in range(self._ivf.nlist)] or [np.zeros(0, np.int64)])

    def _list_ids(self, list_no: int) -> np.ndarray:
        inv = self._ivf.invlists
        n = inv.list_size(list_no)
        if not n:
            return np.zeros(0, np.int64)
        return faiss.rev_swig_ptr(inv.get_ids(list_no), n).astype(np.int64)  # a copy

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        if self._ivf is None:
            return np.vstack([self.index.reconstruct(int(i)) for i in ids])
        where = {}  # id -> (list, offset), found by scanning the lists (no direct map kept: it costs memory)
        wanted = set(int(i) for i in ids)
        wanted = np.fromiter(wanted, np.int64)
        for list_no in range(self._ivf.nlist):
            list_ids = self._list_ids(list_no)
            for offset in np.flatnonzero(np.isin(list_ids, wanted)):
                where[int(list_ids[offset])] = (list_no, int(offset))
        out = np.zeros((len(ids), self.dim), np.float32)
        for row, i in enumerate(ids):
            if int(i) not in where:
                raise KeyError(f"chunk {int(i)} is not in the index")
            self._ivf.reconstruct_from_offset(*where[int(i)], faiss.swig_ptr(out[row]))
        return out

    @property
    def nprobe(self) -> int | None:
        return None if self._ivf is None else int(self._ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._ivf is not None:
            self._ivf.nprobe = max(1, min(int(value), self._ivf.nlist))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
        """Top-k (scores, chunk ids) per query; `allowed` restricts to those chunk ids (a pre-filter)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.ntotal)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        params = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            if self._ivf is None:
                params = faiss.SearchParameters(sel=sel)
            else:  # every list, so a selective filter still finds all its allowed neighbours
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self._ivf.nlist)
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def choose_kind(n: int, kind: str = "auto") -> str:
    """The index type for n vectors: `kind` itself unless it is `auto` (flat up to FLAT_MAX, then ivf)."""
    if kind not in KINDS:
        raise ArchiveError(f"index type must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "auto":
        return "flat" if n <= FLAT_MAX else "ivf"
    return kind


def ivf_lists(n: int) -> int:
    """Number of IVF lists for n vectors: ~2*sqrt(n), at least 1 and at most n/39 (FAISS wants 39+ per list)."""
    return int(max(1, min(2 * np.sqrt(n), n // 39)))


def build(dim: int, ids: np.ndarray, vectors: np.ndarray, kind: str = "auto", *, nprobe: int | None = None):
    """A ChunkIndex of the given (or size-chosen) kind holding these vectors; IVF kinds train on a sample."""
    ids = np.asarray(ids, dtype=np.int64)
    kind = choose_kind(len(ids), kind)
    if kind == "flat":
        index = ChunkIndex(dim)
        index.add(ids, vectors)
        return index
    nlist = ivf_lists(len(ids))
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        raw = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        raw = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    raw.cp.max_points_per_centroid = 64  # train on a sample: k-means over a million vectors takes minutes
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    sample = np.random.default_rng(0).permutation(len(vectors))[: nlist * 64]
    raw.train(vectors[np.sort(sample)] if len(vectors) else vectors)
    raw.quantizer_trains_alone = 0
    index = ChunkIndex(dim, raw)
    index.nprobe = nprobe or NPROBE
    index.add(ids, vectors)
    return index


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


def load(index_dir: Path, *, check_sha: bool = False, mmap: bool = False) -> tuple[ChunkIndex, Manifest]:
    """Read the index the manifest names; a missing, truncated or corrupt file raises a clear error.

    `mmap` maps the vectors read-only instead of reading them (for readers: a server's first answer at a
    million vectors no longer waits ~1.5 s for 1.5 GB). Generation files are never rewritten in place, and
    a mapped file that a writer deletes stays readable until the reader lets it go.
    """
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
        flags = 0
        if mmap:  # flat codes and IVF lists each have their own mapping flag (combined, IVF-SQ refuses)
            flags = faiss.IO_FLAG_MMAP_IFC if manifest.index_type == "flat" else faiss.IO_FLAG_MMAP
        raw = faiss.read_index(str(path), flags)
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
            raise IndexMissing(
                f"{self.index_dir / MANIFEST}: no index manifest (load articles, or run `archive index --rebuild`)"
            ) from None
        with self._lock:
            for attempt in range(5):
                if sig == self._sig and self._loaded is not None:
                    break
                try:
                    self._loaded, self._sig = load(self.index_dir, mmap=True), sig
                except (IndexMissing, IndexCorrupt, OSError):
                    # A writer may have replaced the manifest and removed the file it named while we read them
                    # (a race, not damage): read again while the manifest keeps changing under us.
                    try:
                        st = os.stat(self.index_dir / MANIFEST)
                        new = (st.st_mtime_ns, st.st_size, st.st_ino)
                    except FileNotFoundError:
                        new = None
                    if attempt == 4 or new is None or new == sig:
                        raise
                    sig = new
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
