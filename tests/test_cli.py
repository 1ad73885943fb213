"""The `archive` command through click's CliRunner; effects checked by reopening the archive.

Commands that never embed (related, stats, verify, delete, index --rebuild, argument errors) run against the
hash-encoder sample: the CLI opens it without knowing its encoder, which these commands do not need. `load`
and `search` embed with the archive's model, so their tests use the real model (slow)."""

import json
import re

import pytest
from click.testing import CliRunner

from archive import Archive
from archive.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture
def copy(hash_sample, tmp_path):
    return hash_sample.copy_to(tmp_path).db_path


@pytest.fixture(scope="module")
def hashed(hash_sample):
    """CLI options that point at the (read-only) hash sample."""
    return ("--db", hash_sample.db_path, "--index-dir", hash_sample.index_dir)


@pytest.fixture(scope="module")
def real(sample_archive):
    return ("--db", sample_archive.db_path, "--index-dir", sample_archive.index_dir)


def test_help_documents_every_command():
    result = run("--help")
    for command in ("load", "search", "related", "index", "verify", "delete", "stats", "serve", "demo"):
        assert command in result.output
        assert run(command, "--help").exit_code == 0


@pytest.mark.slow
def test_load_reports_rejections_with_file_and_line(tmp_path):
    src = tmp_path / "in.jsonl"
    good = {
        "headline": "Storm closes port",
        "story": "The port closed on Monday as the storm arrived.",
        "link": "http://example.com/1",
        "date": "Feb 7, 2017",
    }
    src.write_text(json.dumps(good) + "\n{oops\n")
    db = tmp_path / "a.db"
    result = run("load", src, "--db", db, "--map", "body=story", "-q")
    assert result.exit_code == 0, result.output
    assert "added 1, updated 0, unchanged 0, rejected 1" in result.output
    assert f"rejected {src}:2: invalid JSON" in result.output
    row = Archive(db).article("http://example.com/1")
    assert (row["title"], row["published"], row["outlet"]) == ("Storm closes port", "2017-02-07", "example.com")


@pytest.mark.slow
def test_load_from_stdin_as_json(tmp_path):
    line = json.dumps({"title": "T", "body": "A body sentence.", "url": "http://example.com/x"})
    result = run("load", "-", "--db", tmp_path / "a.db", "--json", input=line + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["added"] == 1


@pytest.mark.parametrize(
    "setup,args,message",
    [
        (None, ["load", "missing.csv"], "missing.csv: no such file or directory"),
        ("notsqlite", ["stats"], "not an SQLite database"),
        (None, ["search", "x"], "no such archive"),
        (None, ["load", "a.jsonl", "--map", "bodystory"], "is not FIELD=COLUMN"),
    ],
)
def test_user_mistakes_get_one_line_and_no_traceback(tmp_path, monkeypatch, setup, args, message):
    monkeypatch.chdir(tmp_path)
    if setup == "notsqlite":
        (tmp_path / "archive.db").write_text("not a database\n" * 50)
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_load_of_only_bad_records_fails(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"title": "no body"}\n')
    result = run("load", src, "--db", tmp_path / "a.db", "-q")
    assert result.exit_code == 1 and "no body" in result.output


@pytest.mark.slow
def test_search_json_shape_and_batch_answers_in_order_with_errors_inline(real, sample_archive, tmp_path):
    result = run("search", "snow buries hotel", *real, "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["query"] == "snow buries hotel" and len(data["results"]) == 3
    keys = {"id", "url", "title", "outlet", "published", "score", "passage"}
    assert keys <= set(data["results"][0]) <= keys | {"also", "story_id", "chunk_id"}
    assert data["results"][0]["url"] in sample_archive.story_urls["avalanche"]
    batch = tmp_path / "q.jsonl"
    batch.write_text('{"query": "cyclone", "k": 2}\n{"query": "x", "k": 0}\nnot json\n{"query": "avalanche"}\n')
    lines = [json.loads(x) for x in run("search", "--batch", batch, *real).output.splitlines()]
    assert [("error" in x) for x in lines] == [False, True, True, False]
    assert len(lines[0]["results"]) == 2 and lines[3]["query"] == "avalanche" and len(lines[3]["results"]) == 10


@pytest.mark.slow
def test_related_by_url_prints_ranked_coverage(real, sample_archive):
    result = run("related", sample_archive.story_urls["debbie"][0], *real, "-k", "3")
    assert result.exit_code == 0, result.output
    assert result.output.count("Cyclone Debbie") + result.output.count("cyclone") >= 2


def test_related_by_url_prints_numbered_results(hashed, hash_sample):
    url = hash_sample.story_urls["debbie"][0]
    result = run("related", url, *hashed, "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    numbered = [n for n, line in enumerate(lines) if re.match(r"^ ?\d+\. \d\.\d{3}  \S", line)]
    assert len(numbered) == 3 and all(" · id " in lines[n + 1] for n in numbered)  # rank, score, title; then id
    assert url not in result.output  # never the article itself


def test_related_json_shape(hashed, hash_sample):
    arc = hash_sample.open()
    try:
        article = arc.article(hash_sample.story_urls["debbie"][0])["id"]
        expected = [r.id for r in arc.related(article, k=4)]
    finally:
        arc.close()
    data = json.loads(run("related", article, *hashed, "-k", "4", "--json").output)
    assert len(expected) == 4 and data["query"] == str(article) and [r["id"] for r in data["results"]] == expected
    keys = {"id", "url", "title", "outlet", "published", "score", "passage", "same_story"}
    assert all(keys <= set(r) <= keys | {"also", "story_id", "chunk_id"} for r in data["results"])


def test_related_batch_answers_in_order_with_errors_inline(hashed, tmp_path):
    related = tmp_path / "r.jsonl"
    related.write_text('{"article": 1, "k": 2}\n\nnot json\n{"article": "http://nowhere.example"}\n{"k": 2}\n')
    lines = [json.loads(x) for x in run("related", "--batch", related, *hashed).output.splitlines()]
    assert len(lines) == 4 and len(lines[0]["results"]) == 2  # the blank line gets no answer
    assert "invalid JSON" in lines[1]["error"] and "no article" in lines[2]["error"]
    assert "expected an object with 'article'" in lines[3]["error"]


def test_related_batch_lines_set_mode_window_and_outlet_preference(hashed, hash_sample, tmp_path):
    arc = hash_sample.open()
    a = arc.article(hash_sample.story_urls["debbie"][0])["id"]
    related = tmp_path / "r.jsonl"
    related.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"article": a, "k": 5, "mode": "keyword"},
                {"article": a, "k": 30, "window": 1},
                {"article": a, "mode": "psychic"},
                {"article": a, "window": "soon"},
                {"article": a, "other_outlets": "yes"},
                {"article": a, "k": 100, "window": 30, "other_outlets": True},
            ]
        )
    )
    lines = [json.loads(x) for x in run("related", "--batch", related, *hashed).output.splitlines()]
    try:
        assert lines[0]["results"] and [r["id"] for r in lines[0]["results"]] == [
            r.id for r in arc.related(a, k=5, mode="keyword")
        ]
        assert [r["id"] for r in lines[1]["results"]] == [r.id for r in arc.related(a, k=30, window=1)]
        assert 0 < len(lines[1]["results"]) < len(arc.related(a, k=30))  # the window narrowed it
        expected = [r.id for r in arc.related(a, k=100, window=30, other_outlets=True)]  # its outlet's too
        assert [r["id"] for r in lines[5]["results"]] == expected != [r.id for r in arc.related(a, k=100, window=30)]
    finally:
        arc.close()
    assert "mode must be one of" in lines[2]["error"]
    assert "window must be" in lines[3]["error"] and "other_outlets must be" in lines[4]["error"]


def test_commands_that_embed_refuse_a_hash_archive_clearly(hashed):
    """The CLI opens an archive with its recorded model: a hash archive's vectors are not that model's."""
    result = run("search", "cyclone", *hashed)
    assert result.exit_code == 1 and "embedded with hash-64" in result.output and "Traceback" not in result.output


def test_verify_delete_index_stats(copy):
    assert run("verify", "--db", copy).exit_code == 0
    assert "deleted 1 article(s): 1" in run("delete", "--id", "1", "--db", copy).output
    manifest = json.loads((copy.parent / "indexes" / "manifest.json").read_text())
    (copy.parent / "indexes" / manifest["file"]).write_bytes(b"garbage")
    result = run("verify", "--db", copy)
    assert result.exit_code == 1 and "run `archive index --rebuild`" in result.output
    assert "rebuilt flat index" in run("index", "--rebuild", "--db", copy).output
    assert run("verify", "--db", copy, "--json").exit_code == 0
    stats = json.loads(run("stats", "--db", copy, "--json").output)
    assert stats["index"]["vectors"] == stats["chunks"] and stats["model"] == "hash-64"
    arc = Archive(copy, encoder=None)
    try:
        assert arc.db.execute("select count(*) from articles where id = 1").fetchone()[0] == 0
    finally:
        arc.close()
