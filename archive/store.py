"""The SQLite store (the source of truth): schema, identity, upserts of articles and their chunk vectors.

All writes go through here, inside one transaction per batch, so an interrupted load keeps whole batches.
The FAISS index is derived from `chunks.vector`; `archive_meta.generation` counts committed write batches.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from .chunk import Chunk
from .models import ArchiveError, Article

if TYPE_CHECKING:
    import sqlite_utils  # imported where a connection is opened: worker processes need only the hashing

    from .prepare import Prepared

IN_LIST = 900  # SQLite's default limit on host parameters is 999: IN lists go in slices of this many

ARTICLE_COLUMNS = {
    "id": int,
    "identity": str,
    "url": str,
    "external_id": str,
    "outlet": str,
    "title": str,
    "subtitle": str,
    "byline": str,
    "published": str,
    "language": str,
    "body": str,
    "content_hash": str,
    "body_hash": str,
    "origin": str,
    "loaded_at": str,
    "updated_at": str,
}
CHUNK_COLUMNS = {
    "id": int,
    "article_id": int,
    "seq": int,
    "start": int,
    "end": int,
    "text": str,
    "content_hash": str,
    "vector": bytes,
}
# An article's earlier versions (a changed reload replaces the article and keeps what it replaced here; the
# latest version is always the `articles` row, so search, FTS and the derived tables see only that).
VERSION_COLUMNS = {
    "id": int,
    "article_id": int,
    "version": int,  # 1 for the first text stored, counting up; the article row itself is the newest
    "title": str,
    "subtitle": str,
    "byline": str,
    "outlet": str,
    "published": str,
    "language": str,
    "external_id": str,
    "body": str,
    "content_hash": str,
    "source": str,  # where this version was loaded from: the article's origin then ("path:line")
    "seen_at": str,  # when the archive stored this version
    "replaced_at": str,  # when a changed reload replaced it
}


class NotAnArchive(ArchiveError):
    pass


class ArticleNotFound(ArchiveError):
    pass


class AmbiguousReference(ArchiveError):
    """An external id (not unique) that names several articles where one was meant."""


def in_slices(values: Iterable) -> Iterator[tuple[list, str]]:
    """Slices of `values` with their "?,?,..." placeholders, for `... in (...)` queries of any length."""
    values = list(values)
    for start in range(0, len(values), IN_LIST):
        part = values[start : start + IN_LIST]
        yield part, ",".join("?" * len(part))


def select_in(db: sqlite_utils.Database, sql: str, values: Iterable, *params) -> list[tuple]:
    """Rows of `sql` (which holds one `{marks}` for the IN list) over every slice of `values`."""
    rows: list[tuple] = []
    for part, marks in in_slices(values):
        rows += db.execute(sql.format(marks=marks), [*params, *part]).fetchall()
    return rows


def open_db(path: str, *, create: bool = True) -> sqlite_utils.Database:
    """Open (and create) an archive database, in WAL mode, with a clear error for a non-SQLite file."""
    import sqlite_utils

    try:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        db = sqlite_utils.Database(conn)
        tables = set(db.table_names())
    except sqlite3.DatabaseError as e:
        raise NotAnArchive(f"{path}: not an SQLite database ({e})") from None
    if tables and "articles" not in tables:
        raise NotAnArchive(f"{path}: an SQLite database, but not a news archive (no articles table)")
    if create and not tables:
        create_schema(db)
    if not create and not tables:
        raise NotAnArchive(f"{path}: no archive here yet; load articles first with `archive load`")
    return db


def create_schema(db: sqlite_utils.Database) -> None:
    db.enable_wal()
    db["articles"].create(ARTICLE_COLUMNS, pk="id", not_null={"identity", "title", "body"})
    db["articles"].create_index(["identity"], unique=True)
    db["articles"].create_index(["url"])
    db["articles"].create_index(["outlet", "published"])
    db["articles"].create_index(["published"])
    db["articles"].create_index(["body_hash"])
    db["chunks"].create(CHUNK_COLUMNS, pk="id", foreign_keys=[("article_id", "articles", "id")])
    db["chunks"].create_index(["article_id", "seq"])
    db["archive_meta"].create({"key": str, "value": str}, pk="key")
    db["articles"].enable_fts(["title", "subtitle", "body"], create_triggers=True, tokenize="porter")
    ensure_derived_tables(db)  # (the versions table with them)
    set_meta(db, generation="0", next_chunk_id="1", archive_id=uuid.uuid4().hex)


def ensure_archive_id(db: sqlite_utils.Database) -> str:
    """The database's identity, stamped into its index's manifest (archives older than it get one now)."""
    meta = get_meta(db)
    if not meta.get("archive_id"):
        set_meta(db, archive_id=uuid.uuid4().hex)
    return get_meta(db)["archive_id"]


DERIVED_TABLES = """
create table if not exists article_minhash (article_id integer primary key, shingles integer, signature blob);
create table if not exists minhash_bands (key integer, article_id integer);
create index if not exists minhash_bands_key on minhash_bands (key);
create index if not exists minhash_bands_article on minhash_bands (article_id);
create table if not exists article_groups (article_id integer primary key, group_id integer);
create index if not exists article_groups_group on article_groups (group_id);
create table if not exists terms (id integer primary key, term text unique not null, df integer);
create table if not exists article_terms (article_id integer primary key, terms blob);
"""


def ensure_derived_tables(db: sqlite_utils.Database) -> None:
    """The tables derived from articles (near-duplicate signatures and groups, keyword signatures, stories).

    Made with the schema, and by every writer for archives older than them; never on a read path."""
    from . import stories  # (stories reads the store: imported here, not at the top)

    if not {"article_groups", "article_terms"} <= set(db.table_names()):
        db.conn.executescript(DERIVED_TABLES)
    stories.ensure_tables(db)  # its tables, and the indexes added after them
    ensure_versions_table(db)


def ensure_versions_table(db: sqlite_utils.Database) -> None:
    """`article_versions`: made with the schema, and by every writer for archives older than it."""
    if "article_versions" not in db.table_names():
        db["article_versions"].create(VERSION_COLUMNS, pk="id", foreign_keys=[("article_id", "articles", "id")])
        db["article_versions"].create_index(["article_id", "version"], unique=True)


def open_reader(path: str) -> sqlite_utils.Database:
    """A second connection for reads beside a writer (WAL: it sees committed batches, never one half-written)."""
    if path == ":memory:":
        raise ArchiveError("an in-memory archive has no second connection")
    import sqlite_utils

    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return sqlite_utils.Database(conn)


def get_meta(db: sqlite_utils.Database) -> dict[str, str]:
    return {r["key"]: r["value"] for r in db["archive_meta"].rows}


@contextmanager
def transaction(db: sqlite_utils.Database):
    """Several writes that land together or not at all. (`with conn:` is not enough: sqlite-utils'
    `execute` commits a write statement by itself when no transaction is open yet.)"""
    db.conn.execute("begin immediate")
    try:
        yield
    except BaseException:
        db.conn.rollback()
        raise
    db.conn.commit()


def set_meta(db: sqlite_utils.Database, **values: str) -> None:
    with transaction(db):
        _write_meta(db, **values)


def _write_meta(db: sqlite_utils.Database, **values: str) -> None:
    """Inside the caller's transaction (sqlite-utils' table methods commit on their own, so writes that
    must land together use plain statements)."""
    db.conn.executemany(
        "insert or replace into archive_meta (key, value) values (?, ?)", [(k, str(v)) for k, v in values.items()]
    )


# ---- identity and hashing -------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def body_hash(body: str) -> str:
    """Hash of the body with case and whitespace folded: equal for exact duplicates (syndicated copy)."""
    return hashlib.sha1(_WS.sub(" ", body).strip().lower().encode("utf-8")).hexdigest()


def identity(article: Article) -> str:
    if article.url:
        return article.url
    key = "\x1f".join([article.outlet or "", article.title, article.published or "", article.body])
    return "sha1:" + hashlib.sha1(key.encode("utf-8")).hexdigest()


def content_hash(article: Article) -> str:
    fields = [
        article.title,
        article.subtitle,
        article.byline,
        article.published,
        article.outlet,
        article.language,
        article.external_id,
        article.body,
    ]
    return hashlib.sha1("\x1f".join(f or "" for f in fields).encode("utf-8")).hexdigest()


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# ---- writes ---------------------------------------------------------------------------------------------


@dataclass
class Planned:
    """One incoming article (prepared: chunks and signatures made) with what must happen to it."""

    prepared: Prepared
    status: str  # added | updated | unchanged
    article_id: int | None = None
    chunks: list[Chunk] = field(default_factory=list)
    reused: list[tuple[int, bytes] | None] = field(default_factory=list)  # per chunk: kept (id, vector)
    old_ids: list[int] = field(default_factory=list)

    @property
    def article(self) -> Article:
        return self.prepared.article

    @property
    def identity(self) -> str:
        return self.prepared.identity

    def set_chunks(self, chunks: list[Chunk], existing: list[tuple[str, int, bytes]]) -> None:
        """Keep the id and vector of every old chunk whose embedded text is unchanged."""
        pool: dict[str, list[tuple[int, bytes]]] = {}
        for h, cid, blob in existing:
            pool.setdefault(h, []).append((cid, blob))
        self.chunks = chunks
        self.reused = [pool[c.content_hash].pop() if pool.get(c.content_hash) else None for c in chunks]
        self.old_ids = [cid for _, cid, _ in existing]

    def texts_to_embed(self) -> list[str]:
        return [c.embed_text for c, r in zip(self.chunks, self.reused) if r is None]

    def new_vectors(self) -> np.ndarray:
        """The vectors that came with the article (embedded elsewhere) for the chunks not kept."""
        rows = [i for i, r in enumerate(self.reused) if r is None]
        return np.asarray(self.prepared.vectors, dtype=np.float32)[rows]


@dataclass
class Applied:
    added_ids: list[int] = field(default_factory=list)
    added_vectors: list[np.ndarray] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)


def classify(db: sqlite_utils.Database, prepared: Iterable[Prepared]) -> list[Planned]:
    """Decide added / updated / unchanged for each article; the last copy of an identity in a batch wins."""
    by_identity = {p.identity: p for p in prepared}
    stored = dict(
        (ident, (aid, chash))
        for aid, ident, chash in select_in(
            db, "select id, identity, content_hash from articles where identity in ({marks})", by_identity
        )
    )
    plans = []
    for ident, p in by_identity.items():
        aid, chash = stored.get(ident, (None, None))
        status = "added" if aid is None else ("unchanged" if chash == p.content_hash else "updated")
        plans.append(Planned(p, status, aid))
    return plans


def existing_chunks(db: sqlite_utils.Database, article_id: int | None) -> list[tuple[str, int, bytes]]:
    if article_id is None:
        return []
    return db.execute("select content_hash, id, vector from chunks where article_id = ?", [article_id]).fetchall()


def apply(
    db: sqlite_utils.Database,
    plans: list[Planned],
    vectors: np.ndarray,
    derive: Callable[[sqlite_utils.Database, list[Planned]], None] | None = None,
    meta: dict[str, str] | None = None,
) -> Applied:
    """Write a batch in one transaction: articles upserted, changed chunks replaced, vectors stored, and
    `derive(db, plans)` (the derived tables) run inside it, so all of a batch lands or none of it; `meta`
    goes to archive_meta with it."""
    applied, extra = Applied(), meta
    meta = get_meta(db)
    next_id = int(meta["next_chunk_id"])
    vec_iter = iter(vectors)
    stamp = now()
    with transaction(db):
        for p in plans:
            if p.status == "unchanged":
                continue
            if p.article_id is not None:
                _keep_version(db, p, stamp)
            p.article_id = _upsert_article(db, p, stamp)
            rows, next_id = _chunk_rows(p, vec_iter, next_id, applied)
            kept = {r["id"] for r in rows}
            applied.removed_ids += [i for i in p.old_ids if i not in kept]
            db.execute("delete from chunks where article_id = ?", [p.article_id])
            db.conn.executemany(
                _insert_sql("chunks", CHUNK_COLUMNS), [tuple(r[c] for c in CHUNK_COLUMNS) for r in rows]
            )
        if derive:
            derive(db, [p for p in plans if p.status != "unchanged"])
        generation = int(meta["generation"]) + 1
        _write_meta(db, next_chunk_id=str(next_id), generation=str(generation), **(extra or {}))
    return applied


def _insert_sql(table: str, columns) -> str:
    return f"insert into {table} ({', '.join(f'[{c}]' for c in columns)}) values ({', '.join('?' * len(columns))})"


def _keep_version(db: sqlite_utils.Database, p: Planned, stamp: str) -> None:
    """Inside the batch's transaction: copy the stored article into article_versions before a changed reload
    replaces it. Only a changed text makes a version: a re-embed (same text, new model) keeps none."""
    db.execute(_KEEP_VERSION_SQL, [p.article_id, stamp, p.article_id, p.prepared.content_hash])


# The article columns a version copies as they are (the others are the version's own or renamed).
_OWN = ("id", "article_id", "version", "source", "seen_at", "replaced_at")
_COPIED = ", ".join(c for c in VERSION_COLUMNS if c not in _OWN)
_KEEP_VERSION_SQL = f"""insert into article_versions (article_id, version, {_COPIED}, source, seen_at, replaced_at)
    select id, 1 + (select coalesce(max(version), 0) from article_versions where article_id = ?), {_COPIED},
        origin, updated_at, ? from articles where id = ? and content_hash != ?"""


def _upsert_article(db: sqlite_utils.Database, p: Planned, stamp: str) -> int:
    a = p.article
    row = {
        "identity": p.identity,
        "url": a.url,
        "external_id": a.external_id,
        "outlet": a.outlet,
        "title": a.title,
        "subtitle": a.subtitle,
        "byline": a.byline,
        "published": a.published,
        "language": a.language,
        "body": a.body,
        "content_hash": p.prepared.content_hash,
        "body_hash": p.prepared.body_hash,
        "origin": a.origin,
        "updated_at": stamp,
    }
    if p.article_id is None:
        row["loaded_at"] = stamp
        return db.execute(_insert_sql("articles", list(row)), list(row.values())).lastrowid
    assignments = ", ".join(f"[{c}] = ?" for c in row)
    db.execute(f"update articles set {assignments} where id = ?", [*row.values(), p.article_id])
    return p.article_id


def _chunk_rows(p: Planned, vec_iter: Iterator[np.ndarray], next_id: int, applied: Applied):
    rows = []
    for c, reused in zip(p.chunks, p.reused):
        if reused:
            cid, blob = reused
        else:
            vec = next(vec_iter)
            cid, blob = next_id, vec.astype(np.float32).tobytes()
            next_id += 1
            applied.added_ids.append(cid)
            applied.added_vectors.append(vec)
        rows.append(
            {
                "id": cid,
                "article_id": p.article_id,
                "seq": c.seq,
                "start": c.start,
                "end": c.end,
                "text": c.text,
                "content_hash": c.content_hash,
                "vector": blob,
            }
        )
    return rows, next_id


def delete_articles(
    db: sqlite_utils.Database,
    article_ids: list[int],
    forget: Callable[[sqlite_utils.Database, list[int]], None] | None = None,
) -> list[int]:
    """Delete articles, their chunks and (through `forget`, in the same transaction) their derived rows;
    returns the removed chunk ids (to drop from the index). Every earlier version goes with its article."""
    ensure_versions_table(db)
    removed = [r[0] for r in select_in(db, "select id from chunks where article_id in ({marks})", article_ids)]
    with transaction(db):
        for part, marks in in_slices(article_ids):
            db.execute(f"delete from chunks where article_id in ({marks})", part)
            db.execute(f"delete from article_versions where article_id in ({marks})", part)
            db.execute(f"delete from articles where id in ({marks})", part)
        if forget:
            forget(db, article_ids)
        meta = get_meta(db)
        _write_meta(db, generation=str(int(meta["generation"]) + 1))
    return removed


# ---- tables derived from articles (duplicate groups, keyword signatures) -------------------------------


def articles_without(db: sqlite_utils.Database, table: str) -> list[int]:
    """Articles with no row in a per-article derived table (keyed by article_id): loaded before it existed
    (then every article counts, and the table is not created here: reads never write)."""
    if table not in db.table_names():
        return article_ids(db)
    sql = f"select id from articles where id not in (select article_id from [{table}]) order by id"
    return [r[0] for r in db.execute(sql)]


def backfill(db: sqlite_utils.Database, missing: list[int], update: Callable, batch: int = 500) -> int:
    """Run `update(db, ids)` over the missing articles a batch at a time; returns how many there were."""
    for start in range(0, len(missing), batch):
        update(db, missing[start : start + batch])
    return len(missing)


# ---- reads ----------------------------------------------------------------------------------------------


def find_article(db: sqlite_utils.Database, ref: str | int) -> dict:
    """An article by id, URL or external id."""
    ref_s = str(ref).strip()
    sql = "select * from articles where {} = ? limit 1"
    for column, value in (
        ("id", int(ref_s) if ref_s.isdigit() else None),
        ("url", ref_s),
        ("identity", ref_s),
        ("external_id", ref_s),
    ):
        if value is None:
            continue
        cur = db.execute(sql.format(column), [value])
        row = cur.fetchone()
        if row:
            return dict(zip([d[0] for d in cur.description], row))
    raise ArticleNotFound(f"no article with id or URL {ref_s!r}")


DELETE_KEYS = {"ids": "id", "urls": "url", "external_ids": "external_id"}


def articles_to_delete(
    db: sqlite_utils.Database,
    ids: Iterable[int] = (),
    urls: Iterable[str] = (),
    external_ids: Iterable[str] = (),
) -> list[dict]:
    """The articles these references name, each said explicitly (an id, a URL or an external id), with what a
    delete would take with them (chunks, earlier versions). Every reference must name an article, and an
    external id exactly one (they are not unique): else nothing is deleted and the error says why."""
    found: dict[int, dict] = {}
    for key, values in (("ids", ids), ("urls", urls), ("external_ids", external_ids)):
        for value in values:
            for row in _named(db, DELETE_KEYS[key], value):
                found[row["id"]] = row
    return [found[i] for i in sorted(found)]


def _named(db: sqlite_utils.Database, column: str, value) -> list[dict]:
    versions = "(select count(*) from article_versions v where v.article_id = a.id)"
    if "article_versions" not in db.table_names():
        versions = "0"
    sql = f"""select id, url, external_id, title, outlet, published,
        (select count(*) from chunks c where c.article_id = a.id) chunks, {versions} versions
        from articles a where a.[{column}] = ? order by id limit 6"""
    cur = db.execute(sql, [value])
    rows = [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
    label = column.replace("_", " ")
    if not rows:
        raise ArticleNotFound(f"no article with {label} {value!r}: nothing deleted")
    if len(rows) > 1:
        listed = ", ".join(str(r["id"]) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise AmbiguousReference(
            f"{label} {value!r} names {'more than 5' if len(rows) > 5 else len(rows)} articles (ids {listed}): "
            "name them by id instead; nothing deleted"
        )
    return rows


def all_vectors(db: sqlite_utils.Database, dim: int, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every stored (ids, vectors) in chunk-id order, in batches (the index is rebuilt from these)."""
    last = 0
    while True:
        rows = db.execute("select id, vector from chunks where id > ? order by id limit ?", [last, batch]).fetchall()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        yield ids, vecs
        last = rows[-1][0]


def vectors_for(db: sqlite_utils.Database, chunk_ids: Iterable[int], dim: int) -> np.ndarray:
    """The stored vectors of these chunks, in the order asked (KeyError for an id with no chunk)."""
    ids = [int(i) for i in chunk_ids]
    found = dict(select_in(db, "select id, vector from chunks where id in ({marks})", ids))
    out = np.zeros((len(ids), dim), dtype=np.float32)
    for pos, cid in enumerate(ids):
        out[pos] = np.frombuffer(found[cid], dtype=np.float32)
    return out


def chunk_ids(db: sqlite_utils.Database) -> np.ndarray:
    return np.array([r[0] for r in db.execute("select id from chunks order by id")], dtype=np.int64)


def article_ids(db: sqlite_utils.Database) -> list[int]:
    return [r[0] for r in db.execute("select id from articles order by id")]


def orphan_chunks(db: sqlite_utils.Database) -> int:
    """Chunks whose article is gone (a write outside the library, or a damaged file)."""
    return db.execute("select count(*) from chunks where article_id not in (select id from articles)").fetchone()[0]


def delete_orphan_chunks(db: sqlite_utils.Database) -> None:
    with transaction(db):
        db.execute("delete from chunks where article_id not in (select id from articles)")


def orphan_versions(db: sqlite_utils.Database) -> int:
    """Earlier versions whose article is gone (a delete outside the library, or a damaged file)."""
    if "article_versions" not in db.table_names():
        return 0
    sql = "select count(*) from article_versions where article_id not in (select id from articles)"
    return db.execute(sql).fetchone()[0]


def delete_orphan_versions(db: sqlite_utils.Database) -> None:
    if "article_versions" in db.table_names():
        with transaction(db):
            db.execute("delete from article_versions where article_id not in (select id from articles)")


def chunkless_articles(db: sqlite_utils.Database) -> list[int]:
    sql = "select id from articles where id not in (select article_id from chunks) order by id"
    return [r[0] for r in db.execute(sql)]


def stored_article(db: sqlite_utils.Database, article_id: int) -> Article:
    """A stored article as the record it was loaded from (to chunk and embed it again)."""
    row = db["articles"].get(article_id)
    return Article(
        row["title"], row["body"], row["origin"] or "", row["url"], row["outlet"], row["published"],
        row["subtitle"], row["byline"], row["external_id"], row["language"],
    )  # fmt: skip


def summary(db: sqlite_utils.Database) -> dict:
    """Counts and the date range for `archive stats`."""
    row = db.execute("select count(*), count(distinct outlet), min(published), max(published) from articles").fetchone()
    outlets = db.execute("select outlet, count(*) n from articles group by outlet order by n desc").fetchall()
    return {
        "articles": row[0],
        "chunks": db["chunks"].count,
        "outlets": row[1],
        "outlet_counts": dict(outlets),
        "earliest": row[2],
        "latest": row[3],
    }


def clear_meta(db: sqlite_utils.Database, key: str) -> None:
    with transaction(db):
        db.execute("delete from archive_meta where key = ?", [key])
