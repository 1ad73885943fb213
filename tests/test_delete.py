"""`archive delete`: articles named explicitly (--id, --url, --external-id), all or nothing, --dry-run and
--json; a bare argument is refused with the flags to use. A small hash-encoder archive."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hash_encoder import HashEncoder

from archive import Archive, ArchiveError
from archive import index as ix
from archive.cli import cli

BODY = "Heavy rain flooded the town centre on Monday. Residents were moved to the school hall."


def record(n: int, external_id: str) -> dict:
    return {
        "url": f"http://news.example.com/{n}",
        "title": f"Story {n}",
        "body": f"{BODY} Item {n}.",
        "id": external_id,
    }


@pytest.fixture
def archive_dir(tmp_path):
    """Five articles; external ids a, b, b, c, d (two articles share "b"), article 1 with an earlier version."""
    src = tmp_path / "a.jsonl"
    rows = [record(n, x) for n, x in zip(range(1, 6), "abbcd")]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    arc = Archive(tmp_path / "archive.db", tmp_path / "idx", create=True, encoder=HashEncoder())
    try:
        arc.load([str(src)])
        (tmp_path / "b.jsonl").write_text(json.dumps(record(1, "a") | {"body": BODY + " Now edited."}) + "\n")
        arc.load([str(tmp_path / "b.jsonl")])
    finally:
        arc.close()
    return tmp_path


def run(archive_dir, *args):
    opts = ["--db", str(archive_dir / "archive.db"), "--index-dir", str(archive_dir / "idx")]
    return CliRunner().invoke(cli, ["delete", *map(str, args), *opts])


def remaining(archive_dir) -> list[int]:
    arc = Archive(archive_dir / "archive.db", archive_dir / "idx", encoder=HashEncoder())
    try:
        return [r[0] for r in arc.db.execute("select id from articles order by id")]
    finally:
        arc.close()


@pytest.mark.parametrize(
    "value, hint",
    [("2", "--id 2"), ("http://news.example.com/2", "--url http://news.example.com/2"), ("b", "--external-id b")],
)
def test_a_bare_argument_is_refused_with_the_flag_it_needs(archive_dir, value, hint):
    result = run(archive_dir, value)
    assert result.exit_code == 2 and hint in result.output and "--url" in result.output
    assert "Traceback" not in result.output and remaining(archive_dir) == [1, 2, 3, 4, 5]


def test_nothing_named_is_a_usage_error(archive_dir):
    result = run(archive_dir)
    assert result.exit_code == 2 and "--id, --url or --external-id" in result.output


def test_delete_by_id_url_and_external_id(archive_dir):
    result = run(archive_dir, "--id", 2, "--url", "http://news.example.com/4", "--external-id", "d")
    assert result.exit_code == 0, result.output
    assert "deleted 3 article(s): 2, 4, 5" in result.output
    assert remaining(archive_dir) == [1, 3]
    arc = Archive(archive_dir / "archive.db", archive_dir / "idx", encoder=HashEncoder())
    try:
        index, _ = ix.load(arc.index_dir)
        assert index.ntotal == arc.db["chunks"].count and arc.verify().ok
    finally:
        arc.close()


def test_an_external_id_naming_several_articles_is_refused(archive_dir):
    result = run(archive_dir, "--external-id", "b", "--id", 1)
    assert result.exit_code == 1 and "external id 'b' names 2 articles (ids 2, 3)" in result.output
    assert "nothing deleted" in result.output and remaining(archive_dir) == [1, 2, 3, 4, 5]


def test_one_unknown_name_deletes_nothing(archive_dir):
    result = run(archive_dir, "--id", 1, "--url", "http://news.example.com/404")
    assert result.exit_code == 1 and "no article with url 'http://news.example.com/404'" in result.output
    assert remaining(archive_dir) == [1, 2, 3, 4, 5]


def test_dry_run_lists_what_would_go_and_deletes_nothing(archive_dir):
    result = run(archive_dir, "--id", 1, "--external-id", "c", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would delete 2 article(s): 1, 4" in result.output and "1 earlier version(s)" in result.output
    assert remaining(archive_dir) == [1, 2, 3, 4, 5]
    listed = json.loads(run(archive_dir, "--id", 1, "--external-id", "c", "--dry-run", "--json").output)
    assert listed["dry_run"] is True
    assert [(a["id"], a["url"], a["external_id"], a["versions"]) for a in listed["articles"]] == [
        (1, "http://news.example.com/1", "a", 1),
        (4, "http://news.example.com/4", "c", 0),
    ]
    assert all(a["chunks"] >= 1 for a in listed["articles"])
    assert remaining(archive_dir) == [1, 2, 3, 4, 5]


def test_the_json_of_a_delete_names_what_went(archive_dir):
    result = run(archive_dir, "--id", 1, "--json")
    assert json.loads(result.output)["articles"][0]["id"] == 1 and remaining(archive_dir) == [2, 3, 4, 5]


def test_the_library_takes_ids_as_ids_only(archive_dir):
    arc = Archive(archive_dir / "archive.db", archive_dir / "idx", encoder=HashEncoder())
    try:
        with pytest.raises(ArchiveError, match="article ids are whole numbers"):
            arc.delete(["http://news.example.com/1"])
        assert [a["id"] for a in arc.delete(urls=["http://news.example.com/1"])] == [1]
        assert arc.db.execute("select count(*) from article_versions").fetchone() == (0,)
    finally:
        arc.close()
