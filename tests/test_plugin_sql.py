"""The SQL functions semantic_search() and related_articles(), through Datasette and on a plain connection: the
wiring on the hash-encoder sample, what related_articles() finds on the real model (slow)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from datasette.app import Datasette

from datasette_plugins.news_archive import prepare_connection

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # SQL function errors
METADATA = Path(__file__).resolve().parent.parent / "metadata.yml"


@pytest.fixture(scope="module")
def ds(hash_sample):
    return Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata(yaml.safe_load(METADATA.read_text())))


@pytest.fixture(scope="module")
def debbie(hash_sample) -> list[int]:
    return hash_sample.ids("debbie")


async def sql(ds, query: str, **params):
    response = await ds.client.get("/archive.json", params={"sql": query, "_shape": "array", **params})
    return response.status_code, response.json()


async def test_semantic_search_returns_json_for_json_each(ds):
    status, rows = await sql(ds, "select semantic_search(:q, 5) as hits", q="avalanche buries a hotel in Italy")
    assert status == 200
    hits = json.loads(rows[0]["hits"])
    assert len(hits) == 5 and all(set(h) == {"article_id", "score", "chunk_id"} for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


async def test_semantic_search_joins_back_to_articles(ds):
    q = "avalanche buries a hotel in Italy"
    _, plain = await sql(ds, "select semantic_search(:q, 3) as hits", q=q)
    status, rows = await sql(
        ds,
        """
        select a.id, a.title, c.article_id = a.id as chunk_matches
        from json_each(semantic_search(:q, 3)) r
        join articles a on a.id = json_extract(r.value, '$.article_id')
        join chunks c on c.id = json_extract(r.value, '$.chunk_id')
        order by r.key""",
        q=q,
    )
    assert status == 200 and len(rows) == 3
    assert [r["id"] for r in rows] == [h["article_id"] for h in json.loads(plain[0]["hits"])]
    assert all(r["title"] and r["chunk_matches"] for r in rows)


async def test_related_articles_excludes_the_article(ds, debbie):
    status, rows = await sql(ds, "select related_articles(:id, 5) as hits", id=str(debbie[0]))
    assert status == 200
    hits = json.loads(rows[0]["hits"])
    assert len(hits) == 5 and debbie[0] not in [h["article_id"] for h in hits]
    assert all(set(h) == {"article_id", "score", "chunk_id"} for h in hits)


@pytest.mark.slow
async def test_sql_functions_find_the_story(sample_archive, debbie_ids):
    ds = Datasette([str(sample_archive.db_path)])
    status, rows = await sql(
        ds,
        """
        select a.title from json_each(semantic_search(:q, 3)) r
        join articles a on a.id = json_extract(r.value, '$.article_id') order by r.key""",
        q="avalanche buries a hotel in Italy",
    )
    assert status == 200 and "avalanche" in rows[0]["title"].lower()
    status, rows = await sql(ds, "select related_articles(:id, 5) as hits", id=str(debbie_ids[0]))
    ids = [h["article_id"] for h in json.loads(rows[0]["hits"])]
    assert status == 200 and debbie_ids[0] not in ids and ids[0] in debbie_ids


async def test_canned_queries(ds, debbie):
    response = await ds.client.get("/archive/semantic.json", params={"q": "cyclone in Queensland", "_shape": "array"})
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 10 and {"id", "title", "outlet", "published", "score", "passage"} <= set(rows[0])
    response = await ds.client.get("/archive/related.json", params={"article_id": debbie[0], "_shape": "array"})
    related = response.json()
    assert response.status_code == 200 and len(related) == 10
    assert debbie[0] not in {r["id"] for r in related} and {"id", "title", "outlet", "score"} <= set(related[0])


@pytest.mark.parametrize(
    "call",
    [
        "semantic_search('cyclone', 0)",
        "semantic_search('cyclone', 101)",
        "semantic_search('', 5)",
        f"semantic_search('{'x' * 1001}', 5)",
        "related_articles(999999, 5)",
        "related_articles('abc', 5)",
    ],
)
async def test_bad_arguments_are_sql_errors(ds, call):
    status, body = await sql(ds, f"select {call}")
    assert status == 400 and body["ok"] is False


def test_hook_on_a_plain_connection(hash_sample):
    ds = Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata())
    conn = sqlite3.connect(hash_sample.db_path)
    try:
        prepare_connection(conn, "archive", ds)
        hits = json.loads(conn.execute("select semantic_search('flooding after the cyclone')").fetchone()[0])
        assert len(hits) == 10
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("select semantic_search('flooding', 1000)").fetchone()
    finally:
        conn.close()


def test_hook_skips_databases_that_are_not_archives():
    conn = sqlite3.connect(":memory:")
    prepare_connection(conn, "other", Datasette([]))
    with pytest.raises(sqlite3.OperationalError, match="no such function"):
        conn.execute("select semantic_search('x')")


async def test_derived_tables_are_described_and_the_bulky_ones_hidden(ds):
    tables = {t["name"]: t for t in (await ds.client.get("/archive.json")).json()["tables"]}
    assert all(tables[t]["hidden"] for t in ("article_terms", "article_minhash", "minhash_bands"))
    assert not tables["terms"]["hidden"] and not tables["article_groups"]["hidden"]
    rows = (await ds.client.get("/archive/terms.json?_shape=array&_size=5")).json()
    assert len(rows) == 5 and rows[0]["df"] >= rows[-1]["df"] >= 1  # most used words first (sort_desc: df)
