"""The FAISS index of chunk vectors: a derived cache of `chunks.vector`, saved atomically with a manifest.

Layout under the index directory (one per database: `default_index_dir`):
  manifest.json          the commit point: generation, file name, counts, model, the database it belongs to
  chunks.<gen>.faiss     the index the manifest names (older generations are removed after a save)
  .lock                  held by writers (load, delete, rebuild, repair) so two never interleave

Index types (`kind`), chosen by size unless asked for (`choose_kind`, `build_streaming`):
  flat      exact inner product (IndexIDMap2 over IndexFlatIP): up to FLAT_MAX vectors
  ivf       IndexIVFFlat with the chunk ids as its own ids: up to PQ_MIN; recall@10 >= 0.95 against exact at
            the nprobe chosen by `benchmarks/ann.py`; removal is native (no rebuild)
  ivf-sq8   the same lists holding 8-bit scalar-quantised vectors: 1/4 of flat's vector memory
  ivf-pq    the same lists holding product-quantised codes (1 byte per PQ_SUBDIM dimensions: 96 bytes for 384):
            past PQ_MIN, where the full vectors (1.5 KB each) no longer fit a server's memory
IVF kinds train on a sample and add the rest batch by batch, so a build holds the index plus a constant.
The lossy kinds (ivf-sq8, ivf-pq) re-score: `search(..., exact=)` over-fetches and ranks the candidates by
their exact inner products with the stored vectors. A filtered (pre-filtered) search on an IVF index probes
every list, so it finds every allowed neighbour.

Saving writes the new index file under a fresh generation number (beyond every file present), fsyncs it, then
replaces the manifest, so a reader sees either the old index or the new one, never half of one. Files are
created with O_EXCL | O_NOFOLLOW, and a reader opens only a regular `chunks.<n>.faiss` in the folder.
Readers (the Datasette plugin) `stat` the manifest per query and reload when it changed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .models import ArchiveError

MANIFEST = "manifest.json"
KINDS = ("auto", "flat", "ivf", "ivf-sq8", "ivf-pq")
FLAT_MAX = 50_000  # past this `auto` builds IVF: at 100k flat took 92 ms a query, IVF 1.8 ms (benchmarks/ann.py)
PQ_MIN = 2_000_000  # past this `auto` builds IVF-PQ: IVF-flat maps 1.5 KB a vector (3 GB at 2M), PQ 104 bytes
NPROBE = 32  # lists probed: recall@10 0.975 at 1M (0.978 at 100k) in benchmarks/ann.py; 16 gave 0.95
TRAIN_PER_LIST = 64  # training sample: this many vectors per IVF list (k-means over millions takes minutes)
PQ_SUBDIM = 4  # dimensions per PQ byte (96 bytes for 384): at 200k, recall@10 after re-scoring 0.958 vs 0.918 at 8
PQ_NPROBE = 64  # ivf-pq lists probed: recall@10 0.989 re-scored at 1M (32: 0.977), benchmarks/results/README.md
RESCORE_FACTOR = 2  # lossy kinds fetch max(2 k, k + RESCORE_EXTRA) candidates and rank them exactly
RESCORE_EXTRA = 100
MANIFEST_MAX_BYTES = 1 << 20
GENERATION_FILE = re.compile(r"chunks\.([1-9][0-9]{0,17})\.faiss")

Exact = Callable[[np.ndarray], np.ndarray]  # chunk ids -> their stored vectors (NaN rows for ids gone)
Batches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # a fresh pass over (ids, unit vectors)


class IndexMissing(ArchiveError):
    pass


class IndexCorrupt(ArchiveError):
    pass


class IndexMismatch(IndexMissing):
    """The index folder holds another database's index (so, for this database, there is none)."""


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
        if isinstance(self._ivf, faiss.IndexIVFPQ):
            return "ivf-pq"
        return "ivf-sq8" if isinstance(self._ivf, faiss.IndexIVFScalarQuantizer) else "ivf"

    @property
    def lossy(self) -> bool:
        """Whether stored codes only approximate the vectors (then searches should re-score with `exact`)."""
        return self.kind in ("ivf-sq8", "ivf-pq")

    @property
    def tolerance(self) -> float:
        """How far a stored vector may come back from the index (compressed kinds are lossy)."""
        return {"ivf-sq8": 0.02, "ivf-pq": PQ_TOLERANCE}.get(self.kind, 1e-5)

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

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, exact: Exact | None = None):
        """Top-k (scores, chunk ids) per query; `allowed` restricts to those chunk ids (a pre-filter).

        With `exact` (chunk ids -> stored vectors) a lossy index over-fetches and returns the candidates
        ranked by their exact inner products, so scores are true cosines and codes only pick candidates.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if exact is None or not self.lossy:
            return self._search(queries, k, allowed)
        _, ids = self._search(queries, rescore_depth(k), allowed)
        return rescore(queries, ids, exact, min(k, self.ntotal))

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None):
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
        return self.index.search(queries, k, params=params)


PQ_TOLERANCE = 0.25  # max |component error| of a PQ-decoded unit vector (measured 0.1-0.15 on real vectors)


def rescore_depth(k: int) -> int:
    """Candidates a lossy index fetches to return k after exact re-scoring."""
    return max(RESCORE_FACTOR * k, k + RESCORE_EXTRA)


def rescore(queries: np.ndarray, ids: np.ndarray, exact: Exact, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k of each query's candidate ids by exact inner product; ids the store lacks (NaN) are dropped."""
    scores_out = np.full((len(queries), max(k, 0)), -np.inf, np.float32)
    ids_out = np.full((len(queries), max(k, 0)), -1, np.int64)
    unique = np.unique(ids[ids >= 0])
    if not len(unique) or k <= 0:
        return scores_out, ids_out
    vectors = np.asarray(exact(unique), dtype=np.float32)
    for row, q in enumerate(queries):
        cand = ids[row][ids[row] >= 0]
        scores = vectors[np.searchsorted(unique, cand)] @ q
        keep = np.isfinite(scores)
        cand, scores = cand[keep], scores[keep]
        top = np.argsort(-scores, kind="stable")[:k]
        scores_out[row, : len(top)], ids_out[row, : len(top)] = scores[top], cand[top]
    return scores_out, ids_out


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def choose_kind(n: int, kind: str = "auto") -> str:
    """The index type for n vectors: `kind` unless `auto` (flat to FLAT_MAX, ivf to PQ_MIN, then ivf-pq)."""
    if kind not in KINDS:
        raise ArchiveError(f"index type must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "auto":
        return "flat" if n <= FLAT_MAX else "ivf" if n <= PQ_MIN else "ivf-pq"
    return kind


def ivf_lists(n: int) -> int:
    """Number of IVF lists for n vectors: ~2*sqrt(n), at least 1 and at most n/39 (FAISS wants 39+ per list)."""
    return int(max(1, min(2 * np.sqrt(n), n // 39)))


def pq_subquantizers(dim: int) -> int:
    """PQ bytes per vector: one per PQ_SUBDIM dimensions (the smallest sub-vector width >= it dividing dim)."""
    width = next(w for w in range(min(PQ_SUBDIM, dim), dim + 1) if dim % w == 0)
    return dim // width


def build(dim: int, ids: np.ndarray, vectors: np.ndarray, kind: str = "auto", *, nprobe: int | None = None):
    """A ChunkIndex of the given (or size-chosen) kind holding these vectors (see `build_streaming`)."""
    ids = np.asarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), dim)
    return build_streaming(dim, lambda: [(ids, vectors)], len(ids), kind, nprobe=nprobe)


def build_streaming(dim: int, batches: Batches, count: int, kind: str = "auto", *, nprobe: int | None = None):
    """A ChunkIndex of `kind` (auto: chosen by `count`) from `batches()`, a pass over (int64 ids, float32 unit
    vectors) that may be called twice: IVF kinds first train on a uniform sample (one pass), then every batch
    is added (a second pass), so memory holds the index, one batch and the sample, never all the vectors.

    An IVF kind with too few vectors to train (none; ivf-pq: fewer than 256) is built flat.
    """
    kind = choose_kind(count, kind)
    index = ChunkIndex(dim)
    if kind != "flat":
        nlist = ivf_lists(count)
        sample = _sample(batches(), count, nlist * TRAIN_PER_LIST, dim)
        if len(sample) >= (256 if kind == "ivf-pq" else 1):
            index = _trained(dim, kind, sample, min(nlist, len(sample)), nprobe)
        del sample
    for ids, vectors in batches():
        index.add(ids, vectors)
    return index


def _sample(batches: Iterable[tuple[np.ndarray, np.ndarray]], count: int, size: int, dim: int) -> np.ndarray:
    """A uniform sample (without replacement, in stream order) of `size` of the `count` streamed vectors."""
    size = min(size, count)
    wanted = np.sort(np.random.default_rng(0).choice(count, size, replace=False)) if size else np.zeros(0, int)
    out = np.empty((size, dim), np.float32)
    filled = offset = 0
    for _, vectors in batches:
        lo, hi = np.searchsorted(wanted, [offset, offset + len(vectors)])
        out[filled : filled + hi - lo] = vectors[wanted[lo:hi] - offset]
        filled, offset = filled + hi - lo, offset + len(vectors)
        if filled == size:
            break
    return out[:filled]


def _trained(dim: int, kind: str, sample: np.ndarray, nlist: int, nprobe: int | None) -> ChunkIndex:
    quantizer = faiss.IndexFlatIP(dim)
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "ivf":
        raw = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    elif kind == "ivf-sq8":
        raw = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    else:
        raw = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_subquantizers(dim), 8, ip)
    raw.cp.max_points_per_centroid = TRAIN_PER_LIST
    if kind == "ivf-pq":  # 96 k-means of 256 codes: 64 points each and FAISS's IVF 10 rounds (25 took minutes)
        raw.pq.cp.max_points_per_centroid, raw.pq.cp.niter = TRAIN_PER_LIST, 10
    raw.train(sample)
    raw.quantizer_trains_alone = 0
    index = ChunkIndex(dim, raw)
    index.nprobe = nprobe or (PQ_NPROBE if kind == "ivf-pq" else NPROBE)
    return index


# ---- the manifest ----------------------------------------------------------------------------------------

_FIELDS = {
    "generation": int,
    "file": str,
    "count": int,
    "max_chunk_id": int,
    "dimensions": int,
    "model_fingerprint": str,
    "index_type": str,
    "db_generation": int,
    "size": int,
    "sha256": str,
}


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
    archive_id: str = ""  # the database this index belongs to ("": written before archives had an id)

    @classmethod
    def read(cls, index_dir: Path) -> Manifest:
        path = Path(index_dir) / MANIFEST
        fd = _open_regular(path, "no index manifest (run `archive index --rebuild`)")
        try:
            data = os.read(fd, MANIFEST_MAX_BYTES + 1)
        finally:
            os.close(fd)
        try:
            if len(data) > MANIFEST_MAX_BYTES:
                raise ValueError("too large")
            return cls.parse(json.loads(data))
        except ValueError as e:
            raise IndexCorrupt(f"{path}: unreadable manifest ({e}); run `archive index --rebuild`") from None

    @classmethod
    def parse(cls, raw) -> Manifest:
        """A manifest from decoded JSON, every field type-checked (ValueError says which is wrong)."""
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        fields = {**_FIELDS, "archive_id": str}
        raw = {"archive_id": "", **raw}
        for name, typ in fields.items():
            if type(raw.get(name)) is not typ:  # `type is`: a bool is no int here
                raise ValueError(f"{name} must be {typ.__name__}, not {type(raw.get(name)).__name__}")
        manifest = cls(**{name: raw[name] for name in fields})
        if not GENERATION_FILE.fullmatch(manifest.file):
            raise ValueError(f"file must be named chunks.<n>.faiss, not {manifest.file!r}")
        if manifest.index_type not in KINDS[1:]:
            raise ValueError(f"unknown index_type {manifest.index_type!r}")
        if min(manifest.generation, manifest.dimensions) < 1 or min(manifest.count, manifest.size) < 0:
            raise ValueError("generation, dimensions, count or size out of range")
        return manifest


def _open_regular(path: Path, missing: str) -> int:
    """A read-only descriptor of a regular file, never following a symlink nor blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise IndexMissing(f"{path}: {missing}") from None
    except OSError as e:
        raise IndexCorrupt(f"{path}: cannot open it ({os.strerror(e.errno)}); run `archive index --rebuild`") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IndexCorrupt(f"{path}: not a regular file; run `archive index --rebuild`")
    return fd


def _check_owner(manifest: Manifest, index_dir: Path, archive_id: str | None) -> None:
    if archive_id and manifest.archive_id and manifest.archive_id != archive_id:
        raise IndexMismatch(
            f"{index_dir} holds the index of another archive ({manifest.archive_id}, not {archive_id}); "
            "give this database its own --index-dir"
        )


# ---- saving ----------------------------------------------------------------------------------------------


def _next_generation(index_dir: Path) -> int:
    """One past the manifest's generation and every generation file present, so no file a reader may have
    mapped is ever rewritten (even when the manifest is gone)."""
    numbers = [0]
    try:
        numbers.append(Manifest.read(index_dir).generation)
    except ArchiveError:
        pass
    for path in index_dir.iterdir():
        found = re.fullmatch(r"chunks\.([0-9]{1,18})\.faiss(\.tmp)?", path.name)
        if found:
            numbers.append(int(found.group(1)))
    return max(numbers) + 1


def _write_new(path: Path, write: Callable[[Callable[[bytes], None]], None]) -> None:
    """Create `path` atomically: a new temp file (O_EXCL | O_NOFOLLOW: never through a planted symlink),
    written by `write(sink)`, fsynced, then renamed over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a crashed writer's leftover (unlink removes a symlink, not its target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:

        def sink(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        write(sink)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save(
    index: ChunkIndex, index_dir: Path, *, model_fingerprint: str, db_generation: int, archive_id: str = ""
) -> Manifest:
    """Write the index under a new generation, then commit it by replacing the manifest.

    `archive_id` names the database; a folder holding another archive's index is refused (IndexMismatch).
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    try:
        _check_owner(Manifest.read(index_dir), index_dir, archive_id)
    except IndexMismatch:
        raise
    except ArchiveError:
        pass  # no manifest, or a damaged one: this save replaces it
    generation = _next_generation(index_dir)
    name = f"chunks.{generation}.faiss"
    digest, size = hashlib.sha256(), 0

    def write_index(sink: Callable[[bytes], None]) -> None:
        def counted(data: bytes) -> None:  # streamed: no second copy of a multi-GB index in memory
            nonlocal size
            digest.update(data)
            size += len(data)
            sink(data)

        writer = faiss.PyCallbackIOWriter(counted)
        faiss.write_index(index.index, writer)
        del writer

    _write_new(index_dir / name, write_index)
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
        size=size,
        sha256=digest.hexdigest(),
        archive_id=archive_id or "",
    )
    _write_new(index_dir / MANIFEST, lambda sink: sink(json.dumps(manifest.__dict__, indent=2).encode()))
    _fsync_dir(index_dir)
    for old in index_dir.iterdir():
        if GENERATION_FILE.fullmatch(old.name) and old.name != name:
            old.unlink(missing_ok=True)
    return manifest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, 1 << 20):
        h.update(block)
    return h.hexdigest()


# ---- loading ---------------------------------------------------------------------------------------------


def load(
    index_dir: Path, *, check_sha: bool = False, mmap: bool = False, archive_id: str | None = None
) -> tuple[ChunkIndex, Manifest]:
    """Read the index the manifest names; a missing, truncated or corrupt file raises a clear error.

    `mmap` maps the vectors read-only instead of reading them (for readers: a server's first answer at a
    million vectors no longer waits ~1.5 s for 1.5 GB). Generation files are never rewritten in place, and
    a mapped file that a writer deletes stays readable until the reader lets it go. With `archive_id`, an
    index another archive wrote is refused (IndexMismatch).
    """
    index_dir = Path(index_dir)
    manifest = Manifest.read(index_dir)
    _check_owner(manifest, index_dir, archive_id)
    path = index_dir / manifest.file
    fd = _open_regular(path, "index file named by the manifest is missing; run `archive index --rebuild`")
    try:
        size = os.fstat(fd).st_size
        if size != manifest.size:
            raise IndexCorrupt(f"{path}: {size} bytes, manifest says {manifest.size}; run `archive index --rebuild`")
        if check_sha and _sha256_fd(fd) != manifest.sha256:
            raise IndexCorrupt(f"{path}: checksum differs from the manifest; run `archive index --rebuild`")
        raw = _read_faiss(path, fd, manifest, mmap)
    finally:
        os.close(fd)
    index = ChunkIndex(manifest.dimensions, raw)
    if raw.d != manifest.dimensions or index.kind != manifest.index_type or index.ntotal != manifest.count:
        raise IndexCorrupt(f"{path}: not the {manifest.index_type} index the manifest describes; rebuild it")
    return index, manifest


def _read_faiss(path: Path, fd: int, manifest: Manifest, mmap: bool) -> faiss.Index:
    """Read (or map) the file through the descriptor already checked, so a swapped name cannot slip in."""
    by_fd = f"/proc/self/fd/{fd}"
    try:
        flags = 0
        if mmap:  # flat codes and IVF lists each have their own mapping flag (combined, IVF-SQ refuses)
            flags = faiss.IO_FLAG_MMAP_IFC if manifest.index_type == "flat" else faiss.IO_FLAG_MMAP
        raw = faiss.read_index(by_fd if os.path.exists(by_fd) else str(path), flags)
    except RuntimeError as e:
        raise IndexCorrupt(
            f"{path}: FAISS cannot read it ({str(e).splitlines()[0]}); run `archive index --rebuild`"
        ) from None
    if manifest.index_type == "flat" and not isinstance(raw, faiss.IndexIDMap2):
        raise IndexCorrupt(f"{path}: not the flat index the manifest describes; run `archive index --rebuild`")
    return raw


class LiveIndex:
    """A reader's view of the index that reloads when the manifest changes (checked with one `stat`)."""

    def __init__(self, index_dir: Path, archive_id: str | None = None):
        self.index_dir = Path(index_dir)
        self.archive_id = archive_id
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
                    self._loaded, self._sig = load(self.index_dir, mmap=True, archive_id=self.archive_id), sig
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
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    try:  # neither truncate nor follow: a planted symlink must not let us touch another file
        fd = os.open(index_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise ArchiveError(f"{index_dir / '.lock'} is a symlink; remove it") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(
                f"{index_dir}: another `archive` command is writing this archive; try again when it ends"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def default_index_dir(db_path: str | os.PathLike, archive_id: str | None = None) -> Path:
    """The index folder of a database: `indexes/<db file name>/` beside it, so two databases in one folder
    keep apart. An older shared `indexes/` is still used while it holds this database's index: a manifest
    with this `archive_id`, or one written before manifests carried an id (the next save stamps it)."""
    db = Path(db_path).resolve()
    own, shared = db.parent / "indexes" / db.name, db.parent / "indexes"
    if (own / MANIFEST).exists() or not (shared / MANIFEST).exists():
        return own
    try:
        legacy = Manifest.read(shared)
    except ArchiveError:
        return own
    return shared if legacy.archive_id in ("", archive_id) else own
