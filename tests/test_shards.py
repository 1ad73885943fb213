"""Parquet shards (archive/shards.py): real NewsArticles rows, prepared with the real tokenizer, vectors from the
deterministic HashEncoder (no torch), loaded through the one writer."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hash_encoder import HashEncoder

from archive import Archive, ArchiveError, cli
from archive.chunk import Chunker
from archive.models import Rejection
from archive.prepare import Prepared, Preparer
from archive.sample import head_csv
from archive.shards import load_shards, read_shards, scan_shards, write_shard
from archive.sources import read_sources

ROWS = 30  # NewsArticles' first 30 rows hold one without a body (row 23): a rejection with its origin


@pytest.fixture(scope="module")
def slice_csv(news_csv, tmp_path_factory):
    return head_csv(news_csv, ROWS, tmp_path_factory.mktemp("shards") / "slice.csv")


@pytest.fixture(scope="module")
def prepared(slice_csv) -> list[Prepared | Rejection]:
    """What a remote route hands over: prepared articles with their vectors, and the rejected records."""
    encoder = HashEncoder()
    preparer = Preparer(Chunker(encoder))
    out = []
    for item in read_sources([str(slice_csv)]):
        if isinstance(item, Rejection):
            out.append(item)
            continue
        p = preparer(item)
        p.vectors = encoder.encode([c.embed_text for c in p.chunks])
        out.append(p)
    return out


def open_archive(tmp_path, name: str) -> Archive:
    return Archive(tmp_path / f"{name}.db", tmp_path / f"{name}-idx", create=True, encoder=HashEncoder())


def dump(arc: Archive) -> tuple[list, list]:
    articles = arc.db.execute(
        "select identity, url, title, subtitle, published, outlet, body, content_hash, body_hash, origin, "
        "updated_at from articles order by identity"
    ).fetchall()
    chunks = arc.db.execute(
        "select a.identity, c.seq, c.start, c.end, c.text, c.content_hash, c.vector from chunks c "
        "join articles a on a.id = c.article_id order by a.identity, c.seq"
    ).fetchall()
    return articles, chunks


def test_a_shard_gives_back_what_was_written(prepared, tmp_path):
    path = write_shard(tmp_path / "one.parquet", prepared, "hash-v1-64")
    back = [item for batch in read_shards(tmp_path) for item in batch]
    assert len(back) == len(prepared) == ROWS
    for a, b in zip(prepared, back):
        if isinstance(a, Rejection):
            assert b == a and a.origin.endswith("slice.csv:23")
            continue
        assert (b.article, b.identity, b.content_hash, b.body_hash) == (
            a.article,
            a.identity,
            a.content_hash,
            a.body_hash,
        )
        assert b.chunks == a.chunks and b.terms == a.terms and b.shingles == a.shingles
        assert b.minhash.dtype == np.uint64 and np.array_equal(b.minhash, a.minhash)
        assert b.vectors.dtype == np.float32 and np.array_equal(b.vectors, a.vectors)
    info = scan_shards(tmp_path).shards
    assert [(i.path, i.fingerprint, i.dimensions, i.rows) for i in info] == [(path, "hash-v1-64", 64, ROWS)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.parquet"]  # no temp file left behind


def test_shards_load_like_a_local_load_and_again_change_nothing(prepared, slice_csv, tmp_path):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    write_shard(shard_dir / "a.parquet", prepared[:12], "hash-v1-64")
    write_shard(shard_dir / "b.parquet", prepared[12:], "hash-v1-64")
    local, remote = open_archive(tmp_path, "local"), open_archive(tmp_path, "remote")
    expected = local.load([str(slice_csv)], workers=0)

    first = load_shards(remote, shard_dir)
    assert (first.added, first.updated, first.unchanged) == (expected.added, 0, 0) == (ROWS - 1, 0, 0)
    assert [r.origin for r in first.rejected] == [r.origin for r in expected.rejected]
    local_articles, local_chunks = dump(local)
    remote_articles, remote_chunks = dump(remote)
    assert [a[:-1] for a in remote_articles] == [a[:-1] for a in local_articles]  # all but updated_at
    assert remote_chunks == local_chunks
    assert remote.verify().ok

    again = load_shards(remote, shard_dir)
    assert (again.added, again.updated, again.unchanged, again.chunks_embedded) == (0, 0, ROWS - 1, 0)
    assert dump(remote) == (remote_articles, remote_chunks)  # updated_at included: not one row rewritten
    assert remote.verify().ok


def test_a_corrupt_shard_is_rejected_and_the_others_load(prepared, tmp_path):
    write_shard(tmp_path / "a.parquet", prepared[:10], "hash-v1-64")
    bad = write_shard(tmp_path / "b.parquet", prepared[10:20], "hash-v1-64")
    write_shard(tmp_path / "c.parquet", prepared[20:], "hash-v1-64")
    data = bytearray(bad.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = b"\xff" * 64  # damage a data page, footer intact
    bad.write_bytes(bytes(data))
    (tmp_path / "d.parquet").write_bytes(b"not parquet at all")

    arc = open_archive(tmp_path, "arc")
    report = load_shards(arc, tmp_path)
    bad_files = sorted(r.origin for r in report.rejected if "shard" in r.reason)
    assert bad_files == [str(bad), str(tmp_path / "d.parquet")]
    good = [p for p in prepared[:10] + prepared[20:] if isinstance(p, Prepared)]
    assert report.added == len(good) == arc.db["articles"].count
    assert {r[0] for r in arc.db.execute("select identity from articles")} == {p.identity for p in good}
    assert arc.verify().ok


def test_shards_of_another_model_are_refused_before_anything_is_written(prepared, tmp_path):
    write_shard(tmp_path / "ours.parquet", prepared[:5], "hash-v1-64")
    write_shard(tmp_path / "theirs.parquet", prepared[5:], "some-other-model")
    arc = open_archive(tmp_path, "arc")
    with pytest.raises(ArchiveError, match="theirs.parquet: vectors of model some-other-model"):
        load_shards(arc, tmp_path)
    assert arc.db["articles"].count == 0


def test_cli_refuses_shards_of_another_model(prepared, tmp_path):
    """The bundled model's archive and HashEncoder shards: fingerprints differ (no torch needed to tell)."""
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    write_shard(shard_dir / "a.parquet", prepared, "hash-v1-64")
    db = str(tmp_path / "real.db")
    result = CliRunner().invoke(cli.cli, ["load", "--from-parquet", str(shard_dir), "--db", db, "-q"])
    assert result.exit_code == 1 and "vectors of model hash-v1-64 (64 dims)" in result.output
    assert Archive(db).db["articles"].count == 0


def test_cli_from_parquet_takes_no_other_paths(tmp_path, slice_csv):
    result = CliRunner().invoke(cli.cli, ["load", str(slice_csv), "--from-parquet", str(tmp_path)])
    assert result.exit_code == 2 and "give no PATHS (or only DIR)" in result.output


def test_missing_pyarrow_says_what_to_install(monkeypatch, prepared, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(ArchiveError, match=r"pip install news-archive\[parquet\]"):
        write_shard(tmp_path / "a.parquet", prepared, "hash-v1-64")
