"""Stories (archive/stories.py) and the same-story split of related coverage: assignment, merges, deletes, checks
and reads on the hash-encoder sample and small hand-made archives; the CLI command and the plugin's pages; one
real-model test (slow) that the sample's Cyclone Debbie reports form one story."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from datasette.app import Datasette
from hash_encoder import HashEncoder

from archive import Archive, dedupe, store, stories, terms
from archive.cli import cli

CYCLONE = (
    "Cyclone Debbie crossed the Queensland coast near Airlie Beach with winds of 260 kilometres an hour. "
    "Thousands of residents of Bowen and Proserpine sheltered in evacuation centres as the storm cut power "
    "to tens of thousands of homes and flooded the Whitsunday islands."
)
MATCH = (
    "Barcelona beat Paris Saint-Germain six goals to one at the Camp Nou, overturning a four goal deficit from "
    "the first leg. Sergi Roberto scored the winner in the final seconds of stoppage time as Neymar inspired "
    "the most remarkable comeback in Champions League history."
)
BOTH = (  # the same facts in other words: a bridge, not a near-duplicate copy of either
    "Storms and sport: Cyclone Debbie brought winds of 260 kilometres an hour to Airlie Beach, Bowen and Proserpine "
    "in Queensland, cutting power and flooding the Whitsunday islands while residents sheltered in evacuation "
    "centres. In Europe, Barcelona overturned a four goal deficit against Paris Saint-Germain at the Camp Nou, "
    "Sergi Roberto scoring in stoppage time of a remarkable Champions League comeback inspired by Neymar."
)


def _forget_all(db, ids: list[int], **kw) -> None:
    """What the delete transaction runs (archive/maintenance.py's _forget); `kw`: the small archive's thresholds."""
    dedupe.forget(db, ids)
    terms.forget(db, ids)
    stories.forget(db, ids, **kw)


LOOSE = {"threshold": 0.3, "min_cosine": 0.0}  # the hash encoder's scores for the small archive: cyclone-both
# 0.47, football-both 0.40, cyclone-football 0.08; so at 0.3 "both" bridges the other two


def delete(db, ids: list[int]) -> None:
    store.delete_articles(db, ids, lambda d, i: _forget_all(d, i, **LOOSE))


def assign(db, ids: list[int], **kw) -> dict[int, int]:
    with store.transaction(db):
        return stories.assign(db, ids, **kw)


def snapshot(db) -> tuple[list, list]:
    return (
        db.execute("select * from stories order by id").fetchall(),
        db.execute("select article_id, story_id, day from article_story order by article_id").fetchall(),
    )


@pytest.fixture
def storied(hash_sample, tmp_path):
    """A writable copy of the hash sample, whose load assigned every article a story."""
    sample = hash_sample.copy_to(tmp_path)
    arc = sample.open()
    yield sample, arc
    arc.close()


SMALL = [
    {"title": "Cyclone Debbie hits Queensland", "body": CYCLONE, "url": "https://a.example/cyclone",
     "published": "2017-03-28", "outlet": "a.example"},
    {"title": "Barcelona stun PSG", "body": MATCH, "url": "https://b.example/match", "published": "2017-03-25",
     "outlet": "b.example"},
    {"title": "A week of sport and storms", "body": BOTH, "url": "https://c.example/both",
     "published": "2017-03-30", "outlet": "c.example"},
]  # fmt: skip


@pytest.fixture(scope="module")
def small_built(tmp_path_factory) -> Path:
    """The small archive, loaded once: three hand-made articles (cyclone, football, one reporting both)."""
    base = tmp_path_factory.mktemp("small")
    src = base / "small.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in SMALL), encoding="utf-8")
    arc = Archive(base / "small.db", base / "idx", create=True, encoder=HashEncoder())
    arc.load([str(src)])
    arc.close()
    return base


@pytest.fixture
def small(small_built, tmp_path):
    """A writable copy of the small archive with its stories forgotten; yields it with the three ids."""
    shutil.copy(small_built / "small.db", tmp_path / "small.db")
    shutil.copytree(small_built / "idx", tmp_path / "idx", ignore=shutil.ignore_patterns(".lock"))
    arc = Archive(tmp_path / "small.db", tmp_path / "idx", encoder=HashEncoder())
    with store.transaction(arc.db):
        arc.db.execute("delete from article_story")
        arc.db.execute("delete from stories")
    yield arc, [arc.article(r["url"])["id"] for r in SMALL]
    arc.close()


# ---- assignment ---------------------------------------------------------------------------------------------


def test_every_article_gets_exactly_one_story(storied):
    _, arc = storied
    n = arc.db["articles"].count
    assert arc.db.execute("select count(*), count(distinct article_id) from article_story").fetchone() == (n, n)
    assert arc.db.execute("select sum(size) from stories").fetchone()[0] == n
    assert stories.check(arc.db) == []


def test_near_duplicate_copies_share_a_story(storied):
    _, arc = storied
    groups = arc.db.execute(
        "select group_id, group_concat(article_id) from article_groups group by group_id having count(*) > 1"
    ).fetchall()
    assert groups, "the sample holds the Breslin duplicate"
    for _, members in groups:
        ids = [int(i) for i in members.split(",")]
        assert len(set(stories.story_ids(arc.db, ids).values())) == 1


def test_a_story_of_one_article_is_a_normal_story(small):
    arc, (cyclone, match, _) = small
    out = assign(arc.db, [cyclone, match])
    assert out[cyclone] != out[match]
    s = stories.story(arc.db, out[cyclone])
    assert (s["title"], s["size"], s["first"], s["last"]) == ("Cyclone Debbie hits Queensland", 1, "2017-03-28",
                                                              "2017-03-28")  # fmt: skip
    assert s["outlets"] == ["a.example"] and [a["id"] for a in s["articles"]] == [cyclone]
    assert s["articles"][0]["first"] is True


def test_a_bridging_article_merges_two_stories_into_the_older(small):
    arc, (cyclone, match, both) = small
    first = assign(arc.db, [cyclone])
    second = assign(arc.db, [match])
    assert first[cyclone] != second[match]
    assign(arc.db, [both], threshold=0.3, min_cosine=0.0)
    of = stories.story_ids(arc.db, [cyclone, match, both])
    assert set(of.values()) == {min(first[cyclone], second[match])}
    s = stories.story(arc.db, of[both])
    assert s["size"] == 3 and (s["first"], s["last"]) == ("2017-03-25", "2017-03-30")
    assert [a["outlet"] for a in s["articles"]] == ["b.example", "a.example", "c.example"]  # timeline order
    assert [a["first"] for a in s["articles"]] == [True, False, False] and s["outlets"][0] == "b.example"
    assert arc.db.execute("select count(*) from stories").fetchone()[0] == 1 and stories.check(arc.db) == []


def test_below_the_threshold_articles_stay_apart(small):
    arc, (cyclone, match, both) = small
    out = assign(arc.db, [cyclone, match, both], threshold=0.99)
    assert len(set(out.values())) == 3


def test_an_undated_article_gets_a_story(small):
    arc, (cyclone, match, both) = small
    with store.transaction(arc.db):
        arc.db.execute("update articles set published = null where id = ?", [cyclone])
    out = assign(arc.db, [cyclone, match, both], threshold=0.99)
    s = stories.story(arc.db, out[cyclone])
    assert s["size"] == 1 and s["first"] is None and s["articles"][0]["published"] is None
    assert stories.check(arc.db) == []


def test_batch_scores_are_related_coverages_scores(storied):
    """Assignment scores a batch at once (archive/stories.py _Scorer): the same numbers as related coverage's
    own pairwise scoring (search._semantic_similarity blended with terms.similarity)."""
    from archive.search import DEFAULT_WEIGHTS, _semantic_similarity

    _, arc = storied
    ids = [r[0] for r in arc.db.execute("select id from articles order by id limit 12")]
    vecs = stories._chunk_vectors(arc.db, ids)
    scorer = stories._Scorer(arc.db, {ids[0]: vecs[ids[0]]}, set(ids[1:]))
    w = DEFAULT_WEIGHTS.keyword_weight
    keyword = terms.similarity(arc.db, ids[0], ids[1:])
    for other, score in scorer.scores(ids[0], ids[1:]).items():
        semantic, _ = _semantic_similarity(vecs[ids[0]], vecs[other], list(range(len(vecs[other]))))
        assert score == pytest.approx((1 - w) * semantic + w * keyword[other], abs=1e-6)
    assert len(scorer.scores(ids[0], ids[1:])) == len(ids) - 1


def test_reassigning_an_updated_article_keeps_one_row(storied):
    _, arc = storied
    aid = arc.db.execute("select id from articles order by id limit 1").fetchone()[0]
    assign(arc.db, [aid])
    assert arc.db.execute("select count(*) from article_story where article_id = ?", [aid]).fetchone()[0] == 1
    assert stories.check(arc.db) == []


# ---- delete, verify, repair ---------------------------------------------------------------------------------


def test_deleting_updates_the_story_and_an_empty_story_goes(small):
    arc, (cyclone, match, both) = small
    sid = assign(arc.db, [cyclone, match, both], **LOOSE)[both]
    delete(arc.db, [cyclone])  # football and "both" still connect: one story, without the cyclone's outlet
    s = stories.story(arc.db, sid)
    assert s["size"] == 2 and (s["first"], s["last"]) == ("2017-03-25", "2017-03-30")
    assert "a.example" not in s["outlets"] and stories.story_ids(arc.db, [match, both]) == {match: sid, both: sid}
    delete(arc.db, [match, both])
    assert stories.story(arc.db, sid) is None
    assert arc.db.execute("select count(*) from stories").fetchone()[0] == 0 and stories.check(arc.db) == []


def test_deleting_the_bridge_splits_the_story(small):
    arc, (cyclone, match, both) = small
    sid = assign(arc.db, [cyclone, match, both], **LOOSE)[both]
    delete(arc.db, [both])
    of = stories.story_ids(arc.db, [cyclone, match])
    assert of[cyclone] == sid != of[match]  # the part with the oldest article keeps the id
    titles = [stories.story(arc.db, of[a])["title"] for a in (cyclone, match)]
    assert titles == ["Cyclone Debbie hits Queensland", "Barcelona stun PSG"]
    assert arc.db.execute("select count(*), sum(size) from stories").fetchone() == (2, 2)
    assert stories.check(arc.db) == []


def test_stories_the_load_built_hold_together(storied):
    """Every link assignment made is one `split` finds again: a story splits only when a member goes."""
    _, arc = storied
    with store.transaction(arc.db):
        for s in stories.list_stories(arc.db, min_size=2, limit=None):
            assert stories.split(arc.db, s["id"]) == [s["id"]]


def test_check_names_each_problem_and_rebuild_repairs_them(storied):
    _, arc = storied
    with store.transaction(arc.db):
        arc.db.execute("delete from article_story where article_id = (select min(article_id) from article_story)")
        arc.db.execute("update stories set size = size + 5 where id = (select max(id) from stories)")
        arc.db.execute("insert into stories (title, size) values ('orphan', 0)")
        arc.db.execute("drop index stories_newest")  # an archive from before the index page's indexes
    problems = stories.check(arc.db)
    assert any("stories_newest" in p for p in problems)
    assert any("have no story" in p for p in problems)
    assert any("wrong size" in p for p in problems)
    assert any("stories have no articles" in p for p in problems)
    stories.rebuild(arc.db)
    assert stories.check(arc.db) == []


def test_missing_page_indexes_are_added_by_a_writer_without_a_rebuild(storied):
    _, arc = storied
    before = arc.db.execute("select article_id, story_id from article_story order by article_id").fetchall()
    arc.db.execute("drop index stories_biggest")  # an archive from before the index page's indexes
    store.ensure_derived_tables(arc.db)  # what every writer (load, delete, repair) runs first
    assert stories.check(arc.db) == []
    assert arc.db.execute("select article_id, story_id from article_story order by article_id").fetchall() == before


def test_check_on_an_archive_without_story_tables(tmp_path):
    d = store.open_db(str(tmp_path / "old.db"))
    d.execute("drop table if exists stories")
    assert stories.check(d) and "repair" in stories.check(d)[0]
    d.conn.close()


def test_rebuild_is_deterministic_and_reload_changes_no_story(storied):
    sample, arc = storied
    stories.rebuild(arc.db)  # (a rebuild walks articles in id order, a load in its batches: groupings may differ)
    before = snapshot(arc.db)
    stories.rebuild(arc.db)
    assert snapshot(arc.db) == before
    arc.load([str(sample.csv_path)], workers=0)  # every article unchanged: no batch re-derives anything
    assert snapshot(arc.db) == before


# ---- reads ----------------------------------------------------------------------------------------------------


def test_list_stories_sorts_and_filters(storied):
    _, arc = storied
    by_size = stories.list_stories(arc.db, sort="size", limit=None)
    assert [s["size"] for s in by_size] == sorted((s["size"] for s in by_size), reverse=True)
    newest = [s["last"] for s in stories.list_stories(arc.db, limit=None) if s["last"]]
    assert newest == sorted(newest, reverse=True)
    assert all(s["size"] >= 2 for s in stories.list_stories(arc.db, min_size=2, limit=None))
    week = stories.list_stories(arc.db, since="2017-03-24", until="2017-03-30", limit=None, with_articles=True)
    assert week and all(s["last"] >= "2017-03-24" and s["first"] < "2017-03-31" for s in week)
    outlet = by_size[0]["outlets"][0]
    for s in stories.list_stories(arc.db, outlet=outlet.upper(), limit=None, with_articles=True):
        assert outlet in {a["outlet"] for a in s["articles"]}
    assert len(stories.list_stories(arc.db, limit=3, offset=1)) == 3


def test_outlet_filter_finds_the_same_stories_by_either_plan(storied, monkeypatch):
    _, arc = storied
    outlet = stories.list_stories(arc.db, sort="size", limit=1)[0]["outlets"][0]
    found = {}
    for rare in (0, 10**9):  # never rare (walk stories, probe members); always rare (from the outlet's articles)
        monkeypatch.setattr(stories, "RARE_OUTLET", rare)
        found[rare] = [
            stories.list_stories(arc.db, outlet=name, sort=sort, limit=None)
            for name in (outlet, outlet.upper())
            for sort in stories.SORTS
        ]
    assert found[0] == found[10**9] and all(found[0])
    assert stories.list_stories(arc.db, outlet="no-such-outlet.example") == []


def test_list_stories_rejects_a_bad_date_or_sort(storied):
    _, arc = storied
    from archive import ArchiveError

    with pytest.raises(ArchiveError, match="since"):
        stories.list_stories(arc.db, since="last week")
    with pytest.raises(ArchiveError, match="sort"):
        stories.list_stories(arc.db, sort="loudest")


def test_story_title_is_a_member_headline_and_timeline_is_ordered(storied):
    _, arc = storied
    big = stories.list_stories(arc.db, sort="size", limit=1)[0]
    s = stories.story(arc.db, big["id"])
    assert s["title"] in {a["title"] for a in s["articles"]} and len(s["articles"]) == s["size"]
    dated = [a["published"] for a in s["articles"] if a["published"]]
    assert dated == sorted(dated) and s["first"] == dated[0] and s["last"] == dated[-1]
    assert all(a["first"] == (a["published"] == dated[0]) for a in s["articles"])
    assert stories.story(arc.db, 10**9) is None


@pytest.mark.parametrize(
    "score, published, other, same",
    [
        (0.9, "2017-03-01", "2017-03-15", True),  # 14 days apart: still the story
        (0.9, "2017-03-01", "2017-03-16", False),  # 15: a topic that came back
        (0.9, None, "2017-03-16", True),  # undated: the score alone decides
        (0.46, "2017-03-01", "2017-03-01", False),
        (0.47, "2017-03-01T10:00:00", "2017-03-02", True),
    ],
)
def test_same_story_is_the_score_and_the_dates(score, published, other, same):
    assert stories.same_story(score, "hybrid", published, other) is same


def test_related_results_say_same_story_by_the_calibrated_threshold(storied, hash_sample):
    _, arc = storied
    article = arc.article(hash_sample.story_urls["debbie"][0])
    results = arc.related(article["id"], k=10)
    of = stories.story_ids(arc.db, [r.id for r in results])
    for r in results:
        assert r.same_story == stories.same_story(r.score, "hybrid", article["published"], r.published)
        assert r.story_id == of[r.id]
        assert r.to_dict()["same_story"] is r.same_story
    assert "same_story" not in arc.search("cyclone", k=3)[0].to_dict()


# ---- the shells -----------------------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_stories_json_lines(storied):
    sample, arc = storied
    out = run("stories", "--db", sample.db_path, "--index-dir", sample.index_dir, "--min-size", "2", "--json",
              "--limit", "0")  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines()]
    assert len(lines) == len(stories.list_stories(arc.db, min_size=2, limit=None)) > 0
    for s in lines:
        assert set(s) == {"id", "title", "first", "last", "outlets", "articles"} and len(s["articles"]) >= 2
        assert all(set(a) == {"id", "url", "title", "outlet", "published"} for a in s["articles"])


def test_cli_stories_text_and_bad_date(storied):
    sample, _ = storied
    where = ("--db", sample.db_path, "--index-dir", sample.index_dir)
    out = run("stories", *where, "--sort", "size", "--limit", "3")
    assert out.exit_code == 0 and out.output.count(" articles ") == 3
    bad = run("stories", *where, "--since", "yesterday")
    assert bad.exit_code != 0 and "since" in bad.output


def test_cli_related_prints_the_split(storied, hash_sample):
    sample, arc = storied
    article = arc.article(hash_sample.story_urls["debbie"][0])["id"]
    out = run("related", article, "--db", sample.db_path, "--index-dir", sample.index_dir, "-k", "10")
    assert out.exit_code == 0, out.output
    same = sum(r.same_story for r in arc.related(article, k=10))
    assert f"Same story: {same} other article" in out.output
    assert ("Related topics:" in out.output) == (same < 10)


@pytest.fixture
def ds(storied):
    sample, _ = storied
    return Datasette([str(sample.db_path)], metadata=sample.metadata())


async def test_story_index_page_and_json(ds, storied):
    _, arc = storied
    html = (await ds.client.get("/archive/-/stories?sort=size")).text
    biggest = stories.list_stories(arc.db, sort="size", limit=1)[0]
    assert f'/archive/-/stories/{biggest["id"]}"' in html and 'name="outlet"' in html and 'name="since"' in html
    body = (await ds.client.get("/archive/-/stories.json?min_size=2&sort=size")).json()
    assert body["stories"] and all(s["size"] >= 2 for s in body["stories"])
    assert (await ds.client.get("/archive/-/stories.json?sort=loudest")).status_code == 400
    assert (await ds.client.get("/archive/-/stories.json?since=soon")).status_code == 400


async def test_story_page_timeline_and_json(ds, storied):
    _, arc = storied
    big = stories.list_stories(arc.db, sort="size", limit=1)[0]
    body = (await ds.client.get(f"/archive/-/stories/{big['id']}.json")).json()
    assert body["id"] == big["id"] and len(body["articles"]) == body["size"]
    html = (await ds.client.get(f"/archive/-/stories/{big['id']}")).text
    assert "na-timeline" in html and "First reported by" in html
    assert all(f"/archive/articles/{a['id']}" in html for a in body["articles"])
    assert (await ds.client.get("/archive/-/stories/999999999")).status_code == 404
    assert (await ds.client.get("/archive/-/stories/abc")).status_code == 400


async def test_related_page_splits_and_links_stories(ds, storied, hash_sample):
    _, arc = storied
    article = arc.article(hash_sample.story_urls["debbie"][0])["id"]
    html = (await ds.client.get(f"/archive/articles/{article}/-/related")).text
    same = sum(r.same_story for r in arc.related(article, k=10))
    assert "Same story" in html and "/-/stories/" in html
    if same:
        assert f"{same} other article{'' if same == 1 else 's'} on this story" in html
    body = (await ds.client.get(f"/archive/articles/{article}/-/related.json")).json()
    assert all(isinstance(r["same_story"], bool) and "story_id" in r for r in body["results"])
    row = (await ds.client.get(f"/archive/articles/{article}")).text
    assert f"/archive/-/stories/{stories.story_ids(arc.db, [article])[article]}" in row


# ---- the real model -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_puts_the_cyclone_reports_in_one_story(sample_archive, tmp_path):
    sample = sample_archive.copy_to(tmp_path)
    arc = sample.open()
    try:
        stories.rebuild(arc.db)
        debbie = stories.story_ids(arc.db, sample.ids("debbie"))
        avalanche = stories.story_ids(arc.db, sample.ids("avalanche"))
        main = max(set(debbie.values()), key=list(debbie.values()).count)
        assert list(debbie.values()).count(main) >= 0.7 * len(debbie)
        assert main not in set(avalanche.values())
        with store.transaction(arc.db):  # with the real model's thresholds too, a story splits only when a member goes
            assert all(stories.split(arc.db, s["id"]) == [s["id"]] for s in stories.list_stories(arc.db, limit=None))
    finally:
        arc.close()


def test_pairs_file_holds_ids_urls_and_labels_only():
    rows = [json.loads(line) for line in (Path(__file__).parent.parent / "benchmarks" / "story_pairs.jsonl").open()]
    assert len(rows) >= 200 and all(set(r) == {"a_id", "a_url", "b_id", "b_url", "same_story"} for r in rows)
    assert 0.3 < sum(r["same_story"] for r in rows) / len(rows) < 0.7


async def test_article_row_reads_as_an_article_with_raw_columns_folded(ds, storied, hash_sample):
    _, arc = storied
    article = arc.article(hash_sample.story_urls["debbie"][0])
    html = (await ds.client.get(f"/archive/articles/{article['id']}")).text
    reader = html[html.index('<article class="na-reader">') : html.index("</article>")]
    assert "<h2>" in reader and "Cyclone" in reader and "Find related coverage" in reader and "Its story" in reader
    assert reader.count("<p>") >= 1 and article["url"] in reader
    assert html.index("</article>") < html.index('<details class="na-raw">') < html.index('class="rows-and-columns"')
    plain = (await ds.client.get("/archive/chunks/1")).text  # other tables keep Datasette's own row page
    assert "na-reader" not in plain
