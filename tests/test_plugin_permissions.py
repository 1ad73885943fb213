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
}
PLUGIN_PATHS = [
    "/archive/-/semantic?q=avalanche&mode=keyword",
    "/archive/-/semantic.json?q=avalanche&mode=keyword",
    "/archive/articles/1/-/related",
    "/archive/articles/1/-/related.json",
]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def restricted(request, sample_archive):
    return request.param, Datasette([str(sample_archive.db_path)], metadata=CONFIGS[request.param])


def cookies(ds, signed_in: bool) -> dict:
    return {"ds_actor": ds.sign({"a": ROOT_ONLY}, "actor")} if signed_in else {}  # client.actor_cookie() in 1.0


@pytest.mark.parametrize("path", PLUGIN_PATHS)
@pytest.mark.parametrize("signed_in,status", [(False, 403), (True, 200)])
async def test_plugin_pages_follow_permissions(restricted, path, signed_in, status):
    _, ds = restricted
    response = await ds.client.get(path, cookies=cookies(ds, signed_in))
    assert response.status_code == status
    if status == 403 and ".json" in path:
        assert response.json() == {"ok": False, "error": DENIED}
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


async def test_sql_functions_are_off_when_articles_has_an_allow_block(sample_archive):
    ds = Datasette([str(sample_archive.db_path)], metadata=CONFIGS["table"])
    response = await ds.client.get("/archive.json", params={"sql": "select semantic_search('avalanche', 3)"},
                                   cookies=cookies(ds, True))
    assert response.status_code == 400 and response.json()["ok"] is False


async def test_sql_functions_unavailable_to_those_denied_the_database(sample_archive):
    ds = Datasette([str(sample_archive.db_path)], metadata=CONFIGS["database"])
    response = await ds.client.get("/archive.json", params={"sql": "select semantic_search('avalanche', 3)"})
    assert response.status_code == 403
    allowed = await ds.client.get("/archive.json", params={"sql": "select semantic_search('avalanche', 3) as h",
                                                           "_shape": "array"}, cookies=cookies(ds, True))
    assert allowed.status_code == 200 and allowed.json()[0]["h"].startswith("[")
