"""Keyword signatures and document frequencies on real article text, checked against a brute-force TF-IDF."""

import math
from collections import Counter

import numpy as np
import pytest
from conftest import distinct_rows

from archive import store, terms


@pytest.fixture(scope="module")
def bodies(news_csv):
    """Twenty real NewsArticles (title, body) pairs with distinct openings."""
    return [(r["title"], r["text"]) for r in distinct_rows(news_csv, 20, 1500, titled=True)]


def add(db, title, body, outlet="x"):
    h = store.body_hash(body)
    row = {"identity": f"{outlet}/{h}", "title": title, "body": body, "body_hash": h}
    aid = db["articles"].insert(row).last_pk
    terms.update(db, [aid])
    return aid


def brute_df(db) -> Counter:
    df = Counter()
    for title, body in db.execute("select title, body from articles"):
        df.update(set(terms.counts(title, body)))
    return df


def stored_df(db) -> Counter:
    return Counter({t: d for t, d in db.execute("select term, df from terms where df > 0")})


def brute_cosine(db, a: int, b: int) -> float:
    n = db.execute("select count(*) from articles").fetchone()[0]
    df = brute_df(db)

    def vec(aid):
        title, body = db.execute("select title, body from articles where id = ?", [aid]).fetchone()
        w = {t: (1 + math.log(c)) * (math.log((1 + n) / (1 + df[t])) + 1) for t, c in terms.counts(title, body).items()}
        norm = math.sqrt(sum(v * v for v in w.values()))
        return {t: v / norm for t, v in w.items()}

    va, vb = vec(a), vec(b)
    return sum(v * vb.get(t, 0.0) for t, v in va.items())


def test_words_fold_case_and_drop_function_words_numbers_and_short_words():
    assert terms.words("The Cyclone hit Queensland in 2017, and it was a CYCLONE of 5 km") == [
        "cyclone", "hit", "queensland", "cyclone",
    ]  # fmt: skip


def test_document_frequencies_follow_loads_updates_and_deletes(db, bodies):
    ids = [add(db, t, b) for t, b in bodies]
    assert stored_df(db) == brute_df(db)
    db.execute("update articles set body = ? where id = ?", [bodies[0][1], ids[1]])  # an article rewritten
    db.conn.commit()
    terms.update(db, [ids[1]])
    assert stored_df(db) == brute_df(db)
    store.delete_articles(db, ids[:5], terms.forget)
    assert stored_df(db) == brute_df(db)
    assert terms.unsigned(db) == []


def test_similarity_is_the_tfidf_cosine_of_the_stored_counts(db, bodies):
    ids = [add(db, t, b) for t, b in bodies]
    got = terms.similarity(db, ids[0], ids[1:])
    for b in ids[1:]:
        assert got[b] == pytest.approx(brute_cosine(db, ids[0], b), abs=1e-9)


def test_similarity_is_symmetric_one_for_a_copy_and_low_for_unrelated(db, bodies):
    ids = [add(db, t, b) for t, b in bodies]
    copy = add(db, *bodies[0], outlet="y")
    assert terms.similarity(db, ids[0], [copy])[copy] == pytest.approx(1.0)
    s = terms.similarity(db, ids[2], ids)
    assert all(0.0 <= v <= 1.0 for v in s.values())
    assert s[ids[5]] == pytest.approx(terms.similarity(db, ids[5], [ids[2]])[ids[2]])
    assert np.median([v for k, v in s.items() if k != ids[2]]) < 0.3


def test_backfill_signs_articles_loaded_without_signatures(db, bodies):
    for title, body in bodies[:3]:
        db["articles"].insert({"identity": title, "title": title, "body": body, "body_hash": store.body_hash(body)})
    assert len(terms.unsigned(db)) == 3
    assert terms.backfill(db) == 3
    assert terms.unsigned(db) == [] and stored_df(db) == brute_df(db)


def test_top_terms_are_distinctive_words_other_articles_share(db, bodies):
    ids = [add(db, t, b) for t, b in bodies]
    add(db, *bodies[4], outlet="y")  # a copy, so its distinctive words are shared
    top = terms.top_terms(db, ids[4], 10)
    assert len(top) == 10 and not set(top) & terms.STOP_WORDS
    assert all(w in terms.counts(*bodies[4]) for w in top)


def test_keyword_related_finds_the_story(hash_sample):
    """TF-IDF over stored word counts: no model involved, so the hash-encoder sample serves."""
    debbie = hash_sample.ids("debbie")
    arc = hash_sample.open()
    try:
        others = [r[0] for r in arc.db.execute("select id from articles")]
        s = terms.similarity(arc.db, debbie[0], others)
        top = sorted(s, key=s.get, reverse=True)[: len(debbie) - 1]
        assert len(debbie) >= 4 and len(set(top) & set(debbie)) >= len(debbie) - 2
    finally:
        arc.close()
