"""The Ray Data route (archive/distributed.py) against a local load of the same real NewsArticles slice.

The slow tests start one local Ray of 2 CPUs for the module and load 24 articles with the real model."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hash_encoder import HashEncoder

from archive import Archive, ArchiveError, cli
from archive.distributed import RayOptions, load_ray
from archive.ingest import LoadOptions
from archive.sample import head_csv

ROWS = 24  # row 23 of NewsArticles has no body: one rejection, with its file:line origin
EMBED_ACTOR = "ray::MapWorker(MapBatches(EmbedActor))"


@pytest.fixture(scope="module")
def slice_csv(news_csv, tmp_path_factory) -> Path:
    return head_csv(news_csv, ROWS, tmp_path_factory.mktemp("ray") / "slice.csv")


@pytest.fixture(scope="module")
def local_load(slice_csv, tmp_path_factory):
    """The reference: the same slice loaded in this process on the CPU."""
    base = tmp_path_factory.mktemp("local")
    arc = Archive(base / "a.db", base / "idx", create=True, device="cpu")
    report = arc.load([str(slice_csv)])
    assert report.added == ROWS - 1 and len(report.rejected) == 1
    yield arc, report
    arc.close()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def contents(arc: Archive) -> tuple[list, list, np.ndarray]:
    articles = arc.db.execute(
        "select identity, url, outlet, title, subtitle, published, body, content_hash, body_hash, origin "
        "from articles order by identity"
    ).fetchall()
    articles = [(*a[:-1], Path(a[-1]).name) for a in articles]  # origins: file name and line
    rows = arc.db.execute(
        "select a.identity, c.seq, c.start, c.end, c.text, c.content_hash, c.vector from chunks c "
        "join articles a on a.id = c.article_id order by a.identity, c.seq"
    ).fetchall()
    vectors = np.vstack([np.frombuffer(r[-1], np.float32) for r in rows])
    return articles, [r[:-1] for r in rows], vectors


def assert_same_archive(arc: Archive, reference: Archive) -> None:
    articles, chunks, vectors = contents(arc)
    ref_articles, ref_chunks, ref_vectors = contents(reference)
    assert articles == ref_articles and chunks == ref_chunks
    cosines = np.sum(vectors * ref_vectors, axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref_vectors, axis=1)
    )
    assert cosines.min() >= 0.9999
    assert arc.verify().ok


def cli_load(*args: str) -> dict:
    result = CliRunner().invoke(cli.cli, ["load", *args, "--json", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


@pytest.mark.slow
def test_ray_load_equals_a_local_load(local_ray, local_load, slice_csv, tmp_path, monkeypatch):
    reference, expected = local_load
    db, idx = str(tmp_path / "ray.db"), str(tmp_path / "idx")
    monkeypatch.chdir(slice_csv.parent)  # a relative path, opened by Ray workers, named as given in origins
    report = cli_load("--engine", "ray", "--device", "cpu", "slice.csv", "--db", db, "--index-dir", idx)
    assert (report["added"], report["updated"], report["unchanged"]) == (expected.added, 0, 0)
    assert report["chunks_embedded"] == expected.chunks_embedded
    assert [r["origin"] for r in report["rejected"]] == ["slice.csv:23"] == [Path(expected.rejected[0].origin).name]
    assert_same_archive(Archive(db, idx), reference)
    verify = CliRunner().invoke(cli.cli, ["verify", "--db", db, "--index-dir", idx])
    assert verify.exit_code == 0 and verify.output.rstrip().endswith(": ok")


def embed_actor_pids() -> list[int]:
    """This test's embedding actor processes: Ray's worker processes descend from this process."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(EMBED_ACTOR.encode()):
                if os.getpid() in ancestors(int(entry.name)):
                    pids.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie is dead, only not yet reaped by its parent


def ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out.append(pid)
    return out


@pytest.mark.slow
def test_a_killed_embedding_actor_loses_nothing_and_shards_load_like_a_local_load(
    local_ray, local_load, slice_csv, tmp_path
):
    """Kill the embedding actor while batches are in flight: Ray restarts it and redoes its batches; the shards
    it writes (--parquet-out) then load (--from-parquet) into the same archive as a local load, twice over."""
    reference, expected = local_load
    killed: list[int] = []
    later: set[int] = set()  # embedding actors seen after the kill

    def kill_actor_once(articles: int, chunks: int) -> None:
        if killed:
            later.update(pid for pid in embed_actor_pids() if pid not in killed)
            return
        for pid in embed_actor_pids():  # one article a batch: the first is at the driver, 22 are still to embed
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    shard_dir = tmp_path / "shards"
    driver = Archive(tmp_path / "driver.db", tmp_path / "driver-idx", create=True, device="cpu")
    small = {"articles_per_batch": 1, "block_bytes": 4096, "records_per_row": 4}  # many small Ray tasks
    options = RayOptions(parquet_out=str(shard_dir), device="cpu", **small)
    written = load_ray(driver, [str(slice_csv)], LoadOptions(progress=kill_actor_once), options)
    assert len(killed) == 1 and not alive(killed[0])
    assert later, "no restarted embedding actor was seen after the kill"
    assert (written.articles, written.chunks) == (expected.added, expected.chunks_embedded)
    assert driver.db["articles"].count == 0  # --parquet-out leaves the archive alone

    db, idx = str(tmp_path / "from-shards.db"), str(tmp_path / "from-shards-idx")
    first = cli_load("--from-parquet", str(shard_dir), "--db", db, "--index-dir", idx)
    assert (first["added"], first["updated"], first["unchanged"]) == (expected.added, 0, 0)
    assert [r["origin"] for r in first["rejected"]] == [r.origin for r in expected.rejected]
    assert_same_archive(Archive(db, idx), reference)
    again = cli_load("--from-parquet", str(shard_dir), "--db", db, "--index-dir", idx)
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, expected.added)
    assert_same_archive(Archive(db, idx), reference)


def test_missing_ray_says_what_to_install(monkeypatch, slice_csv, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    arc = Archive(tmp_path / "a.db", tmp_path / "idx", create=True, encoder=HashEncoder())
    with pytest.raises(ArchiveError, match=r"pip install news-archive\[ray\]"):
        load_ray(arc, [str(slice_csv)], LoadOptions(), RayOptions())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parquet-out", "out"], "--ray-address and --parquet-out go with --engine ray"),
        (["--ray-address", "auto"], "--ray-address and --parquet-out go with --engine ray"),
        (["--engine", "ray", "--from-parquet", "."], "does not go with --engine ray"),
    ],
)
def test_cli_route_options_are_checked(args, message, slice_csv):
    result = CliRunner().invoke(cli.cli, ["load", *args] + ([] if "--from-parquet" in args else [str(slice_csv)]))
    assert result.exit_code == 2 and message in result.output


def test_ray_reads_files_not_stdin(slice_csv, tmp_path):
    arc = Archive(tmp_path / "a.db", tmp_path / "idx", create=True, encoder=HashEncoder())
    with pytest.raises(ArchiveError, match="not stdin"):
        load_ray(arc, ["-"], LoadOptions(), RayOptions())
