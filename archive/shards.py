"""Parquet shards: prepared and embedded articles in columnar form, the hand-off between a remote route and
the one writer.

A shard is one Parquet file; each row is an article (fields, identity and hashes, chunks, one vector per
chunk, near-duplicate and keyword signatures) or a rejected record (origin and reason, nothing else). The
file's metadata names the model fingerprint and dimensions of its vectors, so an archive refuses shards of
another model before writing anything. Shards are written atomically (temp file + rename) and ingesting one
twice changes nothing: the writer upserts by article identity.

pyarrow is imported only here (`pip install news-archive[parquet]`), so the base install stays lean.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunk import Chunk
from .files import atomic_write
from .models import ArchiveError, Article, Rejection
from .prepare import Prepared

FORMAT = "news-archive-shard/1"
META_FORMAT, META_FINGERPRINT, META_DIMENSIONS = (
    b"news_archive.format",
    b"news_archive.fingerprint",
    b"news_archive.dim",
)
ARTICLE_FIELDS = (
    "title",
    "body",
    "origin",
    "url",
    "outlet",
    "published",
    "subtitle",
    "byline",
    "external_id",
    "language",
)
ROWS_PER_BATCH = 256  # articles handed to the writer at a time


def pyarrow():
    """The pyarrow module, or a clear ArchiveError saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise ArchiveError("Parquet shards need pyarrow: pip install news-archive[parquet]") from e
    return pyarrow


def schema(dimensions: int):
    pa = pyarrow()
    chunk = pa.struct(
        [
            ("seq", pa.int32()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("text", pa.string()),
            ("embed_text", pa.string()),
            ("content_hash", pa.string()),
        ]
    )
    return pa.schema(
        [(name, pa.string()) for name in ARTICLE_FIELDS]
        + [
            ("extra", pa.string()),  # JSON
            ("identity", pa.string()),
            ("content_hash", pa.string()),
            ("body_hash", pa.string()),
            ("known_unchanged", pa.bool_()),
            ("chunks", pa.list_(chunk)),
            ("minhash", pa.list_(pa.uint64())),
            ("shingles", pa.int64()),
            ("terms", pa.map_(pa.string(), pa.int32())),
            ("rejection", pa.string()),  # set on rejected records only
            vectors_field(dimensions),
        ]
    )


def vectors_field(dimensions: int):
    """Per article, one fixed-size float32 list per chunk; null when the article was not embedded."""
    pa = pyarrow()
    return pa.field("vectors", pa.list_(pa.list_(pa.float32(), dimensions)))


def vectors_array(per_row: Sequence[np.ndarray | None], dimensions: int):
    """The vectors column from per-article float32 arrays, built from numpy (no Python float per value)."""
    pa = pyarrow()
    counts = [0 if v is None else len(v) for v in per_row]
    flat = [np.asarray(v, np.float32).reshape(-1, dimensions) for v in per_row if v is not None]
    values = np.vstack(flat).ravel() if flat else np.zeros(0, np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), dimensions)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    mask = pa.array([v is None for v in per_row])
    return pa.ListArray.from_arrays(offsets, inner, type=vectors_field(dimensions).type, mask=mask)


# ---- rows <-> Prepared ----------------------------------------------------------------------------------


def to_table(items: Sequence[Prepared | Rejection], dimensions: int):
    """A pyarrow Table of these articles and rejections (vectors, when present, must have `dimensions`)."""
    pa = pyarrow()
    full = schema(dimensions)
    table = pa.Table.from_pylist([_row(item) for item in items], schema=full.remove(full.get_field_index("vectors")))
    vectors = [_checked_vectors(item, dimensions) if isinstance(item, Prepared) else None for item in items]
    return table.append_column(vectors_field(dimensions), vectors_array(vectors, dimensions))


def _row(item: Prepared | Rejection) -> dict:
    if isinstance(item, Rejection):
        return {"origin": item.origin, "rejection": item.reason}
    a = item.article
    row = {name: getattr(a, name) for name in ARTICLE_FIELDS}
    row |= {
        "extra": json.dumps(a.extra, default=str) if a.extra else None,
        "identity": item.identity,
        "content_hash": item.content_hash,
        "body_hash": item.body_hash,
        "known_unchanged": item.known_unchanged,
        "chunks": [
            {
                "seq": c.seq,
                "start": c.start,
                "end": c.end,
                "text": c.text,
                "embed_text": c.embed_text,
                "content_hash": c.content_hash,
            }
            for c in item.chunks
        ],
        "minhash": None if item.minhash is None else item.minhash.tolist(),
        "shingles": item.shingles,
        "terms": list(item.terms.items()),
    }
    return row


def _checked_vectors(item: Prepared, dim: int) -> np.ndarray | None:
    if item.vectors is None:
        return None
    vectors = np.asarray(item.vectors, dtype=np.float32)
    if not item.chunks and vectors.size == 0:
        return np.zeros((0, dim), np.float32)
    if vectors.shape != (len(item.chunks), dim):
        raise ArchiveError(f"{item.article.origin}: vectors of shape {vectors.shape} for {len(item.chunks)} chunks")
    return vectors


def from_table(table) -> list[Prepared | Rejection]:
    """The articles and rejections of a shard table (raises ArchiveError when its contents do not add up)."""
    dim = table.schema.field("vectors").type.value_type.list_size
    vectors = _vectors_column(table.column("vectors"), dim)
    minhashes = _minhash_column(table.column("minhash"))
    out: list[Prepared | Rejection] = []
    for i, row in enumerate(table.drop_columns(["vectors", "minhash"]).to_pylist()):
        if row["rejection"] is not None:
            out.append(Rejection(row["origin"], row["rejection"]))
        else:
            out.append(_prepared(row, vectors[i], minhashes[i]))
    return out


def _prepared(row: dict, vectors: np.ndarray | None, minhash: np.ndarray | None) -> Prepared:
    article = Article(**{name: row[name] for name in ARTICLE_FIELDS}, extra=json.loads(row["extra"] or "{}"))
    chunks = [Chunk(c["seq"], c["start"], c["end"], c["text"], c["embed_text"]) for c in row["chunks"]]
    for c, stored in zip(chunks, row["chunks"]):
        if c.content_hash != stored["content_hash"]:
            raise ArchiveError(f"{article.origin}: chunk {c.seq} does not match its hash")
    if vectors is not None and len(vectors) != len(chunks):
        raise ArchiveError(f"{article.origin}: {len(vectors)} vectors for {len(chunks)} chunks")
    return Prepared(
        article,
        row["identity"],
        row["content_hash"],
        row["body_hash"],
        chunks,
        row["shingles"] or 0,
        minhash,
        Counter(dict(row["terms"] or [])),
        bool(row["known_unchanged"]),
        vectors,
    )


def _vectors_column(column, dim: int) -> list[np.ndarray | None]:
    """Per row: its chunks' vectors as one float32 array (no Python float per value), or None."""
    column = column.combine_chunks()
    flat = column.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    flat = flat.reshape(-1, dim)
    offsets = column.offsets.to_numpy() - column.offsets[0].as_py()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [flat[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(len(column))]


def _minhash_column(column) -> list[np.ndarray | None]:
    return [None if v is None else np.array(v, dtype=np.uint64) for v in column.to_pylist()]


# ---- files ---------------------------------------------------------------------------------------------


def write_shard(
    path: str | os.PathLike, prepared: Sequence[Prepared | Rejection], fingerprint: str, dimensions: int | None = None
) -> Path:
    """Write these articles (and rejections) as one shard, atomically; `dimensions` defaults to the vectors'."""
    if dimensions is None:
        dimensions = next((np.shape(p.vectors)[1] for p in prepared if _has_vectors(p)), 0)
    return write_table(path, to_table(prepared, dimensions), fingerprint)


def _has_vectors(p) -> bool:
    return isinstance(p, Prepared) and p.vectors is not None and len(p.vectors) > 0


def write_table(path: str | os.PathLike, table, fingerprint: str) -> Path:
    """Write a shard table with its model metadata: temp file in the same folder, fsync, rename."""
    pq = pyarrow().parquet
    path = Path(path)
    dim = table.schema.field("vectors").type.value_type.list_size
    meta = {META_FORMAT: FORMAT.encode(), META_FINGERPRINT: fingerprint.encode(), META_DIMENSIONS: str(dim).encode()}
    table = table.replace_schema_metadata(meta)
    return atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))


@dataclass
class ShardInfo:
    path: Path
    fingerprint: str
    dimensions: int
    rows: int


@dataclass
class ShardSet:
    """The shards of a folder: the readable ones, and a rejection for each file that is not a shard."""

    shards: list[ShardInfo] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def check_model(self, fingerprint: str, dimensions: int) -> None:
        """Refuse (before anything is written) shards whose vectors another model made."""
        wrong = [s for s in self.shards if s.fingerprint != fingerprint or s.dimensions not in (0, dimensions)]
        if wrong:
            s = wrong[0]
            raise ArchiveError(
                f"{s.path}: vectors of model {s.fingerprint} ({s.dimensions} dims), but this archive's model is "
                f"{fingerprint} ({dimensions} dims); {len(wrong)} of {len(self.shards)} shards differ. Embed them "
                "again with the archive's model, or load them into an archive of their own."
            )


def shard_files(directory: str | os.PathLike) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise ArchiveError(f"{d}: not a folder of Parquet shards")
    files = sorted(p for p in d.glob("*.parquet") if p.is_file())
    if not files:
        raise ArchiveError(f"{d}: no .parquet shards in it")
    return files


def scan_shards(directory: str | os.PathLike) -> ShardSet:
    """Read every shard's footer (cheap): its model, dimensions and row count, or why it cannot be read."""
    pq = pyarrow().parquet
    out = ShardSet()
    for path in shard_files(directory):
        try:
            f = pq.ParquetFile(path)
            meta = f.schema_arrow.metadata or {}
            if meta.get(META_FORMAT) != FORMAT.encode():
                raise ValueError("not a news-archive shard (no shard metadata)")
            fp, dim = meta[META_FINGERPRINT].decode(), int(meta[META_DIMENSIONS])
            out.shards.append(ShardInfo(path, fp, dim, f.metadata.num_rows))
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file costs that file, not the load
            out.rejected.append(Rejection(str(path), f"unreadable shard: {type(e).__name__}: {str(e)[:200]}"))
    return out


def read_shard(path: str | os.PathLike) -> list[Prepared | Rejection]:
    """One shard's rows, all or nothing: a shard that fails anywhere raises ArchiveError."""
    pq = pyarrow().parquet
    try:
        return from_table(pq.read_table(path))
    except ArchiveError as e:
        raise ArchiveError(f"corrupt shard: {e}") from e
    except Exception as e:  # noqa: BLE001 - arrow and parquet raise many kinds for damaged files
        raise ArchiveError(f"unreadable shard: {type(e).__name__}: {str(e)[:200]}") from e


def read_shards(directory: str | os.PathLike, shards: ShardSet | None = None) -> Iterator[list[Prepared | Rejection]]:
    """Batches of articles (and rejections) from a folder of shards, in file-name order. A file that cannot
    be read, in part or whole, comes as one Rejection naming it; the other files load."""
    shards = shards if shards is not None else scan_shards(directory)
    if shards.rejected:
        yield list(shards.rejected)
    for info in shards.shards:
        try:
            rows = read_shard(info.path)
        except ArchiveError as e:
            yield [Rejection(str(info.path), str(e))]
            continue
        for start in range(0, len(rows), ROWS_PER_BATCH):
            yield rows[start : start + ROWS_PER_BATCH]


def load_shards(arc, directory: str | os.PathLike, progress=None):
    """Ingest a folder of shards into the archive through the one writer; returns its LoadReport.

    The shards' model must be the archive's (checked on every footer before anything is written)."""
    from .ingest import write_prepared

    shards = scan_shards(directory)
    fingerprint = arc.meta.get("model_fingerprint") or arc.encoder.fingerprint
    shards.check_model(fingerprint, arc.encoder.dimensions)
    rejected: list[Rejection] = []

    def articles() -> Iterator[list[Prepared]]:
        for batch in read_shards(directory, shards):
            rejected.extend(r for r in batch if isinstance(r, Rejection))
            yield [p for p in batch if isinstance(p, Prepared)]

    report = write_prepared(arc, articles(), progress)
    report.rejected = rejected + report.rejected
    return report
