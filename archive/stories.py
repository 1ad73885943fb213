"""Stories: the articles about one event and its direct follow-ups, grouped at load time.

"Same story" is a pairwise decision on the related-coverage score (archive/search.py: half semantic, half
TF-IDF cosine): two articles are on one story when that score reaches SAME_STORY[mode]. The thresholds were
calibrated with `python -m benchmarks.stories` on benchmarks/story_pairs.jsonl, pairs of NewsArticles read
and labelled by hand (same event or a direct follow-up, versus a shared topic only).

Assignment is incremental and single-link: a new article is scored against the articles published within
WINDOW_DAYS of it (an undated one: the RECENT most recently loaded), the CANDIDATES closest by mean vector
first; it joins the story of the best one at or above the threshold, or starts its own. When it reaches
the threshold with members of several stories, it bridges them and they merge (the oldest story id stays).
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
create index if not exists stories_size on stories (size);
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


def ensure_tables(db: sqlite_utils.Database) -> None:
    """Until the lead adds SCHEMA to store.DERIVED_TABLES: make the tables (writers only)."""
    if not {"stories", "article_story"} <= set(db.table_names()):
        db.conn.executescript(SCHEMA)


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
    """The already-assigned articles a batch is compared with: ids, stories, days and mean vectors.

    Vectors and day numbers live in arrays that grow by doubling, so adding an article is O(1) and a look-up
    is one matrix-vector product (rebuilding the matrix per added article made a batch quadratic)."""

    UNDATED = -(10**9)  # an undated article is inside every window

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.story: dict[int, int] = {}
        self._vecs: np.ndarray | None = None
        self._days = np.zeros(0, np.int64)

    def add(self, aid: int, story_id: int, day: str | None, vec: np.ndarray) -> None:
        n = len(self.ids)
        if self._vecs is None:
            self._vecs, self._days = np.zeros((16, len(vec)), np.float32), np.zeros(16, np.int64)
        if n == len(self._vecs):
            self._vecs = np.concatenate([self._vecs, np.zeros_like(self._vecs)])
            self._days = np.concatenate([self._days, np.zeros_like(self._days)])
        self._vecs[n] = vec
        self._days[n] = date.fromisoformat(day).toordinal() if day else self.UNDATED
        self.ids.append(aid)
        self.story[aid] = story_id

    def nearest(self, vec: np.ndarray, day: str | None, n: int, min_cosine: float) -> list[int]:
        if not self.ids:
            return []
        count = len(self.ids)
        sims = self._vecs[:count] @ vec
        if day is not None:
            d, days = date.fromisoformat(day).toordinal(), self._days[:count]
            inside = (days == self.UNDATED) | (np.abs(days - d) <= WINDOW_DAYS)
            sims = np.where(inside, sims, -np.inf)
        order = np.argsort(-sims)[:n]
        return [self.ids[i] for i in order if sims[i] >= min_cosine]


def assign(
    db: sqlite_utils.Database,
    article_ids: Iterable[int],
    threshold: float | None = None,
    min_cosine: float = MIN_COSINE,
) -> dict[int, int]:
    """Inside the caller's transaction: give each article a story (re-assign one already in a story).

    Returns article id -> story id. `threshold` (default SAME_STORY["hybrid"]) and `min_cosine` are the
    real model's; another encoder's vectors may need others."""
    ids = sorted({int(i) for i in article_ids if i is not None})
    if not ids:
        return {}
    threshold = SAME_STORY["hybrid"] if threshold is None else threshold
    _detach(db, ids)
    rows = {
        r[0]: r[1:]
        for r in store.select_in(db, "select id, published, outlet from articles where id in ({marks})", ids)
    }
    chunk_vecs = _chunk_vectors(db, ids)
    days = {aid: _day(rows[aid][0]) for aid in ids if aid in rows}
    pool = _pool(db, [d for d in days.values() if d], any(d is None for d in days.values()), min(ids))
    groups = _duplicate_stories(db, ids)
    out, touched = {}, set()
    for aid in ids:
        if aid not in rows:
            continue
        vec = _unit(chunk_vecs[aid].mean(axis=0)) if aid in chunk_vecs else None
        candidates = pool.nearest(vec, days[aid], CANDIDATES, min_cosine) if vec is not None else []
        sid = _place(db, aid, candidates, pool, groups.get(aid, set()), chunk_vecs, threshold)
        touched.add(sid)
        out[aid] = sid
        blob = None if vec is None else vec.astype(np.float16).tobytes()
        db.execute("insert or replace into article_story values (?, ?, ?, ?)", [aid, sid, days[aid], blob])
        if vec is not None:
            pool.add(aid, sid, days[aid], vec)
    for sid in touched:
        _summarise(db, sid)
    return out


def forget(db: sqlite_utils.Database, article_ids: Iterable[int]) -> None:
    """Inside the caller's (delete) transaction: take articles out of their stories; an empty story goes."""
    ids = [int(i) for i in article_ids]
    if ids and "article_story" in db.table_names():
        _detach(db, ids)


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


def _place(db, aid: int, candidates: list[int], pool: _Pool, dup_stories: set[int], chunk_vecs, threshold) -> int:
    """The story the article joins (or starts); the stories it bridges merge into the oldest of them."""
    matched = set(dup_stories)
    for other, score in _scores(db, aid, chunk_vecs.get(aid), candidates).items():
        if score >= threshold:
            matched.add(pool.story[other])
    matched = {s for s in matched if s is not None}
    if not matched:
        return db.execute("insert into stories (size) values (0)").lastrowid
    target = min(matched)
    for sid in matched - {target}:
        db.execute("update article_story set story_id = ? where story_id = ?", [target, sid])
        db.execute("delete from stories where id = ?", [sid])
        for k, s in pool.story.items():
            if s == sid:
                pool.story[k] = target
    return target


def _scores(db, aid: int, own: np.ndarray | None, candidates: list[int]) -> dict[int, float]:
    """The hybrid related-coverage score of the article with each candidate (see archive/search.py)."""
    if own is None or not candidates:
        return {}
    from .search import _semantic_similarity  # search imports this module

    w = DEFAULT_WEIGHTS  # related coverage's own blend: "same story" thresholds its score
    theirs = _chunk_vectors(db, candidates)
    keyword = terms.similarity(db, aid, candidates)
    out = {}
    for c in candidates:
        if c in theirs:
            sem, _ = _semantic_similarity(own, theirs[c], list(range(len(theirs[c]))), w.semantic_score)
            out[c] = (1 - w.keyword_weight) * sem + w.keyword_weight * keyword.get(c, 0.0)
    return out


def _detach(db, ids: list[int]) -> None:
    """Take articles out of their stories; summarise what remains (an emptied story is deleted)."""
    affected = {
        r[0] for r in store.select_in(db, "select story_id from article_story where article_id in ({marks})", ids)
    }
    for part, marks in store.in_slices(ids):
        db.execute(f"delete from article_story where article_id in ({marks})", part)
    for sid in affected:
        _summarise(db, sid)


def _summarise(db, sid: int) -> None:
    """Recompute a story's row from its members (delete it when it has none)."""
    sql = (
        "select a.id, a.title, a.outlet, a.published, x.vector from article_story x join articles a "
        "on a.id = x.article_id where x.story_id = ? order by a.id"
    )
    members = db.execute(sql, [sid]).fetchall()
    if not members:
        db.execute("delete from stories where id = ?", [sid])
        return
    central = _central(members)
    dated = sorted((m[3], m[0]) for m in members if m[3])
    outlets = list(dict.fromkeys(m[2] for m in sorted(members, key=_timeline_key) if m[2]))
    db.execute(
        "insert or replace into stories (id, title, article_id, first, last, outlets, size, last_article) "
        "values (?, ?, ?, ?, ?, ?, ?, ?)",
        [sid, central[1], central[0], dated[0][0] if dated else None, dated[-1][0] if dated else None,
         json.dumps(outlets), len(members), max(m[0] for m in members)],
    )  # fmt: skip


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
    pool, clauses, params = _Pool(), [], []
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
    for aid, sid, day, blob in db.execute(sql, params):
        pool.add(aid, sid, day, np.frombuffer(blob, dtype=np.float16).astype(np.float32))
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
    problems = []
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
        clauses.append(
            "exists (select 1 from article_story x join articles a on a.id = x.article_id "
            "where x.story_id = s.id and lower(a.outlet) = lower(?))"
        )
        params.append(outlet)
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
