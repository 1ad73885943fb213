"""Ranking: semantic, keyword and hybrid search, and related coverage, all rolled up from chunks to articles.

Every function takes an open database, the chunk index and (where it embeds a query) an Encoder, and returns
`Result`s. This is the one place where ranking and joining happen; both shells call it through `Archive`.

The choices below were measured with `python -m benchmarks.quality` (Lee et al. 2005 human similarity,
BBC News category precision@10, NewsArticles known-item search); the module docstrings of the functions
say what won. Near-duplicate groups (archive/dedupe.py) are collapsed into one row per group, the other
members' outlets listed in `also`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import sqlite_utils

from . import dedupe, params, store, stories, terms
from .embed import Encoder
from .index import ChunkIndex
from .models import ArchiveError, Result
from .params import DEFAULT_WEIGHTS, RelatedWeights  # (one source with stories; re-exported)

MODES = params.MODES
RRF_K = 60
ROLLUPS = ("max", "top2")
SECOND_CHUNK_WEIGHT = 0.25  # rollup "top2": best chunk + this x the second best


@dataclass
class Filters:
    outlet: str | None = None
    since: str | None = None  # ISO date, inclusive
    until: str | None = None  # ISO date, inclusive (the whole day)

    def __post_init__(self):
        self.since = params.parse_date(self.since, "since")
        self.until = params.parse_date(self.until, "until")

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

    def within(self, published: str | None, days: int | None) -> Filters:
        """These filters narrowed to `days` either side of a date (unchanged without a date or a window)."""
        if days is None or not published:
            return self
        try:
            day = date.fromisoformat(str(published)[:10])
        except ValueError:
            return self
        since = (day - timedelta(days=days)).isoformat()
        until = (day + timedelta(days=days)).isoformat()
        return Filters(self.outlet, max(filter(None, [self.since, since])), min(filter(None, [self.until, until])))


@dataclass
class GroupedResult(Result):
    """A Result standing for a near-duplicate group: `also` lists the other members' outlets.

    The JSON shape is Result's; the extra key "also" appears only when the group has other outlets.
    """

    also: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = super().to_dict()
        if not self.also:
            d.pop("also", None)
        return d


# ---- semantic --------------------------------------------------------------------------------------------


def semantic_hits(
    db, index: ChunkIndex, vector: np.ndarray, k: int, filters: Filters, how: str = "max"
) -> dict[int, tuple[float, int]]:
    """Top articles (score, best chunk id) for one query vector, at least k articles when they exist.

    A selective filter is applied before the search (a FAISS ID selector over the allowed chunks), so a filter
    that matches 1% of the archive still yields k articles when k exist; a broad one is applied to the hits of
    a deeper unfiltered search (see `scope`). A lossy index (ivf-sq8, ivf-pq) only proposes candidates: they
    are re-scored from the stored vectors, so every score is the true cosine.
    """
    where = scope(db, filters)
    if where.allowed is not None and not len(where.allowed):
        return {}
    limit = len(where.allowed) if where.allowed is not None else index.ntotal
    fetch = max(k * 8, 64) * (BROAD_FETCH if where.after else 1)

    def exact(ids: np.ndarray) -> np.ndarray:
        return _stored_vectors(db, ids, index.dim)

    while True:
        scores, ids = index.search(vector, fetch, where.allowed, exact=exact)
        best = where.keep(db, rollup(db, scores[0], ids[0], how))
        if len(best) >= k or fetch >= limit:
            return best
        fetch *= 4


def _stored_vectors(db, ids: np.ndarray, dim: int) -> np.ndarray:
    """The stored vectors of these chunk ids, in order; NaN rows for chunks no longer in the database (a
    reader's index may be a generation behind a delete), which re-scoring drops."""
    out = np.full((len(ids), dim), np.nan, np.float32)
    row = {int(i): n for n, i in enumerate(ids)}
    for cid, blob in store.select_in(db, "select id, vector from chunks where id in ({marks})", [int(i) for i in ids]):
        out[row[cid]] = np.frombuffer(blob, dtype=np.float32)
    return out


def rollup(db, scores: np.ndarray, ids: np.ndarray, how: str = "max") -> dict[int, tuple[float, int]]:
    """Chunk hits to articles: best chunk score ("max"), or best plus a quarter of the second ("top2").

    Measured on NewsArticles known-item search (subtitles as queries): "max" wins; the best chunk is the
    passage either way.
    """
    valid = [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]
    owners = _chunk_owners(db, [i for _, i in valid])
    per: dict[int, list[tuple[float, int]]] = {}
    for s, i in valid:
        aid = owners.get(i)
        if aid is not None:
            per.setdefault(aid, []).append((s, i))
    out = {}
    for aid, hits in per.items():
        hits.sort(reverse=True)
        score = hits[0][0]
        if how == "top2" and len(hits) > 1:
            score += SECOND_CHUNK_WEIGHT * hits[1][0]
        out[aid] = (score, hits[0][1])
    return out


def _chunk_owners(db, chunk_ids: list[int]) -> dict[int, int]:
    return dict(store.select_in(db, "select id, article_id from chunks where id in ({marks})", chunk_ids))


SELECTIVE_SHARE = 0.25  # a filter keeping less than this share of articles is applied inside FAISS
BROAD_FETCH = 4  # a broader one is applied to the hits, of a search this much deeper (1 / SELECTIVE_SHARE)


@dataclass
class Scope:
    """Where a search looks: `allowed` chunk ids (a selective filter, inside FAISS), or `after`, a broad filter
    applied to the hits' articles; neither without a filter."""

    allowed: np.ndarray | None = None
    after: Filters | None = None

    def keep(self, db, hits: dict[int, tuple]) -> dict[int, tuple]:
        """The hits (by article id) whose articles pass the broad filter (all of them when there is none)."""
        if self.after is None or not hits:
            return hits
        passing = self.passing(db, hits)
        return {a: h for a, h in hits.items() if a in passing}

    def passing(self, db, article_ids) -> set[int]:
        where, params = self.after.sql() if self.after else ("1", [])
        sql = f"select a.id from articles a where {where} and a.id in ({{marks}})"
        return {r[0] for r in store.select_in(db, sql, list(article_ids), *params)}


def scope(db, filters: Filters) -> Scope:
    """How to apply the filters: estimate the share of articles they keep by counting matches up to
    SELECTIVE_SHARE of the archive (a bounded count). Listing every chunk id for a filter most articles pass
    (since=1900-01-01) would cost more than searching a little deeper and dropping the few that fail."""
    if not filters.active():
        return Scope()
    where, params = filters.sql()
    top = db.execute("select max(id) from articles").fetchone()[0] or 0  # the article count, or more after deletes
    cap = max(1, int(top * SELECTIVE_SHARE))
    sql = f"select count(*) from (select 1 from articles a where {where} limit ?)"
    if db.execute(sql, [*params, cap]).fetchone()[0] >= cap:
        return Scope(after=filters)
    return Scope(allowed=_allowed_chunks(db, filters))


def _allowed_chunks(db, filters: Filters) -> np.ndarray:
    where, params = filters.sql()
    rows = db.execute(f"select c.id from chunks c join articles a on a.id = c.article_id where {where}", params)
    return np.array([r[0] for r in rows], dtype=np.int64)


# ---- keyword ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
STOP_WORDS = terms.STOP_WORDS


def fts_query(text: str) -> str | None:
    """A natural-language query as a safe FTS5 query: every word quoted (so no FTS5 syntax is ever
    interpreted), OR-ed (no word is required), stop words dropped unless nothing else is left."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS] or _WORD.findall(text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words)) or None


def keyword_hits(db, query: str, k: int, filters: Filters) -> dict[int, tuple[float, int | None]]:
    """Articles by FTS5 bm25 (higher is better), with the filters applied in SQL."""
    return _bm25(db, fts_query(query), k, filters)


def _bm25(db, match: str | None, k: int, filters: Filters, only: list[int] | None = None) -> dict:
    if not match:
        return {}
    where, params = filters.sql()
    if only is not None:
        where += f" and a.id in ({','.join('?' * len(only))})"
        params = [*params, *only]
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


def to_results(
    db,
    hits: dict[int, tuple[float, int | None]],
    k: int,
    query_words: str = "",
    *,
    exclude_groups_of: int | None = None,
    prefer_other_than: str | None = None,
) -> list[Result]:
    """The top k hits as Results, one per near-duplicate group (the best-ranked member stands for it)."""
    ordered = sorted(hits.items(), key=lambda kv: -kv[1][0])
    if prefer_other_than is not None:
        outlets = _outlets(db, [aid for aid, _ in ordered])
        ordered.sort(key=lambda kv: (outlets.get(kv[0]) or "").lower() == prefer_other_than.lower())
    results: list[Result] = []
    seen: set[int] = set()
    if exclude_groups_of is not None:
        seen |= {m for m, _ in dedupe.group_members(db, [exclude_groups_of])[exclude_groups_of]}
    step = max(k * 2, 20)
    for start in range(0, len(ordered), step):
        part = [kv for kv in ordered[start : start + step] if kv[0] not in seen]
        groups = dedupe.group_members(db, [aid for aid, _ in part])
        for aid, (score, chunk_id) in part:
            if aid in seen:
                continue
            members = groups[aid]
            seen |= {m for m, _ in members}
            row = db.execute("select id, url, title, outlet, published from articles where id = ?", [aid]).fetchone()
            if row is None:
                continue
            also = list(dict.fromkeys(o for m, o in members if m != aid and o and o != row[3]))
            passage, chunk_id = _passage(db, aid, chunk_id, query_words)
            results.append(
                GroupedResult(
                    row[0], row[1], row[2], row[3], row[4], round(score, 4), passage, chunk_id=chunk_id, also=also
                )
            )
            if len(results) >= k:
                return _with_stories(db, results)
    return _with_stories(db, results)


def _with_stories(db, results: list[Result]) -> list[Result]:
    """Each result's story id (for its link to the story page)."""
    story_of = stories.story_ids(db, [r.id for r in results])
    for r in results:
        r.story_id = story_of.get(r.id)
    return results


def _outlets(db, ids: list[int]) -> dict[int, str | None]:
    return dict(store.select_in(db, "select id, outlet from articles where id in ({marks})", ids))


def _passage(db, article_id: int, chunk_id: int | None, query_words: str) -> tuple[str, int | None]:
    """(passage, its chunk id): the hit's best chunk; for a keyword hit, the stretch around a query word in the
    first chunk holding one, else the lead chunk. Chunk texts only: a hit never reads its whole body (2 MB)."""
    if chunk_id is not None:
        row = db.execute("select text from chunks where id = ?", [chunk_id]).fetchone()
        if row:
            return row[0], chunk_id
    words = [w for w in dict.fromkeys(_WORD.findall(query_words.lower())) if w not in STOP_WORDS][:8]
    holds = " or ".join(["instr(lower(text), ?) > 0"] * len(words)) or "1"
    sql = f"select id, text from chunks where article_id = ? and ({holds}) order by seq limit 1"
    row = db.execute(sql, [article_id, *words]).fetchone()
    lead = "select id, text from chunks where article_id = ? order by seq limit 1"
    row = row or db.execute(lead, [article_id]).fetchone()
    if row is None:  # an article without chunks (one `archive verify` reports): the start of its body
        lead = db.execute("select substr(body, 1, 600) from articles where id = ?", [article_id]).fetchone()
        return (lead[0] if lead else "") or "", None
    return keyword_passage(row[1], query_words), row[0]


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
    index: ChunkIndex | None,
    encoder: Encoder | None,
    query: str,
    *,
    k: int = params.DEFAULT_K,
    filters: Filters | None = None,
    mode: str = params.DEFAULT_MODE,
    rollup_how: str = "max",
) -> list[Result]:
    """Articles ranked for a query, in one of MODES, one row per near-duplicate group (keyword mode needs no
    index and no encoder)."""
    filters = filters or Filters()
    mode = params.check_mode(mode)
    if not query.strip():  # (no length cap here: the shells cap what the public may send, params.MAX_QUERY_CHARS)
        raise ArchiveError("the query is empty")
    pool = max(k * 3, 30)  # more than k: fusion needs depth, and groups collapse
    semantic = keyword = {}
    if mode in ("semantic", "hybrid"):
        semantic = semantic_hits(db, index, encoder.encode_queries([query]), pool, filters, rollup_how)
    if mode in ("keyword", "hybrid"):
        keyword = keyword_hits(db, query, pool, filters)
    hits = fuse(semantic, keyword) if mode == "hybrid" else semantic or keyword
    return to_results(db, hits, k, query)


# ---- related coverage ------------------------------------------------------------------------------------

MLT_TERMS = 25  # keyword candidates: a full-text OR query of the article's most distinctive words


def related(
    db: sqlite_utils.Database,
    index: ChunkIndex,
    article: dict,
    *,
    k: int = 10,
    filters: Filters | None = None,
    dim: int,
    mode: str = "hybrid",
    window: int | None = None,
    other_outlets: bool = False,
    weights: RelatedWeights = DEFAULT_WEIGHTS,
) -> list[Result]:
    """Other coverage of an article's story, one row per near-duplicate group, best first.

    Candidates come from the article's own chunk vectors and their mean (FAISS, pre-filtered); in keyword
    mode from a full-text OR query of its most distinctive words. Each candidate is then scored exactly:
    - semantic: the mean of the soft chunk-to-chunk match in both directions (each chunk's best match in the
      other article, averaged) and the cosine of the two articles' mean vectors. Every chunk is embedded with
      the title, so the title counts in every part of the article.
    - keyword: the TF-IDF cosine of the two articles' stored word counts (archive/terms.py).
    - hybrid: 0.5 semantic + 0.5 keyword: same-story coverage shares names and places as well as meaning.
    The article itself and its (near) duplicates are dropped. `window` keeps articles published within that
    many days of it; `other_outlets` ranks other outlets' coverage before its own outlet's.
    """
    if mode not in MODES:
        raise ArchiveError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    filters = (filters or Filters()).within(article.get("published"), window)
    scores = related_scores(db, index, article, k=k, filters=filters, dim=dim, mode=mode, weights=weights)
    prefer = (article.get("outlet") or "") if other_outlets else None
    results = to_results(db, scores, k, exclude_groups_of=article["id"], prefer_other_than=prefer)
    for r in results:  # the split the pages show: "Same story" above a calibrated score, else "Related topics"
        r.same_story = stories.same_story(r.score, mode, article.get("published"), r.published)
    return results


def related_scores(
    db,
    index: ChunkIndex,
    article: dict,
    *,
    k: int,
    filters: Filters,
    dim: int,
    mode: str = "hybrid",
    weights: RelatedWeights = DEFAULT_WEIGHTS,
) -> dict[int, tuple[float, int | None]]:
    """Candidate article id -> (score, best matching chunk id) for related coverage (see `related`)."""
    aid = article["id"]
    own = _article_vectors(db, [aid], dim, cap=QUERY_CHUNKS).get(aid)
    excluded = {m for m, _ in dedupe.group_members(db, [aid])[aid]} | {aid}
    pool = max(k * 4, 40) + len(excluded)
    candidates: set[int] = set()
    if mode != "keyword" and own is not None:
        candidates |= _vector_candidates(db, index, own[0], pool, filters)
    if mode == "keyword" or own is None:  # (hybrid gained nothing from these on the harness; they cost most)
        candidates |= set(_bm25(db, _or_query(terms.top_terms(db, aid, MLT_TERMS)), pool, filters))
    candidates -= excluded
    if not candidates:
        return {}
    keyword = terms.similarity(db, aid, candidates) if mode != "semantic" else {}
    if mode == "keyword":
        return {c: (keyword[c], None) for c in candidates}
    vectors = _article_vectors(db, list(candidates), dim, cap=QUERY_CHUNKS)
    out = {}
    for c in candidates:
        if c not in vectors:
            continue
        sem, chunk = (
            _semantic_similarity(own[0], *vectors[c], weights.semantic_score) if own is not None else (0.0, None)
        )
        if mode == "hybrid":
            sem = (1 - weights.keyword_weight) * sem + weights.keyword_weight * keyword.get(c, 0.0)
        out[c] = (sem, chunk)
    return out


def _vector_candidates(db, index: ChunkIndex, vectors: np.ndarray, pool: int, filters: Filters) -> set[int]:
    """The `pool` articles whose chunks rank best for any of these chunk vectors or their mean."""
    where = scope(db, filters)
    if where.allowed is not None and not len(where.allowed):
        return set()
    queries = np.vstack([vectors, _unit(vectors.mean(axis=0))])
    fetch = min(max(pool * 3, 64) * (BROAD_FETCH if where.after else 1), index.ntotal)
    _, ids = index.search(queries, fetch, where.allowed)
    owners = _chunk_owners(db, [int(i) for i in np.unique(ids) if i >= 0])
    if where.after:
        passing = where.passing(db, set(owners.values()))
        owners = {c: a for c, a in owners.items() if a in passing}
    best: dict[int, int] = {}
    for rank_row in ids:
        for rank, cid in enumerate(rank_row):
            owner = owners.get(int(cid))
            if owner is not None:
                best[owner] = min(best.get(owner, rank), rank)
    return {a for a, _ in sorted(best.items(), key=lambda kv: kv[1])[:pool]}


def _or_query(words: list[str]) -> str | None:
    return " OR ".join(f'"{w}"' for w in words) or None


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)


QUERY_CHUNKS = 32  # related coverage compares at most this many chunks of an article (NewsArticles' longest: 29)
LEAD_CHUNKS = 8  # of those, the first (title and lead); the rest spread evenly over the article to its end


def chunk_sample(n: int, cap: int = QUERY_CHUNKS) -> list[int]:
    """Positions of at most `cap` of an article's n chunks: all of a normal article; of a long one (a 2 MB body
    has ~2,500) the lead and an even spread, so related coverage costs the same for any length."""
    if n <= cap:
        return list(range(n))
    spread = np.linspace(LEAD_CHUNKS, n - 1, cap - LEAD_CHUNKS).round().astype(int).tolist()
    return sorted({*range(LEAD_CHUNKS), *spread})


def _article_vectors(db, ids: list[int], dim: int, cap: int | None = None) -> dict[int, tuple[np.ndarray, list[int]]]:
    """Each article's chunk vectors in order (rows) with their chunk ids, from the database (the truth); with
    `cap`, an article of more chunks gives only its `chunk_sample`."""
    long = _chunk_counts(db, ids, over=cap) if cap else {}
    vecs: dict[int, list] = {}
    cids: dict[int, list[int]] = {}
    q = "select article_id, id, vector from chunks where article_id in ({marks}) order by article_id, seq"
    rows = store.select_in(db, q, [i for i in ids if i not in long])
    for aid in long:
        seqs = [r[0] for r in db.execute("select seq from chunks where article_id = ? order by seq", [aid])]
        picked = [seqs[i] for i in chunk_sample(len(seqs), cap)]
        q = "select article_id, id, vector from chunks where article_id = ? and seq in ({marks}) order by seq"
        rows += store.select_in(db, q, picked, aid)
    for aid, cid, blob in rows:
        vecs.setdefault(aid, []).append(np.frombuffer(blob, dtype=np.float32))
        cids.setdefault(aid, []).append(cid)
    return {aid: (np.vstack(v).reshape(len(v), dim), cids[aid]) for aid, v in vecs.items()}


def _chunk_counts(db, ids: list[int], over: int) -> dict[int, int]:
    """Chunk counts of the articles with more than `over` chunks (from the (article_id, seq) index alone)."""
    q = f"select article_id, count(*) from chunks where article_id in ({{marks}}) group by 1 having count(*) > {over:d}"
    return dict(store.select_in(db, q, ids))


def _semantic_similarity(a: np.ndarray, b: np.ndarray, b_ids: list[int], how: str = "both") -> tuple[float, int]:
    """Soft chunk matching both ways, averaged with the cosine of the mean vectors; and b's best chunk.

    `how` (RelatedWeights.semantic_score): "both", or "chamfer" alone, "mean" (cosine of mean vectors) alone,
    "lead" (first chunks only: title and lead).
    """
    sims = a @ b.T
    best = int(sims.max(axis=0).argmax())
    if how == "lead":
        return float(sims[0, 0]), b_ids[best]
    chamfer = 0.5 * (float(sims.max(axis=1).mean()) + float(sims.max(axis=0).mean()))
    means = float(_unit(a.mean(axis=0)) @ _unit(b.mean(axis=0)))
    score = {"chamfer": chamfer, "mean": means}.get(how, 0.5 * (chamfer + means))
    return score, b_ids[best]
