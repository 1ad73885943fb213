"""Exact and near-duplicate detection (syndicated wire copy, light rewrites) and grouping, at load time.

Each article's body becomes a set of word 5-shingles, summarised by a MinHash signature of NUM_PERM values
(multiply-shift hashes, deterministic across processes). Locality-sensitive hashing over BANDS bands of
ROWS values finds candidates through an indexed SQLite table, so a new article is compared only with the few
articles that share a band; each candidate is then verified on its estimated Jaccard similarity and on the
containment of the shorter text in the longer (a trimmed copy of a story is still the same copy). Articles
with the same body hash (exact duplicates) always group. Groups are connected components, kept in
`article_groups` (group id = the smallest member id); results show one row per group.

Thresholds were measured with `python -m benchmarks.quality` on BBC News' exact-duplicate pairs and on
rewritten variants (sentences dropped, paragraphs reordered, wire-copy edits, the first half only): see
JACCARD_MIN and CONTAINMENT_MIN.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from . import store
from .store import transaction

if TYPE_CHECKING:  # workers import this module for its pure functions: keep sqlite_utils (and pandas) out
    import sqlite_utils

SHINGLE = 5
BANDS, ROWS = 42, 3
NUM_PERM = BANDS * ROWS
JACCARD_MIN = 0.5  # estimated Jaccard of 5-shingle sets at or above which two bodies are one copy
CONTAINMENT_MIN = 0.8  # ... or this share of the shorter body's shingles found in the longer one
CONTAINMENT_JACCARD_FLOOR = 0.2  # (but never when the shorter is a tiny fraction of the longer)

_rng = np.random.RandomState(20170207)
_A = (_rng.randint(1, 2**62, size=NUM_PERM, dtype=np.int64).astype(np.uint64) << np.uint64(1)) | np.uint64(1)
_B = _rng.randint(0, 2**62, size=NUM_PERM, dtype=np.int64).astype(np.uint64)
_WORD = re.compile(r"\w+", re.UNICODE)


# ---- signatures -------------------------------------------------------------------------------------------


def shingles(text: str) -> np.ndarray:
    """Distinct hashed word 5-shingles of a text (case and punctuation folded)."""
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE:
        grams = [" ".join(words)] if words else []
    else:
        grams = [" ".join(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)]
    return np.unique(np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams)))


def signature(hashed: np.ndarray) -> np.ndarray:
    """MinHash signature (NUM_PERM uint32 values as uint64) of a set of hashed shingles.

    Mixed a block of shingles at a time: the whole (shingles x NUM_PERM) matrix of a 2 MB article (~350k
    shingles) would take ~1-2 GB at peak; a block takes 4 MB and the minimum is the same."""
    if not len(hashed):
        return np.full(NUM_PERM, np.iinfo(np.uint32).max, dtype=np.uint64)
    block = 4096
    sig = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(hashed), block):
            mixed = hashed[start : start + block, None] * _A[None, :]
            mixed += _B[None, :]
            mixed >>= np.uint64(32)
            np.minimum(sig, mixed.min(axis=0), out=sig)
    return sig


def band_keys(sig: np.ndarray) -> list[int]:
    """One signed 64-bit key per band (band number mixed in), for the indexed bucket table."""
    keys = []
    for b in range(BANDS):
        part = sig[b * ROWS : (b + 1) * ROWS].astype(np.uint32).tobytes()
        h = zlib.crc32(part, b) | (zlib.adler32(part, b + 1) << 32)
        keys.append(h - (1 << 64) if h >= 1 << 63 else h)
    return keys


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def is_near_duplicate(j: float, n_a: int, n_b: int) -> bool:
    """Same copy: high Jaccard, or the shorter one (nearly) contained in the longer one."""
    if j >= JACCARD_MIN:
        return True
    if j < CONTAINMENT_JACCARD_FLOOR or not n_a or not n_b:
        return False
    containment = j / (1 + j) * (n_a + n_b) / min(n_a, n_b)
    return containment >= CONTAINMENT_MIN


# ---- load-time grouping -----------------------------------------------------------------------------------


def update(db: sqlite_utils.Database, article_ids: Iterable[int]) -> None:
    """(Re)compute the signatures of stored articles and merge them into their groups; one transaction."""
    ids = [int(i) for i in article_ids if i is not None]
    rows = store.select_in(db, "select id, body, body_hash from articles where id in ({marks})", ids)
    items = []
    for aid, body, bhash in rows:
        hashed = shingles(body or "")
        items.append((aid, bhash, len(hashed), signature(hashed)))
    with transaction(db):
        write(db, items)


def write(db: sqlite_utils.Database, items: list[tuple[int, str | None, int, np.ndarray]]) -> None:
    """Inside the caller's transaction: store (article id, body hash, shingle count, MinHash) signatures,
    made beforehand (in a worker process at load time), and merge each article into its group."""
    if not items:
        return
    _detach(db, [i[0] for i in items])
    for aid, bhash, n, sig in items:
        keys = band_keys(sig)
        db.execute("insert or replace into article_minhash values (?, ?, ?)", [aid, n, sig.tobytes()])
        db.conn.executemany("insert into minhash_bands values (?, ?)", [(k, aid) for k in keys])
        _merge(db, aid, _matches(db, aid, bhash, sig, n, keys))


def forget(db: sqlite_utils.Database, article_ids: Iterable[int]) -> None:
    """Inside the caller's transaction: drop deleted articles from the signatures and the groups (their
    groups are re-split if need be)."""
    ids = [int(i) for i in article_ids]
    if ids and "article_groups" in db.table_names():
        _detach(db, ids)
        for part, marks in store.in_slices(ids):
            db.execute(f"delete from article_groups where article_id in ({marks})", part)


def ungrouped(db: sqlite_utils.Database) -> list[int]:
    """Articles with no duplicate signature."""
    return store.articles_without(db, "article_minhash")


def backfill(db: sqlite_utils.Database) -> int:
    """Group every article that has no signature yet."""
    return store.backfill(db, ungrouped(db), update)


def _matches(db, aid: int, body_hash: str | None, sig: np.ndarray, n: int, keys: list[int]) -> set[int]:
    found = {r[0] for r in db.execute("select id from articles where body_hash = ? and id != ?", [body_hash, aid])}
    marks = ",".join("?" * len(keys))
    candidates = {
        r[0]
        for r in db.execute(f"select distinct article_id from minhash_bands where key in ({marks})", keys)
        if r[0] != aid
    } - found
    for cid, count, blob in _signatures(db, candidates):
        if is_near_duplicate(jaccard(sig, np.frombuffer(blob, dtype=np.uint64)), n, count):
            found.add(cid)
    return found


def _signatures(db, ids: Iterable[int]) -> list[tuple]:
    return store.select_in(
        db, "select article_id, shingles, signature from article_minhash where article_id in ({marks})", ids
    )


def _merge(db, aid: int, matches: set[int]) -> None:
    groups = {aid}
    if matches:
        sql = "select group_id from article_groups where article_id in ({marks})"
        groups |= {r[0] for r in store.select_in(db, sql, matches)} | set(matches)
    target = min(groups)
    db.execute("insert or replace into article_groups values (?, ?)", [aid, target])
    others = sorted(groups - {target})
    if others:
        for part, marks in store.in_slices(others):
            db.execute(f"update article_groups set group_id = ? where group_id in ({marks})", [target, *part])
        db.conn.executemany("insert or ignore into article_groups values (?, ?)", [(m, target) for m in matches])


def _detach(db, ids: list[int]) -> None:
    """Take articles out of their groups and re-split what remains of each group (connected components)."""
    affected = {
        r[0] for r in store.select_in(db, "select group_id from article_groups where article_id in ({marks})", ids)
    }
    for part, marks in store.in_slices(ids):
        db.execute(f"delete from minhash_bands where article_id in ({marks})", part)
        db.execute(f"delete from article_minhash where article_id in ({marks})", part)
        db.execute(f"update article_groups set group_id = article_id where article_id in ({marks})", part)
    for gid in affected:
        members = [
            r[0]
            for r in db.execute("select article_id from article_groups where group_id = ?", [gid])
            if r[0] not in ids
        ]
        if len(members) > 1:
            _regroup(db, members)


def _regroup(db, members: list[int]) -> None:
    sigs = {cid: (n, np.frombuffer(blob, dtype=np.uint64)) for cid, n, blob in _signatures(db, members)}
    hashes = dict(store.select_in(db, "select id, body_hash from articles where id in ({marks})", members))
    parent = {m: m for m in members}

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            same = hashes.get(a) is not None and hashes.get(a) == hashes.get(b)
            if not same and a in sigs and b in sigs:
                same = is_near_duplicate(jaccard(sigs[a][1], sigs[b][1]), sigs[a][0], sigs[b][0])
            if same:
                parent[root(a)] = root(b)
    comps: dict[int, list[int]] = {}
    for m in members:
        comps.setdefault(root(m), []).append(m)
    for comp in comps.values():
        target = min(comp)
        db.conn.executemany("update article_groups set group_id = ? where article_id = ?", [(target, m) for m in comp])


# ---- reads ------------------------------------------------------------------------------------------------


def group_members(db, article_ids: Iterable[int]) -> dict[int, list[tuple[int, str | None]]]:
    """For each article: every member of its group (itself included) as (id, outlet).

    Falls back to exact duplicates (equal body hash) in an archive without groups.
    """
    ids = [int(i) for i in article_ids]
    out: dict[int, list[tuple[int, str | None]]] = {}
    if not ids:
        return out
    if "article_groups" in db.table_names():
        sql = (
            "select g.article_id, m.article_id, a.outlet from article_groups g "
            "join article_groups m on m.group_id = g.group_id join articles a on a.id = m.article_id "
            "where g.article_id in ({marks}) order by m.article_id"
        )
        for aid, member, outlet in store.select_in(db, sql, ids):
            out.setdefault(aid, []).append((member, outlet))
    sql = (  # articles not grouped yet (loaded outside the library, or before groups): exact copies still count
        "select x.id, a.id, a.outlet from articles x join articles a on a.body_hash = x.body_hash "
        "where x.id in ({marks}) order by a.id"
    )
    for aid, member, outlet in store.select_in(db, sql, [i for i in ids if i not in out]):
        out.setdefault(aid, []).append((member, outlet))
    for aid in ids:
        out.setdefault(aid, [(aid, None)])
    return out
