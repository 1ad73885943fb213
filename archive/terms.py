"""Keyword signatures: each article's word counts, kept beside it, and the archive's document frequencies.

Related coverage scores the keyword side of "same story" as the TF-IDF cosine of two articles (sublinear tf,
smoothed idf over the whole archive). Measured with `python -m benchmarks.quality`, blended half and half with
the semantic score, it beat the earlier bm25 more-like-this query on both Lee r and BBC P@10, and it needs no
full-text query at read time: a candidate's signature is one small blob, so scoring a hundred candidates
costs the same at 10k articles as at a million.

Tables: `terms` (id, term, df: how many articles use the term) and `article_terms` (article_id, a blob of
int32 (term id, count) pairs). Both are derived from `articles` and written just after each batch's commit,
like the near-duplicate signatures; `unsigned` and `backfill` catch up an archive that lacks some.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from . import store
from .store import transaction

if TYPE_CHECKING:  # workers import this module for its pure functions: keep sqlite_utils (and pandas) out
    import sqlite_utils

_WORD = re.compile(r"\w+", re.UNICODE)
# Function words (a news-minded cut of the Glasgow list: "fire", "bill" or "interest" are news, not noise).
STOP_WORDS = frozenset(
    """a about above across after afterwards again against all almost alone along already also although always
    am among amongst an and another any anyhow anyone anything anyway anywhere are around as at back be became
    because become becomes becoming been before beforehand behind being below beside besides between beyond
    both but by can cannot could did do does doing done down due during each eg eight either eleven else
    elsewhere enough etc even ever every everyone everything everywhere except few fifteen fifty first five
    for former formerly forty four from further get gets give go goes going got had has have having he hence
    her here hereafter hereby herein hereupon hers herself him himself his how however hundred i ie if in inc
    indeed into is it its itself just last latter latterly least less ltd made make makes many may me
    meanwhile might mine more moreover most mostly much must my myself namely neither never nevertheless new
    next nine no nobody none noone nor not nothing now nowhere of off often on once one only onto or other
    others otherwise our ours ourselves out over own per perhaps please put rather re said same say says see
    seem seemed seeming seems several she should since six sixty so some somehow someone something sometime
    sometimes somewhere still such take ten than that the their theirs them themselves then thence there
    thereafter thereby therefore therein thereupon these they third this those though three through
    throughout thru thus to together too toward towards twelve twenty two under until up upon us very via was
    we well were what whatever when whence whenever where whereafter whereas whereby wherein whereupon wherever
    whether which while whither who whoever whole whom whose why will with within without would year years yet
    you your yours yourself yourselves""".split()
)


def _counted(word: str) -> bool:
    """A lower-cased word that counts: three letters or more, not a number, not a function word."""
    return len(word) > 2 and not word.isdigit() and word not in STOP_WORDS


def words(text: str) -> list[str]:
    """The counted words of a text: lower-cased, three letters or more, no numbers, no function words."""
    return [w for w in _WORD.findall(text.lower()) if _counted(w)]


def counts(title: str | None, body: str | None) -> Counter:
    """Word counts of an article (title and body), filtered per distinct word rather than per occurrence."""
    found = Counter(_WORD.findall(f"{title or ''}\n{body or ''}".lower()))
    return Counter({w: n for w, n in found.items() if _counted(w)})


# ---- writes -----------------------------------------------------------------------------------------------


def update(db: sqlite_utils.Database, article_ids: Iterable[int]) -> None:
    """(Re)count stored articles' words and move the document frequencies with them; one transaction."""
    ids = [int(i) for i in article_ids if i is not None]
    rows = store.select_in(db, "select id, title, body from articles where id in ({marks})", ids)
    with transaction(db):
        write(db, {aid: counts(title, body) for aid, title, body in rows})


def write(db: sqlite_utils.Database, texts: dict[int, Counter], known: dict[str, int] | None = None) -> None:
    """Inside the caller's transaction: store articles' word counts (made beforehand, in a worker process at
    load time) and move the document frequencies with them. `known` (term -> id), kept by a writer across its
    batches, spares looking up words it has met before (a term's id never changes)."""
    if not texts:
        return
    _drop(db, list(texts))
    vocabulary = {w for c in texts.values() for w in c}
    if known is None:
        term_id = _term_ids(db, vocabulary)
    else:
        known.update(_term_ids(db, vocabulary - known.keys()))
        term_id = known
    rows, df = [], Counter()
    for aid, c in texts.items():
        pairs = np.array([(term_id[w], n) for w, n in c.items()], dtype=np.int32).reshape(-1, 2)
        rows.append((aid, pairs.tobytes()))
        df.update(pairs[:, 0].tolist())
    db.conn.executemany("insert or replace into article_terms values (?, ?)", rows)
    db.conn.executemany("update terms set df = df + ? where id = ?", [(n, t) for t, n in df.items()])


def forget(db: sqlite_utils.Database, article_ids: Iterable[int]) -> None:
    """Inside the caller's (delete) transaction: take deleted articles out of the document frequencies, and
    every word no article uses any more out of `terms`, so a deleted article (or an earlier version of it)
    leaves none of its words behind. (A load leaves a word at df 0 in place: its writer remembers term ids
    across batches, and deletes never run beside a load: both hold the writer lock.)"""
    ids = [int(i) for i in article_ids]
    if ids and "article_terms" in db.table_names():
        _drop(db, ids)
        db.execute("delete from terms where df <= 0")


def _drop(db, ids: list[int]) -> None:
    """Inside the caller's transaction: remove these articles' signatures and their share of df."""
    df = Counter()
    for pairs in signatures(db, ids).values():
        df.update(pairs[:, 0].tolist())
    db.conn.executemany("update terms set df = df - ? where id = ?", [(n, t) for t, n in df.items()])
    for part, marks in store.in_slices(ids):
        db.execute(f"delete from article_terms where article_id in ({marks})", part)


def _term_ids(db, vocabulary: set[str]) -> dict[str, int]:
    db.conn.executemany("insert or ignore into terms (term, df) values (?, 0)", [(w,) for w in vocabulary])
    return {
        t: i for i, t in store.select_in(db, "select id, term from terms where term in ({marks})", sorted(vocabulary))
    }


def unsigned(db: sqlite_utils.Database) -> list[int]:
    """Articles with no keyword signature."""
    return store.articles_without(db, "article_terms")


def backfill(db: sqlite_utils.Database) -> int:
    """Sign every article that has no keyword signature yet."""
    return store.backfill(db, unsigned(db), update)


# ---- reads ------------------------------------------------------------------------------------------------


def signatures(db, ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Article id -> (n, 2) int32 array of (term id, count)."""
    if "article_terms" not in db.table_names():
        return {}
    rows = store.select_in(db, "select article_id, terms from article_terms where article_id in ({marks})", ids)
    return {a: np.frombuffer(b, dtype=np.int32).reshape(-1, 2) for a, b in rows}


def _weights(pairs: np.ndarray, vocab: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """Unit-length sublinear tf x idf weights of one signature (`vocab` sorted, `idf` aligned with it)."""
    w = (1.0 + np.log(pairs[:, 1])) * idf[np.searchsorted(vocab, pairs[:, 0])]
    return w / (np.linalg.norm(w) or 1.0)


def similarity(db, article_id: int, candidates: Iterable[int]) -> dict[int, float]:
    """TF-IDF cosine (0..1) of an article with each candidate, from the stored signatures."""
    candidates = [c for c in candidates if c != article_id]
    sigs = signatures(db, [article_id, *candidates])
    own = sigs.get(article_id)
    if own is None or not len(own):
        return {c: 0.0 for c in candidates}
    vocab = np.unique(np.concatenate([s[:, 0] for s in sigs.values()]))
    idf = _idf(db, vocab)
    order = np.argsort(own[:, 0])  # sorted once: a 2 MB article has ~30k terms, re-sorted per candidate before
    own_terms, mine = own[order, 0], _weights(own, vocab, idf)[order]
    out = {}
    for c in candidates:
        theirs = sigs.get(c)
        if theirs is None or not len(theirs):
            out[c] = 0.0
            continue
        at = np.minimum(np.searchsorted(own_terms, theirs[:, 0]), len(own_terms) - 1)
        shared = own_terms[at] == theirs[:, 0]
        out[c] = float(mine[at[shared]] @ _weights(theirs, vocab, idf)[shared])
    return out


def _idf(db, vocab: np.ndarray) -> np.ndarray:
    """Smoothed idf, ln((1 + N) / (1 + df)) + 1, of these (sorted) term ids, aligned with them."""
    n = db.execute("select count(*) from articles").fetchone()[0]
    df = np.zeros(len(vocab))
    rows = store.select_in(db, "select id, df from terms where id in ({marks})", vocab.tolist())
    if rows:
        found = np.array(rows, dtype=np.int64)
        df[np.searchsorted(vocab, found[:, 0])] = np.maximum(found[:, 1], 0)
    return np.log((1 + n) / (1 + df)) + 1.0


def top_terms(db, article_id: int, n: int) -> list[str]:
    """The article's n most distinctive words (tf x idf), e.g. for a more-like-this full-text query."""
    own = signatures(db, [article_id]).get(article_id)
    if own is None or not len(own):
        return []
    vocab = np.unique(own[:, 0])
    weights = _weights(own, vocab, _idf(db, vocab))
    order = [int(t) for t in own[np.argsort(-weights), 0]]
    shared = dict(store.select_in(db, "select id, term from terms where id in ({marks}) and df > 1", order))
    return [shared[t] for t in order if t in shared][:n]  # a word no other article has matches nothing
