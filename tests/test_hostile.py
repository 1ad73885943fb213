"""Hostile content and hostile requests against every plugin surface (the browser check is in test_playwright.py).

* articles whose title, subtitle, byline, outlet and body carry HTML/JS payloads render escaped on every
  plugin page, on Datasette's own table and row pages, and in the query echo;
* SQL-injection strings in every parameter of every plugin route (q, k, mode, outlet, since, until, id) and in
  both SQL functions answer 400/404 or a result made only of real, matching articles, never a 500;
* over-long queries and large k are refused; index and model paths never come from a request.
Permissions for denied databases and tables are in tests/test_plugin_permissions.py.
"""

from __future__ import annotations

import html
import json
import sqlite3
from urllib.parse import quote

import pytest
from datasette.app import Datasette

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # SQL function errors

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "'><iframe src=javascript:alert(1)>",
    "</textarea></title><script>alert(1)</script>",
    "{{ 7*7 }}{% raw %}",
]
INJECTIONS = [
    "' OR 1=1 --",
    "1 OR 1=1",
    '" OR ""="',
    "1; DROP TABLE articles; --",
    "1 UNION SELECT sql, name, 1, 1, 1, 1, 1 FROM sqlite_master --",
    "') OR ('1'='1",
    "%' OR '%'='",
    "2017-01-01' OR '1'='1",
    "2017-03-01 OR 1=1",
    '"unbalanced',
    "title:* OR body:*",
    "NEAR(a b, 3) AND *",
    "\x00",
    "-1",
    "1e9999",
    "99999999999999999999999999",
    "hybrid' --",
    "../../../etc/passwd",
    "\\'; select load_extension('x') --",
]
HOSTILE = {
    "title": PAYLOADS[0] + " zebra " + PAYLOADS[1],
    "subtitle": PAYLOADS[2],
    "byline": PAYLOADS[3],
    "outlet": PAYLOADS[1],
    "url": 'https://example.org/hostile?a=<b>&c="d"',
    "published": "2017-04-01",
    "body": "A zebra escaped from a circus in Vienna and trotted along the Ringstrasse before keepers caught it. "
    + " ".join(PAYLOADS)
    + " Police closed two tram lines for an hour.",
}


@pytest.fixture(scope="module")
def hostile(hash_sample, tmp_path_factory):
    """The hash-encoder sample plus one hostile article, served with the plugin's `encoder` setting."""
    sample = hash_sample.copy_to(tmp_path_factory.mktemp("hostile"))
    src = sample.db_path.parent / "hostile.jsonl"
    src.write_text(json.dumps(HOSTILE) + "\n")
    arc = sample.open()
    try:
        arc.load([str(src)])
        hostile_id = arc.article(HOSTILE["url"])["id"]
        titles = dict(arc.db.execute("select id, title from articles").fetchall())
    finally:
        arc.close()
    return Datasette([str(sample.db_path)], metadata=sample.metadata()), hostile_id, titles


def assert_escaped(page: str, where: str) -> None:
    for p in PAYLOADS[:5]:
        assert p not in page, (where, p)
    for tag in ("<img src=x", "<svg onload", "<iframe src=javascript"):
        assert tag not in page, (where, tag)
    assert "<script>alert" not in page, where


# --- hostile content -------------------------------------------------------------------------------------


async def test_hostile_fields_are_stored_verbatim(hostile):
    ds, hid, titles = hostile
    assert titles[hid] == HOSTILE["title"]  # stored as text, escaped only when shown


async def test_hostile_article_renders_escaped_on_every_page(hostile):
    ds, hid, _ = hostile
    pages = {
        "semantic (hit in results)": "/archive/-/semantic?q=zebra+escaped+from+a+circus+in+Vienna",
        "semantic keyword": "/archive/-/semantic?q=zebra&mode=keyword",
        "semantic with the hostile outlet": f"/archive/-/semantic?q=zebra&outlet={quote(HOSTILE['outlet'])}",
        "semantic form (outlet list)": "/archive/-/semantic",
        "related of the hostile article": f"/archive/articles/{hid}/-/related",
        "datasette row": f"/archive/articles/{hid}",
        "datasette table": "/archive/articles?_search=zebra",
        "datasette table facet": f"/archive/articles?outlet={quote(HOSTILE['outlet'])}",
        "datasette sql": "/archive?sql=" + quote(f"select title, outlet, body from articles where id = {hid}"),
    }
    for name, path in pages.items():
        response = await ds.client.get(path)
        assert response.status_code == 200, (name, response.status_code)
        assert_escaped(response.text, name)
    semantic = (await ds.client.get(pages["semantic (hit in results)"])).text
    assert html.escape(PAYLOADS[0], quote=False) in semantic  # shown, as text
    assert f'href="/archive/articles/{hid}"' in semantic
    related_page = (await ds.client.get(pages["related of the hostile article"])).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in related_page
    assert 'href="https://example.org/hostile?a=&lt;b&gt;&amp;c=&#34;d&#34;"' in related_page


async def test_hostile_article_in_someone_elses_related_coverage_is_escaped(hostile):
    ds, hid, _ = hostile
    near = (await ds.client.get(f"/archive/articles/{hid}/-/related.json?k=5")).json()["results"]
    pages = 0
    for other in [r["id"] for r in near]:
        if hid in [
            r["id"] for r in (await ds.client.get(f"/archive/articles/{other}/-/related.json?k=100")).json()["results"]
        ]:
            page = (await ds.client.get(f"/archive/articles/{other}/-/related?k=100")).text
            assert f'href="/archive/articles/{hid}"' in page
            assert_escaped(page, f"related {other}")
            pages += 1
    assert pages, "the hostile article should be in some other article's related coverage"


async def test_json_carries_hostile_text_as_json_strings(hostile):
    ds, hid, _ = hostile
    response = await ds.client.get("/archive/-/semantic.json?q=zebra+circus+Vienna&k=3")
    assert response.headers["content-type"].startswith("application/json")
    hit = next(r for r in response.json()["results"] if r["id"] == hid)
    assert hit["title"] == HOSTILE["title"] and hit["outlet"] == HOSTILE["outlet"]


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_query_echo_is_escaped(hostile, payload):
    ds, _, _ = hostile
    for mode in ("keyword", "hybrid"):
        response = await ds.client.get("/archive/-/semantic", params={"q": payload, "mode": mode})
        assert response.status_code == 200
        assert_escaped(response.text, f"echo {mode}")
        assert "{{" not in payload or "49" not in response.text.split("na-summary")[1][:400]  # no template eval
    page = await ds.client.get("/archive/-/semantic", params={"q": "x", "since": payload})
    assert page.status_code == 400 and ("<" not in payload or payload not in page.text)  # echoed escaped
    api = await ds.client.get("/archive/-/semantic.json", params={"q": "x", "since": payload})
    assert api.status_code == 400 and api.headers["content-type"].startswith("application/json")


# --- injection in every parameter ----------------------------------------------------------------------


def params_for(param: str, value: str) -> dict:
    base = {"q": "cyclone Queensland", "k": "5", "mode": "hybrid"}
    return {**base, param: value}


def check_results(body: dict, titles: dict, param: str, value: str, k: int = 100) -> int:
    """Only real articles (id and title as stored), no more than k, and each one matching the filter; returns
    how many results it checked."""
    assert set(body) - {"loading"} == {"query", "results"} and body.get("loading") is None
    assert len(body["results"]) <= k
    for r in body["results"]:
        assert titles.get(r["id"]) == r["title"], r
        if param == "outlet":
            assert (r["outlet"] or "").lower() == value.strip().lower()
        if param == "since":
            assert (r["published"] or "") >= value.strip()
    return len(body["results"])


@pytest.mark.parametrize("param", ["q", "k", "mode", "outlet", "since", "until"])
@pytest.mark.parametrize("fmt", [".json", ""])
async def test_injection_in_every_semantic_parameter(hostile, param, fmt):
    ds, _, titles = hostile
    checked = 0
    for value in INJECTIONS:
        response = await ds.client.get(f"/archive/-/semantic{fmt}", params=params_for(param, value))
        assert response.status_code in (200, 400), (param, value, response.status_code, response.text[:300])
        if response.status_code == 200 and fmt:
            checked += check_results(response.json(), titles, param, value)
        if response.status_code == 400 and fmt:
            assert response.json()["ok"] is False and response.json()["error"]
        assert "Traceback" not in response.text and "sqlite3." not in response.text
    assert checked or param != "q" or not fmt, "an injection in q is still a query: some should find articles"
    assert sqlite_ok(ds)


@pytest.mark.parametrize("fmt", [".json", ""])
async def test_injection_in_related_id_and_k(hostile, fmt):
    ds, hid, titles = hostile
    for value in INJECTIONS:
        response = await ds.client.get(f"/archive/articles/{quote(value, safe='')}/-/related{fmt}")
        assert response.status_code == 400, (value, response.status_code)
        if fmt:
            body = response.json()
            assert (body["ok"], body["error"], body["status"]) == (False, "the article id must be a whole number", 400)
        response = await ds.client.get(f"/archive/articles/{hid}/-/related{fmt}", params={"k": value})
        assert response.status_code in (200, 400), (value, response.status_code)
        if response.status_code == 200 and fmt:
            check_results(response.json(), titles, "k", value)
            assert hid not in [r["id"] for r in response.json()["results"]]
    assert sqlite_ok(ds)


async def test_injection_through_the_sql_functions(hostile):
    ds, _, titles = hostile
    seen = 0
    for value in INJECTIONS:
        for fn, arg in (("semantic_search", "q"), ("related_articles", "id")):
            for sql, params in (
                (f"select {fn}(:v, 5) as h", {"v": value}),
                (f"select {fn}(:a, :v) as h", {"a": "cyclone" if arg == "q" else "1", "v": value}),
            ):
                response = await ds.client.get("/archive.json", params={"sql": sql, "_shape": "array", **params})
                assert response.status_code in (200, 400), (fn, value, response.status_code)
                if response.status_code == 200:
                    hits = json.loads(response.json()[0]["h"])
                    assert all(h["article_id"] in titles for h in hits) and len(hits) <= 100
                    seen += len(hits)
    assert seen, "semantic_search() of injection text still answers with articles"
    assert sqlite_ok(ds)


def sqlite_ok(ds) -> bool:
    """The articles table is still there and whole after all that."""
    conn = sqlite3.connect(ds.databases["archive"].path)
    try:
        return conn.execute("select count(*) from articles").fetchone()[0] > 100
    finally:
        conn.close()


# --- limits ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"q": "x" * 1001},
        {"q": "x " * 3000},
        {"q": "cyclone", "k": "101"},
        {"q": "cyclone", "k": str(10**30)},
        {"q": "cyclone", "k": "-5"},
        {"q": "cyclone", "k": "1e3"},
        {"q": "cyclone", "k": "0x10"},
    ],
)
@pytest.mark.parametrize("fmt", [".json", ""])
async def test_long_queries_and_large_k_are_refused(hostile, query, fmt):
    ds, _, _ = hostile
    response = await ds.client.get(f"/archive/-/semantic{fmt}", params=query)
    assert response.status_code == 400


async def test_query_of_exactly_the_limit_is_answered(hostile):
    ds, _, _ = hostile
    response = await ds.client.get("/archive/-/semantic.json", params={"q": ("cyclone " * 125)[:1000], "k": "100"})
    assert response.status_code == 200 and len(response.json()["results"]) <= 100


async def test_related_large_k_and_sql_large_k_are_refused(hostile):
    ds, hid, _ = hostile
    for k in ("101", str(10**30), "-1"):
        assert (await ds.client.get(f"/archive/articles/{hid}/-/related.json?k={k}")).status_code == 400
        sql = await ds.client.get("/archive.json", params={"sql": f"select semantic_search('x', {k})"})
        assert sql.status_code == 400
    sql = await ds.client.get("/archive.json", params={"sql": "select semantic_search(:q, 5)", "q": "x" * 5000})
    assert sql.status_code == 400


# --- configuration, not requests, decides paths ------------------------------------------------------------


async def test_index_and_model_paths_never_come_from_a_request(hostile, tmp_path):
    ds, _, _ = hostile
    path = "/archive/-/semantic.json"
    plain = (await ds.client.get(path, params={"q": "cyclone", "k": "3"})).json()
    (tmp_path / "manifest.json").write_text("{}")
    for extra in (
        {"index_dir": str(tmp_path)},
        {"index": str(tmp_path)},
        {"model": str(tmp_path)},
        {"_index_dir": "/"},
        {"db": "/etc/passwd"},
    ):
        response = await ds.client.get(path, params={"q": "cyclone", "k": "3", **extra})
        assert response.status_code == 200 and response.json() == plain, extra
        headers = {"X-Index-Dir": str(tmp_path), "Cookie": f"index_dir={tmp_path}"}
        assert (await ds.client.get(path, params={"q": "cyclone", "k": "3"}, headers=headers)).json() == plain


@pytest.mark.parametrize(
    "database",
    ["%2E%2E", "..~2F..~2Fetc~2Fpasswd", "~2Fetc~2Fpasswd", "archive.db", "_memory", "archive%00", "ARCHIVE"],
)
async def test_database_name_in_the_path_is_only_a_known_database(hostile, database):
    ds, _, _ = hostile
    for path in (f"/{database}/-/semantic.json?q=x", f"/{database}/articles/1/-/related.json"):
        response = await ds.client.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)


async def test_sql_functions_and_routes_exist_only_on_archive_databases(hostile, tmp_path):
    _, _, _ = hostile
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table articles (id integer primary key, title text)").connection.commit()
    ds = Datasette([str(hostile[0].databases["archive"].path), str(other)])
    response = await ds.client.get("/other.json", params={"sql": "select semantic_search('x', 1)"})
    assert response.status_code == 400 and "no such function" in response.json()["error"]
    assert (await ds.client.get("/other/-/semantic.json?q=x")).status_code == 404
    assert (await ds.client.get("/other/articles/1/-/related.json")).status_code == 404
    menu = (await ds.client.get("/")).text
    assert 'href="/archive/-/semantic"' in menu and 'href="/other/-/semantic"' not in menu


@pytest.mark.parametrize(
    "config,message",
    [
        ({"index_dir": "x", "path": "/"}, "unknown setting"),
        ({"model": "/nonexistent-model-folder"}, "is not a folder"),
        ({"encoder": "hash_encoder.HashEncoder"}, 'expected "module:callable"'),
        ({"encoder": ":HashEncoder"}, 'expected "module:callable"'),
        ({"encoder": ["hash_encoder", "HashEncoder"]}, 'expected "module:callable"'),
        ({"encoder": "no_such_module_anywhere:Encoder"}, "cannot import 'no_such_module_anywhere'"),
        ({"encoder": "hash_encoder:NoSuchEncoder"}, "'hash_encoder' has no callable 'NoSuchEncoder'"),
        ({"encoder": "hash_encoder:HashEncoder", "model": "/tmp"}, "set model or encoder, not both"),
    ],
)
async def test_bad_plugin_settings_are_refused_at_startup(hash_sample, config, message):
    from archive import ArchiveError
    from datasette_plugins.news_archive.archives import validate_config

    ds = Datasette([str(hash_sample.db_path)], metadata={"plugins": {"news-archive": config}})
    with pytest.raises(ArchiveError, match=message):
        validate_config(ds)
    with pytest.raises(ArchiveError, match=message):
        await ds.invoke_startup()


def test_an_encoder_setting_must_make_an_encoder():
    from archive import ArchiveError
    from datasette_plugins.news_archive.archives import make_encoder

    assert make_encoder("hash_encoder:HashEncoder").fingerprint == "hash-v1-64"
    with pytest.raises(ArchiveError, match="returned an object without encode, encode_queries, fingerprint"):
        make_encoder("collections:OrderedDict")


async def test_a_hash_archive_served_without_its_encoder_is_refused_clearly(hash_sample):
    """The fingerprint check holds in the server too: no silent mixing of the real model with hashed vectors."""
    response = await Datasette([str(hash_sample.db_path)]).client.get("/archive/-/semantic.json?q=cyclone")
    assert response.status_code >= 400 and "would mix incompatible vectors" in response.text
