"""The plugin's pages and JSON through datasette.client: routes, shapes, errors and escaping on the hash-encoder
sample (served through the plugin's `encoder` setting); relevance of related coverage on the real model (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasette.app import Datasette

RESULT_KEYS = {"id", "url", "title", "outlet", "published", "score", "passage"}
# other outlets of a near-duplicate group; the story, where there is one; the chunk the passage comes from
OPTIONAL_KEYS = {"also", "story_id", "chunk_id"}
SCRIPT_TITLE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def ds(hash_sample):
    return Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata())


@pytest.fixture(scope="module")
def debbie(hash_sample) -> list[int]:
    return hash_sample.ids("debbie")


def write_jsonl(path: Path, *records: dict) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


async def get_json(ds, path: str, status: int = 200):
    response = await ds.client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


async def test_plugin_is_installed(ds):
    plugins = (await ds.client.get("/-/plugins.json")).json()
    assert "news-archive" in {p["name"] for p in plugins}


async def test_semantic_page_has_form_and_results(ds):
    response = await ds.client.get("/archive/-/semantic?q=avalanche+buries+a+hotel+in+Italy")
    assert response.status_code == 200
    html = response.text
    for fragment in (
        'name="q"',
        'name="mode"',
        'name="outlet"',
        'name="since"',
        'name="until"',
        'name="k"',
        'class="na-result"',
        "Find related coverage",
        "/archive/articles/",
    ):
        assert fragment in html
    assert "avalanche" in html.lower()


async def test_the_styles_are_a_static_file_linked_from_the_plugin_pages(ds):
    css = await ds.client.get("/-/static-plugins/news_archive/news_archive.css")
    assert css.status_code == 200 and ".na-result" in css.text and ".na-timeline" in css.text
    page = await ds.client.get("/archive/-/semantic")
    assert "/-/static-plugins/news_archive/news_archive.css" in page.text and "<style>" not in page.text


async def test_semantic_page_without_query_shows_the_form(ds):
    response = await ds.client.get("/archive/-/semantic")
    assert response.status_code == 200
    assert 'name="q"' in response.text and 'class="na-result"' not in response.text


async def test_semantic_json_shape(ds):
    body = await get_json(ds, "/archive/-/semantic.json?q=avalanche+buries+a+hotel&k=5")
    assert set(body) == {"query", "results", "loading"}
    assert body["query"] == "avalanche buries a hotel" and body["loading"] is None  # no load running
    assert 1 <= len(body["results"]) <= 5
    for r in body["results"]:
        assert RESULT_KEYS <= set(r) <= RESULT_KEYS | OPTIONAL_KEYS
        assert isinstance(r["id"], int) and isinstance(r["score"], float) and r["passage"]
    assert "avalanche" in (body["results"][0]["title"] + body["results"][0]["passage"]).lower()


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
async def test_each_mode_answers(ds, mode):
    body = await get_json(ds, f"/archive/-/semantic.json?q=cyclone+Debbie+Queensland&k=3&mode={mode}")
    assert len(body["results"]) == 3
    assert any("debbie" in (r["title"] + r["passage"]).lower() for r in body["results"])


async def test_outlet_filter(ds):
    everything = await get_json(ds, "/archive/-/semantic.json?q=cyclone&k=20")
    outlet = everything["results"][0]["outlet"]
    body = await get_json(ds, f"/archive/-/semantic.json?q=cyclone&k=20&outlet={outlet}")
    assert body["results"] and {r["outlet"] for r in body["results"]} == {outlet}


async def test_date_filters(ds):
    everything = await get_json(ds, "/archive/-/semantic.json?q=cyclone&k=30&mode=semantic")
    days = sorted({r["published"][:10] for r in everything["results"] if r["published"]})
    middle = days[len(days) // 2]
    since = await get_json(ds, f"/archive/-/semantic.json?q=cyclone&k=30&mode=semantic&since={middle}")
    until = await get_json(ds, f"/archive/-/semantic.json?q=cyclone&k=30&mode=semantic&until={middle}")
    assert since["results"] and all(r["published"][:10] >= middle for r in since["results"])
    assert until["results"] and all(r["published"][:10] <= middle for r in until["results"])


async def test_related_json_shape(ds, debbie):
    article = debbie[0]
    body = await get_json(ds, f"/archive/articles/{article}/-/related.json?k=5")
    assert body["query"] == str(article) and len(body["results"]) == 5
    ids = [r["id"] for r in body["results"]]
    assert article not in ids  # related results also say whether they are the same story
    assert all(
        RESULT_KEYS | {"same_story"} <= set(r) <= RESULT_KEYS | OPTIONAL_KEYS | {"same_story"} for r in body["results"]
    )
    assert [r["score"] for r in body["results"]] == sorted((r["score"] for r in body["results"]), reverse=True)


@pytest.mark.slow
async def test_related_json_finds_other_outlets_coverage(sample_archive, debbie_ids):
    ds = Datasette([str(sample_archive.db_path)])
    article = debbie_ids[0]
    body = await get_json(ds, f"/archive/articles/{article}/-/related.json?k=5")
    ids = [r["id"] for r in body["results"]]
    assert article not in ids and ids[0] in debbie_ids
    assert sum(i in debbie_ids for i in ids[:3]) >= min(3, len(debbie_ids) - 1) - 1


async def test_related_page(ds, debbie):
    response = await ds.client.get(f"/archive/articles/{debbie[0]}/-/related")
    assert response.status_code == 200
    assert "Related coverage" in response.text and 'class="na-result"' in response.text
    assert f'href="/archive/articles/{debbie[0]}"' in response.text


@pytest.mark.parametrize(
    "query",
    [
        "q=" + "x" * 1001,
        "q=cyclone&k=0",
        "q=cyclone&k=101",
        "q=cyclone&k=ten",
        "q=cyclone&since=garbage",
        "q=cyclone&until=2017-13-45",
        "q=cyclone&mode=bad",
        "k=5",
    ],
)
async def test_bad_parameters_answer_400_json(ds, query):
    body = await get_json(ds, f"/archive/-/semantic.json?{query}", status=400)
    assert body["ok"] is False and body["error"]


async def test_bad_parameter_on_the_page_is_400(ds):
    response = await ds.client.get("/archive/-/semantic?q=cyclone&k=500")
    assert response.status_code == 400 and "k must be" in response.text


async def test_related_bad_k_is_400(ds, debbie):
    body = await get_json(ds, f"/archive/articles/{debbie[0]}/-/related.json?k=101", status=400)
    assert body["ok"] is False


async def test_unknown_article_is_404(ds):
    body = await get_json(ds, "/archive/articles/999999/-/related.json", status=404)
    assert body["ok"] is False and body["error"]
    assert (await ds.client.get("/archive/articles/999999/-/related")).status_code == 404


async def test_unknown_database_is_404(ds):
    assert (await ds.client.get("/nope/-/semantic.json?q=x")).status_code == 404


async def test_row_page_links_to_related_coverage(ds, debbie):
    response = await ds.client.get(f"/archive/articles/{debbie[0]}")
    assert response.status_code == 200
    assert f'href="/archive/articles/{debbie[0]}/-/related"' in response.text
    assert "Find related coverage" in response.text


async def test_table_page_has_semantic_search_action_and_menu_link(ds):
    html = (await ds.client.get("/archive/articles")).text
    assert 'href="/archive/-/semantic"' in html and "Semantic search" in html


async def test_base_url_is_respected(hash_sample):
    ds = Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata(), settings={"base_url": "/news/"})
    response = await ds.client.get("/archive/-/semantic?q=avalanche&k=2&mode=keyword")  # the client adds base_url
    assert response.status_code == 200
    assert 'action="/news/archive/-/semantic"' in response.text
    assert 'href="/news/archive/articles/' in response.text


async def test_new_articles_appear_without_restart_and_are_escaped(hash_sample, tmp_path):
    sample = hash_sample.copy_to(tmp_path)
    ds = Datasette([str(sample.db_path)], metadata=sample.metadata())
    query = "/archive/-/semantic.json?q=zebra+escaped+from+a+circus+in+Vienna&k=3"
    before = await get_json(ds, query)
    assert SCRIPT_TITLE not in [r["title"] for r in before["results"]]
    arc = sample.open()
    arc.load(
        [
            write_jsonl(
                tmp_path / "new.jsonl",
                {
                    "title": SCRIPT_TITLE,
                    "outlet": "example.org",
                    "published": "2017-04-01",
                    "url": "https://example.org/zebra",
                    "body": "A zebra escaped from a circus in Vienna on Saturday and trotted along the Ringstrasse "
                    "before keepers caught it near the opera house. Police closed two tram lines for an hour.",
                },
            )
        ]
    )
    new_id = arc.article("https://example.org/zebra")["id"]
    arc.close()
    after = await get_json(ds, query)
    assert after["results"][0]["id"] == new_id and after["results"][0]["title"] == SCRIPT_TITLE
    for path in (query.replace(".json", ""), f"/archive/articles/{new_id}/-/related", f"/archive/articles/{new_id}"):
        html = (await ds.client.get(path)).text
        assert SCRIPT_TITLE not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path


async def test_an_unknown_url_is_a_plain_404_even_with_rich_installed(ds):
    pytest.importorskip("rich")
    # Paths that match no route at all (Datasette raises its 404 outside an except block for these).
    assert (await ds.client.get("/a/b/c/d/e/f")).status_code == 404
    assert (await ds.client.get("/archive/articles/1/2/3/4")).status_code == 404
