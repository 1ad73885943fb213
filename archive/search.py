"""Ranking: semantic, keyword and hybrid search, and related coverage, all rolled up from chunks to articles.

Every function takes an open database, the chunk index and (where it embeds a query) an Encoder, and returns
`Result`s. This is the one place where ranking and joining happen; both shells call it through `Archive`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import sqlite_utils

from .embed import Encoder
from .index import ChunkIndex
from .models import ArchiveError, Result

MODES = ("hybrid", "semantic", "keyword")
RRF_K = 60


@dataclass
class Filters:
    outlet: str | None = None
    since: str | None = None  # ISO date, inclusive
    until: str | None = None  # ISO date, inclusive (the whole day)

    def __post_init__(self):
        self.since = _iso_date(self.since, "since")
        self.until = _iso_date(self.until, "until")

    def active(self) -> bool:
        return bool(self.outlet or self.since or self.until)

    def sql(self, alias: str = "a") -> tuple[str, list]:
        """A WHERE fragment (always parameterised) over the articles table."""
        clauses, params = [], []
        if self.outlet:
            clauses.append(f"lower({alias}.outlet) = lower(?)")
            params.append(self.outlet)
        if self.since:
            clauses.append(f"{alias}.published >= ?")
            params.append(self.since)
        if self.until:
            clauses.append(f"{alias}.published < ?")
            params.append((date.fromisoformat(self.until) + timedelta(days=1)).isoformat())
        return (" and ".join(clauses) or "1"), params


def _iso_date(value: str | None, name: str) -> str | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value).strip()[:10]).isoformat()
    except ValueError:
        raise ArchiveError(f"--{name}: {value!r} is not a date (use YYYY-MM-DD)") from None


# ---- semantic --------------------------------------------------------------------------------------------


def semantic_hits(db, index: ChunkIndex, vector: np.ndarray, k: int, filters: Filters) -> dict[int, tuple[float, int]]:
    """Best (score, chunk id) per article for one query vector, at least k articles when they exist."""
    allowed = _allowed_chunks(db, filters) if filters.active() else None
    if allowed is not None and not len(allowed):
        return {}
    limit = len(allowed) if allowed is not None else index.ntotal
    fetch = max(k * 8, 64)
    while True:
        scores, ids = index.search(vector, fetch, allowed)
        best = rollup(db, scores[0], ids[0])
        if len(best) >= k or fetch >= limit:
            return best
        fetch *= 4


def rollup(db, scores: np.ndarray, ids: np.ndarray) -> dict[int, tuple[float, int]]:
    """Chunk hits to articles: each article keeps its best chunk (score, chunk id)."""
    valid = [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]
    owners = _chunk_owners(db, [i for _, i in valid])
    best: dict[int, tuple[float, int]] = {}
    for s, i in valid:
        aid = owners.get(i)
        if aid is not None and (aid not in best or s > best[aid][0]):
            best[aid] = (s, i)
    return best


def _chunk_owners(db, chunk_ids: list[int]) -> dict[int, int]:
    out = {}
    for start in range(0, len(chunk_ids), 900):
        part = chunk_ids[start : start + 900]
        q = f"select id, article_id from chunks where id in ({','.join('?' * len(part))})"
        out.update(dict(db.execute(q, part).fetchall()))
    return out


def _allowed_chunks(db, filters: Filters) -> np.ndarray:
    where, params = filters.sql()
    rows = db.execute(f"select c.id from chunks c join articles a on a.id = c.article_id where {where}", params)
    return np.array([r[0] for r in rows], dtype=np.int64)


# ---- keyword ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
STOP_WORDS = frozenset(
    "a an and are as at be but by did do does for from had has have how i if in into is it its of on or that the "
    "their there these they this to was were what when where which who why will with would about after".split()
)


def fts_query(text: str) -> str | None:
    """A natural-language query as a safe FTS5 query: quoted terms OR-ed, stop words dropped."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS] or _WORD.findall(text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words)) or None


def keyword_hits(db, query: str, k: int, filters: Filters) -> dict[int, tuple[float, int | None]]:
    """Articles by FTS5 bm25 (higher is better), with the filters applied in SQL."""
    match = fts_query(query)
    if not match:
        return {}
    where, params = filters.sql()
    sql = (
        "select a.id, -bm25(articles_fts) as score from articles_fts join articles a on a.id = articles_fts.rowid "
        f"where articles_fts match ? and {where} order by bm25(articles_fts) limit ?"
    )
    return {r[0]: (float(r[1]), None) for r in db.execute(sql, [match, *params, k])}


def fuse(*rankings: dict[int, tuple[float, int | None]]) -> dict[int, tuple[float, int | None]]:
    """Reciprocal-rank fusion; each article keeps the first ranking's best chunk for its passage."""
    fused: dict[int, list] = {}
    for ranking in rankings:
        ordered = sorted(ranking.items(), key=lambda kv: -kv[1][0])
        for rank, (aid, (_, chunk)) in enumerate(ordered):
            entry = fused.setdefault(aid, [0.0, chunk])
            entry[0] += 1.0 / (RRF_K + rank + 1)
            entry[1] = entry[1] if entry[1] is not None else chunk
    return {aid: (s, c) for aid, (s, c) in fused.items()}


# ---- results ---------------------------------------------------------------------------------------------


def to_results(db, hits: dict[int, tuple[float, int | None]], k: int, query_words: str = "") -> list[Result]:
    ordered = sorted(hits.items(), key=lambda kv: -kv[1][0])[:k]
    results = []
    for aid, (score, chunk_id) in ordered:
        row = db.execute("select id, url, title, outlet, published, body from articles where id = ?", [aid]).fetchone()
        if row is None:
            continue
        passage = _passage(db, chunk_id, row[5], query_words)
        results.append(Result(row[0], row[1], row[2], row[3], row[4], round(score, 4), passage))
    return results


def _passage(db, chunk_id: int | None, body: str, query_words: str) -> str:
    if chunk_id is not None:
        row = db.execute("select text from chunks where id = ?", [chunk_id]).fetchone()
        if row:
            return row[0]
    return keyword_passage(body, query_words)


def keyword_passage(body: str, query: str, width: int = 600) -> str:
    """The stretch of body around the first query word found (for keyword-only hits)."""
    lowered = body.lower()
    positions = [lowered.find(w) for w in _WORD.findall(query.lower()) if w not in STOP_WORDS]
    positions = [p for p in positions if p >= 0]
    start = max(0, min(positions) - width // 4) if positions else 0
    if start:
        start = body.find(" ", start) + 1
    return body[start : start + width].strip()


def search(
    db: sqlite_utils.Database,
    index: ChunkIndex,
    encoder: Encoder,
    query: str,
    *,
    k: int = 10,
    filters: Filters | None = None,
    mode: str = "semantic",
) -> list[Result]:
    """Articles ranked for a query, in one of MODES."""
    filters = filters or Filters()
    if mode not in MODES:
        raise ArchiveError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not query.strip():
        raise ArchiveError("the query is empty")
    pool = max(k * 3, 30)
    semantic = keyword = {}
    if mode in ("semantic", "hybrid"):
        semantic = semantic_hits(db, index, encoder.encode([query]), pool if mode == "hybrid" else k, filters)
    if mode in ("keyword", "hybrid"):
        keyword = keyword_hits(db, query, pool if mode == "hybrid" else k, filters)
    hits = fuse(semantic, keyword) if mode == "hybrid" else semantic or keyword
    return to_results(db, hits, k, query)


# ---- related coverage ------------------------------------------------------------------------------------


def related(
    db: sqlite_utils.Database,
    index: ChunkIndex,
    article: dict,
    *,
    k: int = 10,
    filters: Filters | None = None,
    dim: int,
) -> list[Result]:
    """Other coverage of an article's story, queried with the article's own chunk vectors.

    A candidate's score is the mean, over the article's chunks, of its best match to that chunk (a soft
    document-to-document similarity), so a story matching the whole article beats one sharing a paragraph.
    The article itself and exact duplicates of its body are dropped.
    """
    filters = filters or Filters()
    rows = db.execute("select id, vector from chunks where article_id = ? order by seq", [article["id"]]).fetchall()
    if not rows:
        return []
    queries = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    excluded = {r[0] for r in db.execute("select id from articles where body_hash = ?", [article["body_hash"]])}
    excluded.add(article["id"])
    allowed = _allowed_chunks(db, filters) if filters.active() else None
    fetch = max((k + len(excluded)) * 8, 64)
    scores, ids = index.search(queries, fetch, allowed)
    per_query = [rollup(db, s, i) for s, i in zip(scores, ids)]
    floors = [min((v[0] for v in q.values()), default=0.0) for q in per_query]
    candidates = set().union(*per_query) - excluded
    hits = {}
    for aid in candidates:
        matches = [q.get(aid, (floor, None)) for q, floor in zip(per_query, floors)]
        best = max((m for m in matches if m[1] is not None), key=lambda m: m[0])
        hits[aid] = (float(np.mean([m[0] for m in matches])), best[1])
    return to_results(db, hits, k)
