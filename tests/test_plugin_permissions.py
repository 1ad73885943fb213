"""Datasette's permissions hold for every plugin surface: pages, JSON, table action, menu link, row link, SQL."""

from __future__ import annotations

import pytest
from datasette.app import Datasette

from datasette_plugins.news_archive.permissions import DENIED

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # SQL function errors

ROOT_ONLY = {"id": "root"}
CONFIGS = {
    "instance": {"allow": ROOT_ONLY},
    "database": {"databases": {"archive": {"allow": ROOT_ONLY}}},
    "table": {"databases": {"archive": {"tables": {"articles": {"allow": ROOT_ONLY}}}}},
    "table-case": {"databases": {"archive": {"tables": {"Articles": {"allow": ROOT_ONLY}}}}},  # Datasette ignores case
}
PLUGIN_PATHS = [
    "/archive/-/semantic?q=avalanche&mode=keyword",
    "/archive/-/semantic.json?q=avalanche&mode=keyword",
    "/archive/articles/1/-/related",
    "/archive/articles/1/-/related.json",
]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def restricted(request, hash_sample):
    return request.param, Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata(CONFIGS[request.param]))


def cookies(ds, signed_in: bool) -> dict:
    return {"ds_actor": ds.sign({"a": ROOT_ONLY}, "actor")} if signed_in else {}  # client.actor_cookie() in 1.0


@pytest.mark.parametrize("path", PLUGIN_PATHS)
@pytest.mark.parametrize("signed_in,status", [(False, 403), (True, 200)])
async def test_plugin_pages_follow_permissions(restricted, path, signed_in, status):
    _, ds = restricted
    response = await ds.client.get(path, cookies=cookies(ds, signed_in))
    assert response.status_code == status
    if status == 403 and ".json" in path:
        assert response.json() == {"ok": False, "error": DENIED, "status": 403}
    if status == 403:
        assert "avalanche" not in response.text.lower().replace("q=avalanche", "")
        assert "/archive/articles/" not in response.text


@pytest.mark.parametrize("signed_in", [False, True])
async def test_menu_link_and_table_action_only_for_those_allowed(restricted, signed_in):
    _, ds = restricted
    for path in ("/", "/archive/articles", "/archive/articles/1"):
        html = (await ds.client.get(path, cookies=cookies(ds, signed_in))).text
        assert ('href="/archive/-/semantic"' in html) is signed_in, path
    row = (await ds.client.get("/archive/articles/1", cookies=cookies(ds, signed_in))).text
    assert ("Find related coverage" in row) is signed_in


@pytest.mark.parametrize("config", ["table", "table-case"])
async def test_sql_functions_are_off_when_articles_has_an_allow_block(hash_sample, config):
    ds = Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata(CONFIGS[config]))
    response = await ds.client.get(
        "/archive.json", params={"sql": "select semantic_search('avalanche', 3)"}, cookies=cookies(ds, True)
    )
    assert response.status_code == 400 and response.json()["ok"] is False


async def test_sql_functions_unavailable_to_those_denied_the_database(hash_sample):
    ds = Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata(CONFIGS["database"]))
    response = await ds.client.get("/archive.json", params={"sql": "select semantic_search('avalanche', 3)"})
    assert response.status_code == 403
    allowed = await ds.client.get(
        "/archive.json",
        params={"sql": "select semantic_search('avalanche', 3) as h", "_shape": "array"},
        cookies=cookies(ds, True),
    )
    assert allowed.status_code == 200 and allowed.json()[0]["h"].startswith("[")


DENIED_ONLY_PATHS = [  # for those denied, no answer may differ by what exists or what was asked
    "/archive/articles/999999/-/related.json",
    "/archive/articles/abc/-/related.json",
    "/archive/articles/1/-/related.json?k=100000",
    "/archive/-/semantic.json?q=x&k=999",
    "/archive/-/semantic.json?q=" + "x" * 2000,
    "/archive/-/semantic.json?q=x&mode=%27%20OR%201%3D1",
]


@pytest.mark.parametrize("path", DENIED_ONLY_PATHS)
async def test_denied_answers_do_not_reveal_what_exists_or_validate_input(restricted, path):
    _, ds = restricted
    response = await ds.client.get(path)
    assert response.status_code == 403 and response.json() == {"ok": False, "error": DENIED, "status": 403}


async def test_canned_queries_and_other_databases_under_restriction(restricted, hash_sample, tmp_path):
    """The project's metadata.yml (with its canned queries) plus each restriction; a second, open database."""
    import sqlite3
    from pathlib import Path

    import yaml

    name, ds = restricted
    metadata = yaml.safe_load((Path(__file__).resolve().parent.parent / "metadata.yml").read_text())
    if name == "instance":
        metadata["allow"] = ROOT_ONLY
    elif name == "database":
        metadata["databases"]["archive"]["allow"] = ROOT_ONLY
    elif name == "table-case":
        metadata["databases"]["archive"]["tables"]["Articles"] = {"allow": ROOT_ONLY}
    else:
        metadata["databases"]["archive"]["tables"]["articles"]["allow"] = ROOT_ONLY
    other = tmp_path / "open.db"
    sqlite3.connect(other).execute("create table t (x)").connection.commit()
    both = Datasette([str(ds.databases["archive"].path), str(other)], metadata=hash_sample.metadata(metadata))
    canned_paths = ["/archive/semantic.json?q=avalanche", "/archive/related.json?article_id=1", "/archive/outlets.json"]
    assert {q for q in metadata["databases"]["archive"]["queries"]} == {"semantic", "related", "outlets"}
    functions_off = name.startswith("table")  # an allow block on articles turns the SQL functions off for all
    for canned in canned_paths:  # every canned query: denied to those who may not view articles
        assert (await both.client.get(canned)).status_code == 403, canned
        allowed = await both.client.get(canned, cookies=cookies(both, True))
        if functions_off and "outlets" not in canned:
            assert allowed.status_code == 400, canned  # the SQL functions refuse: they cannot see who asks
            continue
        assert allowed.status_code == 200 and allowed.json()["rows"], canned
    if name == "instance":
        return
    page = (await both.client.get("/open/t")).text  # the menu is on every page
    assert 'href="/archive/-/semantic"' not in page  # the denied archive has no menu link, even beside another db
    sql = await both.client.get("/open.json", params={"sql": "select semantic_search('avalanche', 3)"})
    assert sql.status_code == 400 and "no such function" in sql.json()["error"]  # no way in from another database
