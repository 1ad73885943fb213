"""Near-duplicate grouping on real article text: exact copies, wire rewrites, trimmed copies, unrelated stories."""

import re

import numpy as np
import pytest
from conftest import distinct_rows

from archive import dedupe, store


@pytest.fixture(scope="module")
def bodies(news_csv):
    """Twelve long real NewsArticles bodies with distinct openings."""
    return [r["text"] for r in distinct_rows(news_csv, 12, 2500)]


def add(db, body, outlet="a.example"):
    aid = (
        db["articles"]
        .insert(
            {
                "identity": f"{outlet}/{store.body_hash(body)}",
                "title": "t",
                "body": body,
                "outlet": outlet,
                "body_hash": store.body_hash(body),
            }
        )
        .last_pk
    )
    dedupe.update(db, [aid])
    return aid


def groups(db):
    out = {}
    for aid, gid in db.execute("select article_id, group_id from article_groups"):
        out.setdefault(gid, set()).add(aid)
    return sorted(sorted(g) for g in out.values())


def wire_edit(body):
    paras = [p for p in body.split("\n") if p.strip()]
    text = "\n\n".join(paras[:-1] if len(paras) > 3 else paras)
    return "LONDON (Reuters) - " + text.replace("said", "told reporters").replace(" the ", " The ")


def sentences(body):
    return [s for s in re.split(r"(?<=[.!?])\s+", body) if s.strip()]


def test_signatures_are_deterministic_and_estimate_jaccard(bodies):
    a, b = dedupe.shingles(bodies[0]), dedupe.shingles(bodies[0] + " " + bodies[1])
    assert np.array_equal(dedupe.signature(a), dedupe.signature(dedupe.shingles(bodies[0])))
    true_j = len(np.intersect1d(a, b)) / len(np.union1d(a, b))
    assert abs(dedupe.jaccard(dedupe.signature(a), dedupe.signature(b)) - true_j) < 0.12


def test_unrelated_articles_stay_apart(db, bodies):
    ids = [add(db, b) for b in bodies]
    assert groups(db) == [[i] for i in ids]


def test_exact_copies_and_rewrites_group_together(db, bodies):
    base = add(db, bodies[0], "wire.example")
    others = [add(db, b) for b in bodies[1:6]]
    sents = sentences(bodies[0])
    copies = [
        add(db, bodies[0].upper(), "copy.example"),  # exact duplicate (case folded)
        add(db, wire_edit(bodies[0]), "edited.example"),  # wire-copy edits, last paragraph cut
        add(db, " ".join(s for i, s in enumerate(sents) if i % 5 != 2), "shorter.example"),  # a fifth dropped
        add(db, " ".join(sents[: max(3, len(sents) // 2)]), "trimmed.example"),  # the first half only
    ]
    assert [base, *copies] in groups(db)
    assert all([o] in groups(db) for o in others)
    members = dedupe.group_members(db, [copies[1]])[copies[1]]
    assert {o for _, o in members} >= {"wire.example", "copy.example", "trimmed.example"}


def test_a_deleted_bridge_splits_its_group(db, bodies):
    first = " ".join(bodies[2].split()[:200])
    second = " ".join(bodies[3].split()[:200])
    a = add(db, first)
    b = add(db, second)
    bridge = add(db, first + " " + second)  # contains both
    assert [a, b, bridge] in groups(db)
    with store.transaction(db):
        dedupe.forget(db, [bridge])
        db.execute("delete from articles where id = ?", [bridge])
    assert [a] in groups(db) and [b] in groups(db)


def test_updating_an_article_regroups_it(db, bodies):
    a = add(db, bodies[4])
    b = add(db, bodies[4], "b.example")
    assert [a, b] in groups(db)
    db["articles"].update(b, {"body": bodies[5], "body_hash": store.body_hash(bodies[5])})
    dedupe.update(db, [b])
    assert [a] in groups(db) and [b] in groups(db)


def test_without_groups_exact_duplicates_still_count(db, bodies):
    ids = [
        db["articles"]
        .insert({"identity": str(i), "title": "t", "body": bodies[7], "body_hash": store.body_hash(bodies[7])})
        .last_pk
        for i in range(2)
    ]
    assert {m for m, _ in dedupe.group_members(db, [ids[0]])[ids[0]]} == set(ids)


def test_the_sample_archive_grouped_every_article_at_load(hash_sample):
    arc = hash_sample.open()
    try:
        n = arc.db.execute("select count(*) from articles").fetchone()[0]
        assert arc.db.execute("select count(*) from article_groups").fetchone()[0] == n
        dup = arc.db.execute("select body_hash from articles group by body_hash having count(*) > 1 limit 1").fetchone()
        assert dup is not None, "the slice holds HuffPost's Jimmy Breslin obituary twice"
        ids = [r[0] for r in arc.db.execute("select id from articles where body_hash = ?", [dup[0]])]
        assert len(ids) == 2 and {m for m, _ in dedupe.group_members(arc.db, ids)[ids[0]]} >= set(ids)
    finally:
        arc.close()
