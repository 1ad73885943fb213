"""What one query may cost: related coverage of a maximum-size article, broad filters, passages from chunks.

The archive's own SQL is traced (sqlite3's trace callback on its connection), so a test can say which reads a
query made; the one time bound the issue asks for (related on a 2 MB article under 1 s) is the slow test."""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import numpy as np
import pytest

from archive import search
from archive.sample import news_rows
from archive.sources import read_sources

LONGEST_URL = "https://example.org/the-whole-season"
MAX_BODY_CHARS = inspect.signature(read_sources).parameters["max_body_chars"].default  # the loader's body cap


@pytest.fixture(scope="module")
def arc(hash_sample):
    a = hash_sample.open()
    yield a
    a.close()


class Trace:
    """The SQL statements an archive's connection runs while in a `with` block."""

    def __init__(self, arc):
        self.conn, self.statements = arc.db.conn, []

    def __enter__(self) -> list[str]:
        self.conn.set_trace_callback(self.statements.append)
        return self.statements

    def __exit__(self, *exc) -> None:
        self.conn.set_trace_callback(None)


def reads_every_chunk_id(statements: list[str]) -> bool:
    return any("select c.id from chunks c join articles" in s for s in statements)


def test_a_broad_filter_is_applied_to_the_hits_not_as_a_list_of_every_chunk_id(arc):
    with Trace(arc) as statements:
        results = arc.search("cyclone hits the Queensland coast", k=10, since="1900-01-01", mode="semantic")
    assert len(results) == 10 and not reads_every_chunk_id(statements)


def test_a_selective_filter_still_goes_inside_faiss(arc):
    with Trace(arc) as statements:
        arc.search("economy", k=5, outlet="rte.ie", mode="semantic")
    assert reads_every_chunk_id(statements)


BROAD = [("1900-01-01", None), ("2017-02-01", None), (None, "2017-03-30")]


def _share(arc, since: str | None, until: str | None) -> float:
    bounds = [since or "0", f"{until}T99" if until else "9"]
    n = arc.db.execute("select count(*) from articles where published >= ? and published < ?", bounds).fetchone()[0]
    return n / arc.db["articles"].count


@pytest.mark.parametrize("since, until", BROAD)
def test_a_broad_filter_ranks_as_the_pre_filter_does(arc, monkeypatch, since, until):
    assert _share(arc, since, until) >= search.SELECTIVE_SHARE  # broad: applied to the hits
    query = dict(k=15, since=since, until=until, mode="semantic")
    after = arc.search("flooding after the storm", **query)
    monkeypatch.setattr(search, "SELECTIVE_SHARE", 1.01)  # every filter selective: FAISS's ID selector
    before = arc.search("flooding after the storm", **query)
    assert [(r.id, r.score) for r in after] == [(r.id, r.score) for r in before] and len(after) == 15


@pytest.mark.parametrize("since, until", BROAD)
def test_a_broad_filter_keeps_hybrid_results_to_the_filter(arc, since, until):
    results = arc.search("flooding after the storm", k=15, since=since, until=until)
    days = [r.published[:10] for r in results]
    assert len(results) == 15 and all((since or "0") <= d <= (until or "9") for d in days)


def test_broad_filters_on_related_keep_to_the_filter(arc, hash_sample):
    article = arc.article(hash_sample.story_urls["debbie"][0])
    with Trace(arc) as statements:
        results = arc.related(article["id"], k=10, since="2017-02-01")
    assert len(results) == 10 and all(r.published >= "2017-02-01" for r in results)
    assert not reads_every_chunk_id(statements)


@pytest.mark.parametrize("mode", ["semantic", "keyword", "hybrid"])
def test_results_read_passages_never_bodies(arc, hash_sample, mode):
    article = arc.article(hash_sample.story_urls["debbie"][0])
    with Trace(arc) as statements:
        found = arc.search("Which hotel was buried by snow in Italy?", k=10, mode=mode)
        related = arc.related(article["id"], k=10, mode=mode)
    assert found and related and not [s for s in statements if "body" in s]
    for r in found + related:  # every passage is (a stretch of) the chunk it names
        text = arc.db.execute("select text from chunks where id = ?", [r.chunk_id]).fetchone()[0]
        assert r.passage and r.passage in text


def test_a_keyword_passage_is_the_stretch_around_a_query_word(arc):
    results = arc.search("avalanche", k=3, mode="keyword")
    assert all("avalanche" in r.passage.lower() for r in results)


@pytest.mark.parametrize("n", [1, 8, 32, 33, 100, 2_500])
def test_chunk_sample_keeps_the_lead_and_spreads_the_rest(n):
    picked = search.chunk_sample(n)
    assert picked == sorted(set(picked)) and len(picked) == min(n, search.QUERY_CHUNKS)
    assert picked[: min(n, search.LEAD_CHUNKS)] == list(range(min(n, search.LEAD_CHUNKS)))
    assert picked[-1] == n - 1  # to the end of the article


# ---- a maximum-size article -------------------------------------------------------------------------------


def longest_record(source: Path) -> dict:
    """An article as long as the loader takes (MAX_BODY_CHARS): every Cyclone Debbie report, then the rest of
    the corpus, so related coverage has a story to find."""
    rows = [r for r in news_rows(source) if r["text"].strip()]
    debbie = [r["text"] for r in rows if "Cyclone Debbie" in r["text"][:500]]
    parts, size = [], 0
    for text in debbie + [r["text"] for r in rows if r["text"] not in debbie]:
        parts.append(text)
        size += len(text) + 2
        if size >= MAX_BODY_CHARS:
            break
    body = "\n\n".join(parts)[:MAX_BODY_CHARS]
    return {"url": LONGEST_URL, "title": "Cyclone Debbie: the season", "outlet": "example.org",
            "published": "2017-03-29", "body": body}  # fmt: skip


@pytest.fixture(scope="module")
def longest(hash_sample, news_csv, tmp_path_factory):
    """A copy of the hash sample holding one maximum-size article (about 2,000 chunks)."""
    base = tmp_path_factory.mktemp("longest")
    sample = hash_sample.copy_to(base)
    (base / "longest.jsonl").write_text(json.dumps(longest_record(news_csv)) + "\n", encoding="utf-8")
    a = sample.open()
    a.load([str(base / "longest.jsonl")], workers=0)
    yield a, a.article(LONGEST_URL)["id"]
    a.close()


@pytest.mark.slow
def test_related_on_a_maximum_size_article_answers_in_under_a_second(longest):
    arc, article_id = longest
    chunks = arc.db.execute("select count(*) from chunks where article_id = ?", [article_id]).fetchone()[0]
    assert chunks > 1_500
    arc.related(article_id, k=10)  # the index is loaded, SQLite's pages are cached
    times = []
    for _ in range(3):
        started = time.perf_counter()
        results = arc.related(article_id, k=10)
        times.append(time.perf_counter() - started)
    assert min(times) < 1.0, times
    assert len(results) == 10 and article_id not in {r.id for r in results}


@pytest.mark.slow
def test_related_of_others_reads_a_sample_of_the_longest_article(longest):
    """As a candidate, the long article gives QUERY_CHUNKS of its vectors, not all of them."""
    arc, article_id = longest
    vectors = search._article_vectors(arc.db, [article_id, 1], int(arc.meta["dimensions"]), cap=search.QUERY_CHUNKS)
    assert len(vectors[article_id][1]) == search.QUERY_CHUNKS
    assert np.allclose(np.linalg.norm(vectors[article_id][0], axis=1), 1, atol=1e-4)
