"""Search and related coverage on a real archive: real articles, the bundled model, FAISS and SQLite."""

import pytest

from archive import ArchiveError
from archive.search import Filters, fts_query


@pytest.fixture(scope="module")
def arc(sample_archive):
    a = sample_archive.open()
    yield a
    a.close()


@pytest.mark.parametrize(
    "text",
    ['what did "the" minister say?', "NEAR(a b) AND OR NOT *", "cyclone: debbie's ^path", "-- ; drop table x"],
)
def test_fts_query_is_safe_for_any_user_text(arc, text):
    match = fts_query(text)
    arc.db.execute("select count(*) from articles_fts where articles_fts match ?", [match]).fetchone()


def test_semantic_search_finds_the_story_by_meaning(arc, sample_archive):
    results = arc.search("tropical storm batters the Queensland coast", k=5)
    debbie = set(sample_archive.story_urls["debbie"])
    assert sum(r.url in debbie for r in results) >= 4
    assert results == sorted(results, key=lambda r: -r.score)
    assert all(r.passage for r in results)


@pytest.mark.parametrize("mode", ["semantic", "keyword", "hybrid"])
def test_every_mode_answers_a_natural_language_query(arc, sample_archive, mode):
    results = arc.search("Which hotel was buried by snow in Italy?", k=5, mode=mode)
    assert results[0].url in sample_archive.story_urls["avalanche"]


def test_outlet_filter_still_returns_k(arc):
    outlet = "rte.ie"
    n = arc.db.execute("select count(*) from articles where outlet = ?", [outlet]).fetchone()[0]
    results = arc.search("economy", k=min(n, 10), outlet=outlet)
    assert len(results) == min(n, 10) and {r.outlet for r in results} == {outlet}


def test_date_filters_are_inclusive(arc):
    results = arc.search("cyclone", k=50, since="2017-03-28", until="2017-03-29")
    assert results and all("2017-03-28" <= r.published[:10] <= "2017-03-29" for r in results)


def test_a_filter_matching_nothing_returns_nothing(arc):
    assert arc.search("cyclone", outlet="nosuch.example") == []


def test_bad_dates_and_modes_are_clear_errors(arc):
    with pytest.raises(ArchiveError, match="not a date"):
        arc.search("x", since="last tuesday")
    with pytest.raises(ArchiveError, match="mode must be"):
        arc.search("x", mode="fuzzy")
    with pytest.raises(ArchiveError, match="empty"):
        arc.search("   ")


def test_related_finds_other_outlets_coverage_of_the_same_story(arc, sample_archive):
    for story in ("debbie", "avalanche"):
        urls = sample_archive.story_urls[story]
        article = arc.article(urls[0])
        results = arc.related(article["id"], k=len(urls) - 1)
        assert article["id"] not in {r.id for r in results}
        found = sum(r.url in urls for r in results)
        assert found >= len(urls) - 2, (story, [(r.outlet, r.title) for r in results])


def test_related_never_returns_an_exact_duplicate(arc):
    dup = arc.db.execute("select body_hash from articles group by body_hash having count(*) > 1 limit 1").fetchone()
    if dup is None:
        pytest.skip("no duplicate bodies in the slice")
    ids = [r[0] for r in arc.db.execute("select id from articles where body_hash = ?", [dup[0]])]
    assert not {r.id for r in arc.related(ids[0], k=20)} & set(ids)


def test_filters_dataclass_builds_parameterised_sql():
    where, params = Filters("bbc.co.uk", "2017-03-01", "2017-03-31").sql()
    assert "?" in where and "bbc" not in where
    assert params == ["bbc.co.uk", "2017-03-01", "2017-04-01"]
