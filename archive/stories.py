"""Stories: the articles about one event and its direct follow-ups, grouped at load time.

"Same story" is a pairwise decision on the related-coverage score (archive/search.py: half semantic, half
TF-IDF cosine): two articles are on one story when that score reaches SAME_STORY[mode]. The thresholds were
calibrated with `python -m benchmarks.stories` on benchmarks/story_pairs.jsonl, pairs of NewsArticles read
and labelled by hand (same event or a direct follow-up, versus a shared topic only).

Assignment is incremental and single-link: a new article is scored against the articles published within
WINDOW_DAYS of it (an undated one: the RECENT most recently loaded), the CANDIDATES closest by mean vector
first; it joins the story of those at or above the threshold, or starts its own. When it reaches the
threshold with members of several stories, it bridges them and they merge (the oldest story id stays). A batch
is scored at once: one matrix product for the candidates, one read each of their vectors and signatures.
Deleting an article that bridged two stories splits them again (`split`: only that story's members).
Near-duplicate copies (archive/dedupe.py) always share a story. Everything here runs inside the caller's
transaction (the load batch's, the delete's) and reads only what is already stored: the chunk vectors, the
keyword signatures and the near-duplicate groups.

Tables: `stories` (id, title: the headline of its most central article, article_id: that article, first and
last dates, outlets as a JSON list, size) and `article_story` (article_id, story_id, day, the article's unit
mean vector as float16), a separate table rather than a column of `articles`, whose schema the store owns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np

from . import store, terms
from .models import ArchiveError
from .params import DEFAULT_WEIGHTS
from .store import transaction

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA = """
create table if not exists stories (id integer primary key autoincrement, title text, article_id integer,
  first text, last text, outlets text, size integer, last_article integer);
create index if not exists stories_last on stories (last);
create index if not exists stories_newest on stories ((last is null), last desc, id desc);
create index if not exists stories_biggest on stories (size desc, last desc, id desc);
create table if not exists article_story (article_id integer primary key, story_id integer not null, day text,
  vector blob);
create index if not exists article_story_story on article_story (story_id);
create index if not exists article_story_day on article_story (day);
"""

# Related-coverage score at or above which two articles are on the same story, per related mode
# (calibrated by benchmarks/stories.py on benchmarks/story_pairs.jsonl).
# On those pairs (benchmarks/stories.py), same-story pairs were a median 1 day apart (90% within 5, the most
# 24) and other pairs 17: requiring two dated articles to lie within SAME_STORY_DAYS raised the hybrid F1 from
# 0.862 to 0.907 (5-fold cross-validated: 0.847 to 0.891).
SAME_STORY = {"hybrid": 0.47, "semantic": 0.67, "keyword": 0.28}
SAME_STORY_DAYS = 14
WINDOW_DAYS = SAME_STORY_DAYS  # candidates published within this many days either side (chains go further)
RECENT = 2000  # an undated article is compared with this many most recently loaded articles
CANDIDATES = 12  # closest by mean vector, then scored exactly
MIN_COSINE = 0.45  # ... among those at least this close: no labelled same-story pair scoring 0.45 was below 0.5
# A delete re-scores the links of the story it leaves: links within SPLIT_MARGIN under the threshold hold, because
# the keyword half's idf moves as the archive grows (a hash-encoder link made at 0.47 scored 0.467 after later
# batches; no real-model story of benchmarks/stories.py's archive split after a rebuild in batches of 16).
SPLIT_MARGIN = 0.01


INDEXES = ("stories_newest", "stories_biggest")  # the stories index page's two orders (added after the tables)


def ensure_tables(db: sqlite_utils.Database) -> None:
    """Make the tables and indexes that are missing (writers only; outside a transaction: it commits)."""
    if not {"stories", "article_story"} <= set(db.table_names()) or _missing_indexes(db):
        db.conn.executescript(SCHEMA)


def _missing_indexes(db) -> list[str]:
    names = {r[0] for r in db.execute("select name from sqlite_master where type = 'index'")}
    return [i for i in INDEXES if i not in names]


def same_story(score: float, mode: str = "hybrid", published: str | None = None, other: str | None = None) -> bool:
    """Is a related-coverage score (of `mode`) between articles published on these dates a same-story pair?"""
    if score < SAME_STORY.get(mode, SAME_STORY["hybrid"]):
        return False
    days, other_day = _day(published), _day(other)
    return (
        days is None
        or other_day is None
        or abs((date.fromisoformat(days) - date.fromisoformat(other_day)).days) <= SAME_STORY_DAYS
    )


# ---- writes (inside the caller's transaction) ----------------------------------------------------------------


class _Pool:
    """The already-assigned articles a batch is compared with: ids, stories, days and unit mean vectors."""

    UNDATED = -(10**9)  # an undated article is inside every window

    def __init__(self, dim: int = 0) -> None:
        self.ids: list[int] = []
        self.story: dict[int, int] = {}  # the pool's and the batch's articles (a merge renames stories here too)
        self.vectors = np.zeros((0, dim), np.float32)
        self.days = np.zeros(0, np.int64)
        self.merged: dict[int, int] = {}  # story id -> the story it merged into, during this batch
        self.next_story = 1  # the id a new story takes (assign reads it from the table)

    def extend(self, rows: list[tuple]) -> None:
        """Add (article_id, story_id, day, float16 vector blob) rows, in one array operation."""
        if not rows:
            return
        mat = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float16).reshape(len(rows), -1)
        self.vectors = mat.astype(np.float32) if not len(self.ids) else np.vstack([self.vectors, mat])
        self.days = np.concatenate([self.days, [_ordinal(r[2]) for r in rows]])
        self.ids += [r[0] for r in rows]
        self.story.update((r[0], r[1]) for r in rows)

    def rename(self, old: int, new: int) -> None:
        self.merged[old] = new
        for k, s in self.story.items():
            if s == old:
                self.story[k] = new

    def current(self, sid: int) -> int:
        """A story id as it is now (after the batch's merges)."""
        while sid in self.merged:
            sid = self.merged[sid]
        return sid


def _next_story_id(db) -> int:
    """The id the next new story takes: ids are never reused (the table is AUTOINCREMENT)."""
    seq = db.execute("select seq from sqlite_sequence where name = 'stories'").fetchone()
    top = db.execute("select max(id) from stories").fetchone()[0]
    return max(seq[0] if seq else 0, top or 0) + 1


def _ordinal(day: str | None) -> int:
    return date.fromisoformat(day).toordinal() if day else _Pool.UNDATED


def assign(
    db: sqlite_utils.Database,
    article_ids: Iterable[int],
    threshold: float | None = None,
    min_cosine: float = MIN_COSINE,
) -> dict[int, int]:
    """Inside the caller's transaction: give each article a story (re-assign one already in a story).

    Returns article id -> story id. `threshold` (default SAME_STORY["hybrid"]) and `min_cosine` are the
    real model's; another encoder's vectors may need others. Each read is done once per batch (the load's
    cost per article: `python -m benchmarks.stories --part cost`)."""
    ids = sorted({int(i) for i in article_ids if i is not None})
    if not ids:
        return {}
    threshold = SAME_STORY["hybrid"] if threshold is None else threshold
    _detach(db, ids)
    published = dict(store.select_in(db, "select id, published from articles where id in ({marks})", ids))
    ids = [a for a in ids if a in published]
    if not ids:
        return {}
    chunk_vecs = _chunk_vectors(db, ids)
    days = {aid: _day(published[aid]) for aid in ids}
    vecs = _means(chunk_vecs)
    pool = _pool(db, [d for d in days.values() if d], None in days.values(), ids[0])
    pool.next_story = _next_story_id(db)
    candidates = _candidates(pool, ids, vecs, days, min_cosine)
    scorer = _Scorer(db, chunk_vecs, {c for cs in candidates.values() for c in cs})
    groups = _duplicate_stories(db, ids)
    for aid in ids:
        pool.story[aid] = _place(db, aid, scorer.scores(aid, candidates[aid]), pool, groups.get(aid, set()), threshold)
    out = {aid: pool.story[aid] for aid in ids}
    db.conn.executemany(
        "insert or replace into article_story values (?, ?, ?, ?)",
        [(a, out[a], days[a], vecs[a].astype(np.float16).tobytes() if a in vecs else None) for a in ids],
    )
    _summarise_many(db, set(out.values()))
    return out


def _candidates(pool: _Pool, ids: list[int], vecs: dict, days: dict, min_cosine: float) -> dict[int, list[int]]:
    """Each article's CANDIDATES closest (by mean vector, at least min_cosine) among the pool and the batch's
    earlier articles, within WINDOW_DAYS of its date (an undated article, or an undated other: any date)."""
    out: dict[int, list[int]] = {aid: [] for aid in ids}
    mine = [a for a in ids if a in vecs]
    if not mine:
        return out
    batch = np.vstack([vecs[a] for a in mine])
    own_days = np.array([_ordinal(days[a]) for a in mine])
    every = np.vstack([pool.vectors, batch]) if len(pool.ids) else batch
    every_days = np.concatenate([pool.days, own_days])
    every_ids = pool.ids + mine
    sims = batch @ every.T
    mine_d, other_d = own_days[:, None], every_days[None, :]
    inside = (mine_d == _Pool.UNDATED) | (other_d == _Pool.UNDATED) | (np.abs(mine_d - other_d) <= WINDOW_DAYS)
    inside[:, len(pool.ids) :] &= np.tri(len(mine), k=-1, dtype=bool)  # only the batch's earlier articles
    sims = np.where(inside & (sims >= min_cosine), sims, -np.inf)
    n = min(CANDIDATES, sims.shape[1])
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    found = np.take_along_axis(sims, top, axis=1) > -np.inf
    every_ids = np.array(every_ids)
    for row, aid in enumerate(mine):
        out[aid] = every_ids[top[row][found[row]]].tolist()
    return out


class _Scorer:
    """The hybrid related-coverage score (archive/search.py, DEFAULT_WEIGHTS) of a batch's articles with their
    candidates; every read (chunk vectors, keyword signatures, document frequencies) is one query per batch."""

    def __init__(self, db, chunk_vecs: dict[int, np.ndarray], candidates: set[int]) -> None:
        self.chunks = {**chunk_vecs, **_chunk_vectors(db, sorted(candidates - set(chunk_vecs)))}
        self.means = _means(self.chunks)
        sigs = {a: s for a, s in terms.signatures(db, sorted(set(chunk_vecs) | candidates)).items() if len(s)}
        self.vocab = np.unique(np.concatenate([s[:, 0] for s in sigs.values()])) if sigs else np.zeros(0, np.int32)
        self.keywords = _tfidf(sigs, self.vocab, terms._idf(db, self.vocab))

    def scores(self, aid: int, candidates: list[int]) -> dict[int, float]:
        own = self.chunks.get(aid)
        candidates = [c for c in candidates if c in self.chunks]
        if own is None or not candidates:
            return {}
        w = DEFAULT_WEIGHTS
        semantic = self._semantic(aid, own, candidates, w.semantic_score)
        keyword = self._keyword(aid, candidates)
        return {
            c: float((1 - w.keyword_weight) * s + w.keyword_weight * k)
            for c, s, k in zip(candidates, semantic, keyword)
        }

    def _semantic(self, aid: int, own: np.ndarray, candidates: list[int], how: str) -> np.ndarray:
        """search._semantic_similarity for many candidates at once ("both": soft chunk matching both ways,
        averaged with the cosine of the mean vectors); the other variants one by one through it."""
        theirs = [self.chunks[c] for c in candidates]
        if how != "both":
            from .search import _semantic_similarity  # search imports this module

            return np.array([_semantic_similarity(own, t, list(range(len(t))), how)[0] for t in theirs])
        lengths = np.array([len(t) for t in theirs])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        sims = own @ np.vstack(theirs).T
        mine_to_theirs = np.maximum.reduceat(sims, starts, axis=1).mean(axis=0)
        theirs_to_mine = np.add.reduceat(sims.max(axis=0), starts) / lengths
        means = np.vstack([self.means[c] for c in candidates]) @ self.means[aid]
        return 0.5 * (0.5 * (mine_to_theirs + theirs_to_mine) + means)

    def _keyword(self, aid: int, candidates: list[int]) -> np.ndarray:
        """TF-IDF cosine (terms.similarity) with each candidate: its weights read off the article's dense vector."""
        if aid not in self.keywords:
            return np.zeros(len(candidates))
        dense = np.zeros(len(self.vocab))
        cols, weights = self.keywords[aid]
        dense[cols] = weights
        return np.array(
            [dense[self.keywords[c][0]] @ self.keywords[c][1] if c in self.keywords else 0.0 for c in candidates]
        )


def _means(chunks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Each article's unit mean chunk vector, all at once."""
    if not chunks:
        return {}
    lengths = np.array([len(v) for v in chunks.values()])
    sums = np.add.reduceat(np.vstack(list(chunks.values())), np.cumsum(lengths) - lengths, axis=0)
    means = sums / lengths[:, None]
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return dict(zip(chunks, (means / np.where(norms == 0, 1.0, norms)).astype(np.float32)))


def _tfidf(sigs: dict[int, np.ndarray], vocab: np.ndarray, idf: np.ndarray) -> dict[int, tuple]:
    """terms._weights of many signatures at once: article -> (columns in vocab, unit sublinear tf x idf)."""
    if not sigs:
        return {}
    pairs = np.vstack(list(sigs.values()))
    lengths = np.array([len(s) for s in sigs.values()])
    starts = np.cumsum(lengths) - lengths
    cols = np.searchsorted(vocab, pairs[:, 0])
    w = (1.0 + np.log(pairs[:, 1])) * idf[cols]
    norms = np.sqrt(np.add.reduceat(w * w, starts))
    w /= np.repeat(np.where(norms == 0, 1.0, norms), lengths)
    return {a: (cols[i : i + n], w[i : i + n]) for a, i, n in zip(sigs, starts, lengths)}


def forget(
    db: sqlite_utils.Database,
    article_ids: Iterable[int],
    threshold: float | None = None,
    min_cosine: float = MIN_COSINE,
) -> None:
    """Inside the caller's (delete) transaction: take articles out of their stories; an empty story goes, and a
    story whose remaining members no longer connect (a deleted article bridged them) splits (see `split`)."""
    ids = [int(i) for i in article_ids]
    if ids and "article_story" in db.table_names():
        for sid in _detach(db, ids):
            split(db, sid, threshold, min_cosine)


def split(
    db: sqlite_utils.Database, story_id: int, threshold: float | None = None, min_cosine: float = MIN_COSINE
) -> list[int]:
    """Inside the caller's transaction: split a story into its connected parts, and return their story ids.

    Two members connect as assignment joins them (near-duplicate copies; or within WINDOW_DAYS, mean vectors at
    least `min_cosine` apart and a score at or above `threshold`, each less SPLIT_MARGIN), so a story only its
    deleted bridge held together falls apart. The part with the oldest article keeps the id. Costs one story's
    pairs, no more."""
    threshold = (SAME_STORY["hybrid"] if threshold is None else threshold) - SPLIT_MARGIN
    rows = db.execute("select article_id, day, vector from article_story where story_id = ? order by article_id",
                      [story_id]).fetchall()  # fmt: skip
    if len(rows) < 2:
        return [story_id] if rows else []
    parent = {r[0]: r[0] for r in rows}

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in _links(db, rows, threshold, min_cosine - SPLIT_MARGIN):
        parent[root(a)] = root(b)
    parts: dict[int, list[int]] = {}
    for aid, _, _ in rows:
        parts.setdefault(root(aid), []).append(aid)
    out = [story_id]
    for members in sorted(parts.values())[1:]:  # the part holding the oldest article keeps the story
        sid = db.execute("insert into stories (size) values (0)").lastrowid
        for part, marks in store.in_slices(members):
            db.execute(f"update article_story set story_id = ? where article_id in ({marks})", [sid, *part])
        _summarise(db, sid)
        out.append(sid)
    if len(out) > 1:
        _summarise(db, story_id)
    return out


def _links(db, rows: list[tuple], threshold: float, min_cosine: float) -> Iterable[tuple[int, int]]:
    """The member pairs of one story that assignment would join (rows: article_id, day, float16 mean vector)."""
    ids = [r[0] for r in rows]
    yield from (tuple(p) for p in _duplicate_pairs(db, ids))
    with_vec = [r for r in rows if r[2]]
    if len(with_vec) < 2:
        return
    mat = np.vstack([np.frombuffer(r[2], dtype=np.float16) for r in with_vec]).astype(np.float32)
    days = np.array([_ordinal(r[1]) for r in with_vec])
    near = ((days[:, None] == _Pool.UNDATED) | (days[None, :] == _Pool.UNDATED)
            | (np.abs(days[:, None] - days[None, :]) <= WINDOW_DAYS)) & (mat @ mat.T >= min_cosine)  # fmt: skip
    scorer = _Scorer(db, _chunk_vectors(db, [r[0] for r in with_vec]), set())
    for i, (aid, _, _) in enumerate(with_vec):
        later = [with_vec[j][0] for j in np.flatnonzero(near[i, i + 1 :]) + i + 1]
        for other, score in scorer.scores(aid, later).items():
            if score >= threshold:
                yield aid, other


def _duplicate_pairs(db, ids: list[int]) -> list[tuple[int, int]]:
    """Pairs of these articles in one near-duplicate group."""
    if "article_groups" not in db.table_names():
        return []
    sql = (
        "select g.article_id, m.article_id from article_groups g join article_groups m on m.group_id = g.group_id "
        "where g.article_id in ({marks}) and m.article_id > g.article_id"
    )
    wanted = set(ids)
    return [(a, b) for a, b in store.select_in(db, sql, ids) if b in wanted]


def rebuild(db: sqlite_utils.Database, batch: int = 500) -> int:
    """Forget every story and assign all articles again, in id order (as they were loaded); own transactions."""
    ensure_tables(db)
    with transaction(db):
        db.execute("delete from article_story")
        db.execute("delete from stories")
        db.execute("delete from sqlite_sequence where name = 'stories'")
    ids = store.article_ids(db)
    for start in range(0, len(ids), batch):
        with transaction(db):
            assign(db, ids[start : start + batch])
    return len(ids)


def _place(db, aid: int, scores: dict[int, float], pool: _Pool, dup_stories: set[int], threshold: float) -> int:
    """The story the article joins (or starts); the stories it bridges merge into the oldest of them."""
    matched = {pool.current(s) for s in dup_stories} | {
        pool.story[c] for c, score in scores.items() if score >= threshold
    }
    if not matched:
        pool.next_story += 1  # the row itself is written with the batch's summaries
        return pool.next_story - 1
    target = min(matched)
    for sid in matched - {target}:
        db.execute("update article_story set story_id = ? where story_id = ?", [target, sid])
        db.execute("delete from stories where id = ?", [sid])
        pool.rename(sid, target)
    return target


def _detach(db, ids: list[int]) -> list[int]:
    """Take articles out of their stories; summarise what remains (an emptied story is deleted); return the
    stories that remain."""
    affected = {
        r[0] for r in store.select_in(db, "select story_id from article_story where article_id in ({marks})", ids)
    }
    for part, marks in store.in_slices(ids):
        db.execute(f"delete from article_story where article_id in ({marks})", part)
    return sorted(_summarise_many(db, affected))


def _summarise(db, sid: int) -> bool:
    """Recompute a story's row from its members (delete it when it has none: then False)."""
    return bool(_summarise_many(db, {sid}))


def _summarise_many(db, sids: set[int]) -> set[int]:
    """Recompute these stories' rows from their members, in one read and one write; delete the empty ones.
    Returns the stories that remain."""
    sql = (
        "select x.story_id, a.id, a.title, a.outlet, a.published, x.vector from article_story x join articles a "
        "on a.id = x.article_id where x.story_id in ({marks}) order by a.id"
    )
    per: dict[int, list[tuple]] = {}
    for sid, *member in store.select_in(db, sql, sorted(sids)):
        per.setdefault(sid, []).append(tuple(member))
    for part, marks in store.in_slices(sorted(sids - set(per))):
        db.execute(f"delete from stories where id in ({marks})", part)
    db.conn.executemany(
        "insert or replace into stories (id, title, article_id, first, last, outlets, size, last_article) "
        "values (?, ?, ?, ?, ?, ?, ?, ?)",
        [_summary(sid, members) for sid, members in per.items()],
    )
    return set(per)


def _summary(sid: int, members: list[tuple]) -> tuple:
    """A story's row from its members (id, title, outlet, published, vector; in id order)."""
    central = _central(members)
    dated = sorted((m[3], m[0]) for m in members if m[3])
    outlets = list(dict.fromkeys(m[2] for m in sorted(members, key=_timeline_key) if m[2]))
    first, last = (dated[0][0], dated[-1][0]) if dated else (None, None)
    return (sid, central[1], central[0], first, last, json.dumps(outlets), len(members), members[-1][0])


def _central(members: list[tuple]) -> tuple:
    """The member closest to the story's mean vector (the first one when there are no vectors)."""
    with_vec = [m for m in members if m[4]]
    if len(with_vec) < 3:
        return members[0]
    mat = np.vstack([np.frombuffer(m[4], dtype=np.float16) for m in with_vec]).astype(np.float32)
    return with_vec[int(np.argmax(mat @ _unit(mat.mean(axis=0))))]


def _timeline_key(m: tuple) -> tuple:
    return (m[3] is None, m[3] or "", m[0])


def _pool(db, days: list[str], undated: bool, first_new: int) -> _Pool:
    """The assigned articles within WINDOW_DAYS of the batch's dates, plus (for undated articles) the most
    recently loaded and the undated ones."""
    clauses, params = [], []
    if days:
        lo, hi = _window(min(days))[0], _window(max(days))[1]
        clauses.append("(day between ? and ?)")
        params += [lo, hi]
    if undated or days:
        clauses.append("day is null")
    if undated:
        clauses.append("article_id >= ?")
        params.append(first_new - RECENT)
    where = " or ".join(clauses)
    sql = f"select article_id, story_id, day, vector from article_story where vector is not null and ({where})"
    pool = _Pool()
    pool.extend(db.execute(sql, params).fetchall())
    return pool


def _duplicate_stories(db, ids: list[int]) -> dict[int, set[int]]:
    """For each article: the stories of its near-duplicate copies that already have one."""
    if "article_groups" not in db.table_names():
        return {}
    sql = (
        "select g.article_id, x.story_id from article_groups g join article_groups m on m.group_id = g.group_id "
        "join article_story x on x.article_id = m.article_id "
        "where g.article_id in ({marks}) and m.article_id != g.article_id"
    )
    out: dict[int, set[int]] = {}
    for aid, sid in store.select_in(db, sql, ids):
        out.setdefault(aid, set()).add(sid)
    return out


def _chunk_vectors(db, ids: list[int]) -> dict[int, np.ndarray]:
    rows = store.select_in(
        db, "select article_id, vector from chunks where article_id in ({marks}) order by article_id, seq", ids
    )
    per: dict[int, list[bytes]] = {}
    for aid, blob in rows:
        per.setdefault(aid, []).append(blob)
    return {aid: np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1) for aid, blobs in per.items()}


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)


def _day(published: str | None) -> str | None:
    try:
        return date.fromisoformat(str(published)[:10]).isoformat() if published else None
    except ValueError:
        return None


def _window(day: str) -> tuple[str, str]:
    d = date.fromisoformat(day)
    return (d - timedelta(days=WINDOW_DAYS)).isoformat(), (d + timedelta(days=WINDOW_DAYS)).isoformat()


# ---- checks ---------------------------------------------------------------------------------------------------


def check(db: sqlite_utils.Database) -> list[str]:
    """What `archive verify` should report about stories, in words a user can act on (empty: all agree)."""
    if not {"stories", "article_story"} <= set(db.table_names()):
        return ["the archive has no story tables yet; run `archive verify --repair`"]
    problems = [f"the stories index page lacks its index {i}" for i in _missing_indexes(db)]
    counts = [
        ("articles have no story", "articles where id not in (select article_id from article_story)"),
        ("story rows belong to no article", "article_story where article_id not in (select id from articles)"),
        ("articles point to a missing story", "article_story where story_id not in (select id from stories)"),
        ("stories have no articles", "stories where id not in (select story_id from article_story)"),
        ("stories have a wrong size or dates", _STALE),
    ]
    for words, where in counts:
        n = db.execute(f"select count(*) from {where}").fetchone()[0]
        if n:
            problems.append(f"{n} {words}")
    return problems


_STALE = """stories s join (select x.story_id, count(*) n, min(a.published) f, max(a.published) l
  from article_story x join articles a on a.id = x.article_id group by x.story_id) m on m.story_id = s.id
  where s.size != m.n or s.first is not m.f or s.last is not m.l"""


# ---- reads ----------------------------------------------------------------------------------------------------


def story_ids(db, article_ids: Iterable[int]) -> dict[int, int]:
    """Article id -> story id (articles without a story are left out)."""
    if "article_story" not in db.table_names():
        return {}
    return dict(
        store.select_in(db, "select article_id, story_id from article_story where article_id in ({marks})", article_ids)
    )


def story(db, story_id: int) -> dict | None:
    """A story with its timeline: members oldest first (undated last), `first` marking the earliest report."""
    if "stories" not in db.table_names():
        return None
    cur = db.execute("select * from stories where id = ?", [int(story_id)])
    row = cur.fetchone()
    if row is None:
        return None
    out = _story_dict(dict(zip([d[0] for d in cur.description], row)))
    out["articles"] = _members(db, [out["id"]])[out["id"]]
    return out


def list_stories(
    db,
    *,
    since: str | None = None,
    until: str | None = None,
    outlet: str | None = None,
    min_size: int = 1,
    sort: str = "newest",
    limit: int | None = 50,
    offset: int = 0,
    with_articles: bool = False,
) -> list[dict]:
    """Stories newest first (by last date; undated last) or biggest first (`sort="size"`), filtered.

    `since`/`until` keep stories with coverage in that range (ISO dates, inclusive); `outlet` those it covered."""
    if "stories" not in db.table_names():
        return []
    if sort not in SORTS:
        raise ArchiveError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    clauses, params = ["s.size >= ?"], [int(min_size)]
    if since:
        clauses.append("s.last >= ?")
        params.append(_check_date(since, "since"))
    if until:
        clauses.append("s.first < ?")
        params.append((date.fromisoformat(_check_date(until, "until")) + timedelta(days=1)).isoformat())
    if outlet:
        found = _outlet_filter(db, outlet)
        if found is None:
            return []
        clauses.append(found[0])
        params += found[1]
    sql = f"select * from stories s where {' and '.join(clauses)} order by {SORTS[sort]}"
    if limit is not None:
        sql += " limit ? offset ?"
        params += [int(limit), int(offset)]
    cur = db.execute(sql, params)
    names = [d[0] for d in cur.description]
    rows = [_story_dict(dict(zip(names, r))) for r in cur.fetchall()]
    if with_articles:
        members = _members(db, [r["id"] for r in rows])
        for r in rows:
            r["articles"] = members.get(r["id"], [])
    return rows


RARE_OUTLET = 30  # an outlet with under 1/30 of the articles: its stories are found from its articles


def _outlet_filter(db, outlet: str) -> tuple[str, list] | None:
    """The clause keeping stories an outlet covered (any case), or None when no article has that outlet.

    Planned by how common the outlet is (measured at 100k articles, `benchmarks.stories --part pages`): for a
    common one, walking stories in order and probing each one's members stops within a few hundred stories;
    for a rare one that walk would visit every story (0.4 s), so its stories come from its own articles."""
    names = [outlet] if db.execute("select 1 from articles where outlet = ? limit 1", [outlet]).fetchone() else []
    if not names:  # another case than stored
        names = [name for name in _outlets(db) if name.lower() == outlet.lower()]
    if not names:
        return None
    marks = ",".join("?" * len(names))
    held = db.execute(f"select count(*) from articles where outlet in ({marks})", names).fetchone()[0]
    if held * RARE_OUTLET < (db.execute("select max(id) from articles").fetchone()[0] or 0):
        own = (
            f"select x.story_id from articles a join article_story x on x.article_id = a.id where a.outlet in ({marks})"
        )
        return f"s.id in ({own})", names
    member = "select 1 from article_story x join articles a on a.id = x.article_id where x.story_id = s.id"
    return f"exists ({member} and lower(a.outlet) = lower(?))", [outlet]  # lower(): keeps the plan per story


def _outlets(db) -> Iterable[str]:
    """The distinct outlets, one index seek each (a skip scan: a group-by would read every article's entry)."""
    row = db.execute("select min(outlet) from articles").fetchone()
    while row and row[0] is not None:
        yield row[0]
        row = db.execute("select outlet from articles where outlet > ? order by outlet limit 1", [row[0]]).fetchone()


SORTS = {"newest": "s.last is null, s.last desc, s.id desc", "size": "s.size desc, s.last desc, s.id desc"}


def _check_date(value: str, name: str) -> str:
    try:
        return date.fromisoformat(str(value).strip()[:10]).isoformat()
    except ValueError:
        raise ArchiveError(f"--{name}: {value!r} is not a date (use YYYY-MM-DD)") from None


def _story_dict(row: dict) -> dict:
    return {
        "id": row["id"],
        "title": row["title"],
        "first": row["first"],
        "last": row["last"],
        "outlets": json.loads(row["outlets"] or "[]"),
        "size": row["size"],
        "article_id": row["article_id"],
    }


def _members(db, sids: list[int]) -> dict[int, list[dict]]:
    sql = (
        "select x.story_id, a.id, a.url, a.title, a.outlet, a.published from article_story x "
        "join articles a on a.id = x.article_id where x.story_id in ({marks})"
    )
    per: dict[int, list[dict]] = {}
    for sid, aid, url, title, outlet, published in store.select_in(db, sql, sids):
        per.setdefault(sid, []).append(
            {"id": aid, "url": url, "title": title, "outlet": outlet, "published": published, "first": False}
        )
    for members in per.values():
        members.sort(key=lambda m: (m["published"] is None, m["published"] or "", m["id"]))
        earliest = members[0]["published"]
        for m in members:
            m["first"] = earliest is not None and m["published"] == earliest
    return per
