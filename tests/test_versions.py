"""Article versions: a changed reload keeps what it replaced (`article_versions`), everything derived follows
the latest version, deletes take every version, verify finds orphans, the row page shows a word diff, and the
diff stays bounded on hostile text. Hash-encoder archives; one real-model reload (slow)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from datasette.app import Datasette

from archive import dedupe, store, stories, terms, versions

BODY = (
    "Heavy rain flooded the town centre on Monday. Residents were moved to the school hall.\n"
    "The river rose two metres overnight, the council said.\n"
    "Roads to the coast stayed closed on Tuesday."
)
EDITED = BODY.replace("two metres", "three metres") + "\nThe army brought zorblat sandbags on Wednesday."
URL = "http://news.example.com/flood"


def write(path: Path, *records: dict) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def flood(body: str = BODY, title: str = "Town centre flooded", **kw) -> dict:
    return {"url": URL, "title": title, "body": body, "published": "2017-03-01", "outlet": "example.com", **kw}


def again(article: dict, **changes) -> dict:
    """A stored article as a record to load again, with some fields changed."""
    keep = ("url", "title", "subtitle", "byline", "outlet", "published", "body")
    return {k: article[k] for k in keep if article[k]} | changes


def version_rows(db) -> list[dict]:
    return list(db.query("select * from article_versions order by article_id, version"))


@pytest.fixture
def sample(hash_sample, tmp_path):
    """A writable copy of the hash sample, and its avalanche and Cyclone Debbie article ids."""
    copy = hash_sample.copy_to(tmp_path / "sample")
    a = copy.open()
    yield a, copy.ids("avalanche"), copy.ids("debbie")
    a.close()


# ---- a changed reload keeps the previous version -------------------------------------------------------


def test_a_changed_reload_keeps_the_previous_version(arc, tmp_path):
    first = write(tmp_path / "monday.jsonl", flood())
    arc.load([first])
    seen = arc.db.execute("select updated_at from articles").fetchone()[0]
    second = write(tmp_path / "tuesday.jsonl", flood(EDITED, title="Town centre flooded again"))
    report = arc.load([second])
    assert report.updated == 1 and arc.db["articles"].count == 1
    article = arc.article(URL)
    assert article["body"] == EDITED and article["title"] == "Town centre flooded again"
    (old,) = version_rows(arc.db)
    assert (old["article_id"], old["version"]) == (article["id"], 1)
    assert (old["title"], old["body"], old["source"]) == ("Town centre flooded", BODY, f"{first}:1")
    assert old["seen_at"] == seen and old["replaced_at"] == article["updated_at"]
    arc.load([write(tmp_path / "wednesday.jsonl", flood(EDITED + "\nMore rain is due."))])
    assert [(v["version"], v["body"]) for v in version_rows(arc.db)] == [(1, BODY), (2, EDITED)]
    assert version_rows(arc.db)[1]["source"] == f"{second}:1"


def test_an_unchanged_reload_and_a_reembed_keep_no_version(arc, tmp_path):
    src = write(tmp_path / "a.jsonl", flood())
    arc.load([src])
    assert arc.load([src]).unchanged == 1
    arc.maintenance.rebuild(reembed=True, progress=None, index_type="auto")  # each article rewritten, same text
    assert arc.db.execute("select count(*) from chunks").fetchone()[0] > 0
    assert version_rows(arc.db) == []


def test_an_archive_made_before_versions_gets_the_table_at_its_next_load(arc, tmp_path):
    arc.load([write(tmp_path / "a.jsonl", flood())])
    arc.db.execute("drop table article_versions")
    arc.load([write(tmp_path / "b.jsonl", flood(EDITED))])
    assert [v["body"] for v in version_rows(arc.db)] == [BODY]


# ---- search, signatures and stories follow the latest version ------------------------------------------


def test_search_signatures_and_stories_follow_the_latest_version(sample, tmp_path):
    """A Debbie report rewritten as a copy of an avalanche report: everything derived moves with it."""
    arc, avalanche, debbie = sample
    db, target, source = arc.db, debbie[0], arc.article(avalanche[0])
    old = arc.article(target)
    arc.load([write(tmp_path / "rewrite.jsonl", again(source, url=old["url"]))])
    new = arc.article(target)
    assert new["id"] == target and new["body"] == source["body"]
    assert [v["body"] for v in version_rows(db)] == [old["body"]]

    def fts(word: str) -> set[int]:
        return {r[0] for r in db.execute("select rowid from articles_fts where articles_fts match ?", [word])}

    assert target not in fts("cyclone") and target in fts("avalanche")
    assert all("Debbie" not in t for (t,) in db.execute("select text from chunks where article_id = ?", [target]))
    assert (
        terms.signatures(db, [target])[target].tolist() == terms.signatures(db, [source["id"]])[source["id"]].tolist()
    )
    sig = db.execute("select signature from article_minhash where article_id = ?", [target]).fetchone()[0]
    assert np.array_equal(np.frombuffer(sig, np.uint64), dedupe.signature(dedupe.shingles(source["body"])))
    assert dedupe.group_members(db, [target])[target] and source["id"] in {
        m for m, _ in dedupe.group_members(db, [target])[target]
    }
    assert stories.story_ids(db, [target])[target] == stories.story_ids(db, [source["id"]])[source["id"]]
    assert stories.check(db) == [] and arc.verify().ok
    for mode in ("keyword", "semantic"):  # (a positive search shows one of the near-duplicate pair, either one)
        assert target not in {r.id for r in arc.search("Cyclone Debbie Queensland", k=50, mode=mode)}


# ---- deletes and verify -------------------------------------------------------------------------------


def test_delete_takes_every_version_and_the_words_no_other_article_uses(arc, tmp_path):
    arc.load([write(tmp_path / "a.jsonl", flood(), {**flood(BODY), "url": "http://news.example.com/other"})])
    arc.load([write(tmp_path / "b.jsonl", flood(EDITED))])
    assert len(version_rows(arc.db)) == 1

    def df(word: str):
        row = arc.db.execute("select df from terms where term = ?", [word]).fetchone()
        return row and row[0]

    assert (df("zorblat"), df("flooded")) == (1, 2)
    gone = arc.delete(urls=[URL])
    assert [g["id"] for g in gone] == [1] and gone[0]["versions"] == 1
    assert version_rows(arc.db) == [] and arc.db["articles"].count == 1
    assert (df("zorblat"), df("flooded")) == (None, 1)  # its own word gone from terms, a shared one counted down
    assert arc.db.execute("select count(*) from terms where df <= 0").fetchone()[0] == 0
    assert arc.verify().ok


def test_verify_finds_versions_of_missing_articles_and_repair_drops_them(arc, tmp_path):
    arc.load([write(tmp_path / "a.jsonl", flood())])
    arc.load([write(tmp_path / "b.jsonl", flood(EDITED))])
    arc.db.execute("insert into article_versions (article_id, version, title, body) values (99, 1, 'x', 'y')")
    arc.db.conn.commit()
    report = arc.verify()
    assert not report.ok and "1 earlier versions belong to no article (--repair drops them)" in report.problems
    assert arc.verify(repair=True).ok
    assert [v["article_id"] for v in version_rows(arc.db)] == [1] and arc.verify().ok


# ---- the diff ---------------------------------------------------------------------------------------------


def test_words_diff_marks_what_went_and_what_came():
    assert versions.words_diff("The cat sat on the mat.", "The dog sat on the red mat.") == [
        ("equal", "The "),
        ("delete", "cat"),
        ("insert", "dog"),
        ("equal", " sat on the"),
        ("insert", " red"),
        ("equal", " mat."),
    ]
    assert versions.words_diff("same", "same") == [("equal", "same")]


def test_diff_keeps_changed_paragraphs_with_context_and_folds_the_rest():
    old = "\n".join(f"Paragraph {i} stays." for i in range(10))
    new = old.replace("Paragraph 5 stays.", "Paragraph 5 changed.") + "\nA new ending."
    got = versions.diff(old, new)
    assert [(p.kind, p.skipped) for p in got] == [
        ("gap", 4), ("same", 0), ("changed", 0), ("same", 0), ("gap", 2), ("same", 0), ("changed", 0),
    ]  # fmt: skip
    assert got[2].segments == [("equal", "Paragraph 5 "), ("delete", "stays"), ("insert", "changed"), ("equal", ".")]
    assert got[-1].segments == [("insert", "A new ending.")]


@pytest.mark.parametrize(
    "old, new",
    [
        ("\n".join(f"p{i % 3}" for i in range(20_000)), "\n".join(f"p{(i + 1) % 3}" for i in range(20_000))[::-1]),
        ("\n".join(f"u{i}" for i in range(100_000)), "\n".join(f"u{i}" for i in reversed(range(100_000)))),
        ("the " * 500_000, "the " * 250_000 + "cat " + "the " * 250_000),
    ],
    ids=["three-kinds-of-paragraph", "reversed-paragraphs", "one-2MB-paragraph"],
)
def test_a_hostile_diff_is_cut_short_not_computed_in_full(old, new):
    """difflib takes minutes on these; the budget shows the stretch whole (and counts what it leaves off)."""
    got = versions.diff(old, new)
    assert len(got) <= versions.SHOWN_PARAGRAPHS + 1
    changed = [p for p in got if p.kind == "changed"]
    assert changed and all(len(p.segments) <= 3 for p in changed)
    shown = sum(len(s) for p in got for _, s in p.segments)
    assert shown <= len(old) + len(new)


# ---- the row page ---------------------------------------------------------------------------------------


@pytest.fixture
def changed_sample(hash_sample, tmp_path):
    """A copy of the hash sample where one avalanche article was reloaded with an edit holding markup."""
    copy = hash_sample.copy_to(tmp_path / "sample")
    arc = copy.open()
    try:
        old = arc.article(copy.ids("avalanche")[0])
        cut = old["body"].index(". ", len(old["body"]) // 2) + 1  # a sentence in the middle of the (one) paragraph
        body = old["body"][:cut] + " <script>alert(1)</script> rescuers said." + old["body"][cut:]
        arc.load([write(tmp_path / "v2.jsonl", again(old, body=body, title=old["title"] + " (updated)"))])
        return copy, old
    finally:
        arc.close()


async def test_the_row_page_shows_earlier_versions_and_an_escaped_diff(changed_sample):
    copy, old = changed_sample
    ds = Datasette([str(copy.db_path)], metadata=copy.metadata())
    html = (await ds.client.get(f"/archive/articles/{old['id']}")).text
    assert "1 earlier version<" in html and 'class="na-versions"' in html
    assert "<ins> (updated)</ins>" in html  # the headline's diff
    assert "<ins>&lt;script&gt;alert(1)&lt;/script&gt; rescuers said. </ins>" in html
    assert "<script>alert(1)</script>" not in html
    assert f"{copy.csv_path}:" in html  # where the earlier version came from
    unchanged = (await ds.client.get(f"/archive/articles/{copy.ids('debbie')[0]}")).text
    assert "earlier version" not in unchanged


async def test_an_allow_block_on_the_versions_table_hides_them_on_the_row_page(changed_sample):
    copy, old = changed_sample
    deny = {"databases": {"archive": {"tables": {"article_versions": {"allow": False}}}}}
    ds = Datasette([str(copy.db_path)], metadata=copy.metadata(deny))
    html = (await ds.client.get(f"/archive/articles/{old['id']}")).text
    assert "na-reader" in html and "earlier version" not in html


# ---- the real model --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_changed_reload_on_the_real_model(sample_archive, tmp_path):
    """The bundled model: an article rewritten under its URL is found by its new text and no longer by its old
    one; the old text is an earlier version."""
    arc = sample_archive.copy_to(tmp_path / "real").open()
    try:
        sql = "select article_id, count(*) n from chunks group by article_id order by n desc limit 1"
        article_id, chunks = arc.db.execute(sql).fetchone()
        old = arc.article(article_id)
        assert arc.search(old["title"], k=1, mode="semantic")[0].id == article_id
        body = (
            "Volunteers from Zurich rebuilt the collapsed roof of the mountain hotel within a single week. "
            "The Swiss volunteers carried timber up the slope on foot.\nThe hotel reopened to guests on Friday."
        )
        rewrite = again(old, body=body, title="Swiss volunteers rebuild a mountain hotel", subtitle=None)
        report = arc.load([write(tmp_path / "v2.jsonl", rewrite)])
        assert report.updated == 1 and report.chunks_embedded == 1 < chunks
        assert [(v["title"], v["body"]) for v in version_rows(arc.db)] == [(old["title"], old["body"])]
        hits = arc.search("Swiss volunteers rebuilt the collapsed hotel roof", k=3, mode="semantic")
        assert hits[0].id == article_id and "Zurich" in hits[0].passage
        assert article_id not in {r.id for r in arc.search(old["title"], k=10, mode="semantic")}
        assert arc.verify().ok
    finally:
        arc.close()


def test_versions_table_is_made_with_the_schema(tmp_path):
    db = store.open_db(str(tmp_path / "x.db"))
    try:
        assert set(db["article_versions"].columns_dict) == set(store.VERSION_COLUMNS)
        assert sqlite3.connect(tmp_path / "x.db").execute("select count(*) from article_versions").fetchone() == (0,)
    finally:
        db.conn.close()
