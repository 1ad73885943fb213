"""Crash safety: SIGKILLed loads, a damaged index, a missing manifest, a second writer; each detected and repaired.

The long version (20+ kills at random moments over NewsArticles, the real model) is `python -m benchmarks.crash`;
this is the CI-sized one, on hash-encoder archives (no torch) and driven by handshakes rather than sleeps: a load
in a forked process reports each committed batch and is killed right after batch k, so no outcome depends on the
machine's speed.
tests/test_index.py and tests/test_api.py cover the library-level errors; here it is the `archive` command
a cron job would run, and the server a reporter would be using at the time.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.app import Datasette
from hash_encoder import HashEncoder

from archive import Archive, ArchiveError
from archive import index as ix
from archive.cli import cli
from benchmarks.crash import stored_articles as committed  # read as another process would

TOPICS = ["harbour", "railway", "hospital", "school", "bridge", "library", "stadium", "airport"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def short_articles(n: int) -> list[dict]:
    return [
        {
            "url": f"https://crash.example.com/{i}",
            "title": f"Council votes on the {TOPICS[i % 8]} plan {i}",
            "published": f"2017-03-{1 + i % 28:02d}",
            "outlet": "crash.example.com",
            "body": f"The council voted {i} times on the new {TOPICS[i % 8]} in ward {i}. Residents objected.",
        }
        for i in range(n)
    ]


def load_reporting_batches(db: Path, index_dir: Path, src: Path, conn) -> None:
    """The load in its own process: HashEncoder, 2 articles a batch, and after each committed batch a message on
    `conn`, then a wait for the test's "go" (the handshake: the test kills it there instead of answering)."""

    def committed_batch(articles, chunks):
        conn.send(("batch", articles, chunks))
        conn.recv()

    arc = Archive(db, index_dir, create=True, encoder=HashEncoder())
    arc.load([str(src)], batch_size=2, workers=0, progress=committed_batch)
    conn.send(("done",))


def kill_a_load_after_batch(db: Path, index_dir: Path, src: Path, k: int) -> None:
    """Run a load in a forked process (it starts with this one's imports, ~1.5 CPU-s less than a fresh
    interpreter) and SIGKILL it right after its batch k is committed (while its writer waits for the reply)."""
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=load_reporting_batches, args=(db, index_dir, src, there))
    proc.start()
    there.close()  # the child's end: a child that dies early gives EOFError here, not a hang
    batches = 0
    try:
        while True:
            message = here.recv()
            assert message[0] == "batch", f"the load ended before batch {k}: {message}"
            batches += 1
            if batches == k:
                os.kill(proc.pid, signal.SIGKILL)
                break
            here.send("go")
    finally:
        here.close()  # a child still waiting for "go" then ends too
        proc.join()
    assert (batches, proc.exitcode) == (k, -signal.SIGKILL)


@pytest.fixture
def copy(hash_sample, tmp_path):
    sample = hash_sample.copy_to(tmp_path)
    return sample.db_path, sample.index_dir


def test_sigkilled_loads_then_a_rerun_leave_every_article_once_and_indexed(tmp_path):
    records = short_articles(80)  # 40 batches of 2
    src = tmp_path / "feed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    db, index_dir = tmp_path / "archive.db", tmp_path / "indexes"
    held = 0
    for k in (2, 7, 15):  # each rerun starts over the file: its first batches are the ones already held
        kill_a_load_after_batch(db, index_dir, src, k)
        held = max(held, 2 * k)
        assert committed(db) == held  # exactly the batches committed before the kill
    arc = Archive(db, index_dir, encoder=HashEncoder())
    try:  # the rerun, here in this process: it finds the index behind the database and brings it level
        report = arc.load([str(src)], batch_size=2)
    finally:
        arc.close()
    assert (report.added, report.unchanged, report.updated) == (len(records) - held, held, 0)

    verify = run("verify", "--db", db, "--index-dir", index_dir, "--json")
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output) | {"ok": True, "problems": []} == json.loads(verify.output)
    arc = Archive(db, index_dir, encoder=HashEncoder())
    try:
        urls = [r[0] for r in arc.db.execute("select url from articles order by url")]
        assert sorted(urls) == sorted(r["url"] for r in records)  # none lost, none twice
        chunk_ids = arc.db.execute("select id from chunks order by id").fetchall()
        index, _ = ix.load(index_dir, check_sha=True)
        assert sorted(index.ids().tolist()) == [c[0] for c in chunk_ids]
        per_article = arc.db.execute(
            "select count(c.id) from articles a left join chunks c on c.article_id = a.id group by a.id"
        ).fetchall()
        assert len(per_article) == len(records) and min(n for (n,) in per_article) >= 1
        hit = arc.search("new railway in ward 9", k=3, mode="semantic")
        assert "https://crash.example.com/9" in [r.url for r in hit]
    finally:
        arc.close()


def damage_truncate(index_dir: Path) -> None:
    m = ix.Manifest.read(index_dir)
    path = index_dir / m.file
    path.write_bytes(path.read_bytes()[: m.size // 3])


def damage_flip_bytes(index_dir: Path) -> None:
    """Same size, different bytes: only the checksum can tell."""
    m = ix.Manifest.read(index_dir)
    path = index_dir / m.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 512] = bytes(512)
    path.write_bytes(bytes(data))


def damage_remove_manifest(index_dir: Path) -> None:
    (index_dir / ix.MANIFEST).unlink()


def damage_remove_index_file(index_dir: Path) -> None:
    (index_dir / ix.Manifest.read(index_dir).file).unlink()


def damage_garbage_manifest(index_dir: Path) -> None:
    (index_dir / ix.MANIFEST).write_text("{ this is not json")


DAMAGE = {
    "truncated": (damage_truncate, "bytes, manifest says"),
    "bytes flipped": (damage_flip_bytes, "checksum differs"),
    "manifest missing": (damage_remove_manifest, "no index manifest"),
    "index file missing": (damage_remove_index_file, "index file named by the manifest is missing"),
    "manifest garbage": (damage_garbage_manifest, "unreadable manifest"),
}


@pytest.mark.parametrize("fix", ["verify --repair", "index --rebuild"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_index_is_reported_clearly_and_repaired(copy, damage, fix):
    db, index_dir = copy
    chunks = sqlite3.connect(db).execute("select count(*) from chunks").fetchone()[0]
    DAMAGE[damage][0](index_dir)
    result = run("verify", "--db", db, "--index-dir", index_dir)
    assert result.exit_code == 1 and DAMAGE[damage][1] in result.output, result.output
    assert "Traceback" not in result.output and "NOT ok (run with --repair)" in result.output
    if fix == "verify --repair":
        fixed = run("verify", "--repair", "--db", db, "--index-dir", index_dir)
        assert fixed.exit_code == 0 and "repaired" in fixed.output, fixed.output
    else:
        fixed = run("index", "--rebuild", "--db", db, "--index-dir", index_dir)
        assert fixed.exit_code == 0 and f"{chunks:,} vectors" in fixed.output, fixed.output
    after = json.loads(run("verify", "--db", db, "--index-dir", index_dir, "--json").output)
    assert after["ok"] and after["problems"] == [] and after["indexed"] == chunks


async def test_a_running_server_says_503_on_a_damaged_index_and_recovers_after_repair(copy):
    db, index_dir = copy
    ds = Datasette([str(db)], metadata={"plugins": {"news-archive": {"encoder": "hash_encoder:HashEncoder"}}})
    url = "/archive/-/semantic.json?q=avalanche+buries+a+hotel&k=3&mode=semantic"
    good = await ds.client.get(url)
    assert good.status_code == 200
    (index_dir / ix.MANIFEST).unlink()
    broken = await ds.client.get(url)
    assert broken.status_code == 503 and "archive index --rebuild" in broken.json()["error"]
    keyword = await ds.client.get(url.replace("mode=semantic", "mode=keyword"))
    assert keyword.status_code == 200 and keyword.json()["results"]  # FTS needs no index
    assert run("verify", "--repair", "--db", db, "--index-dir", index_dir).exit_code == 0
    again = await ds.client.get(url)
    assert again.status_code == 200 and again.json() == good.json()  # no restart needed


def test_a_second_writer_is_refused_with_a_clear_message_and_changes_nothing(copy, tmp_path):
    db, index_dir = copy
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps(short_articles(1)[0]) + "\n")
    before = sqlite3.connect(db).execute("select count(*), max(updated_at) from articles").fetchone()
    manifest = (index_dir / ix.MANIFEST).read_text()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from archive.index import writer_lock\n"
                "with writer_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)"
            ),
            str(index_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = "another `archive` command is writing this archive; try again when it ends"
        for args in (["delete", "--id", "1"], ["verify", "--repair"], ["index", "--rebuild"]):
            result = run(*args, "--db", db, "--index-dir", index_dir)
            assert result.exit_code == 1, (args, result.output)
            assert busy in result.output and "Traceback" not in result.output
        with pytest.raises(ArchiveError, match=busy):  # `archive load` would embed: the library call, same lock
            Archive(db, index_dir, encoder=HashEncoder()).load([str(src)])
    finally:
        holder.kill()
        holder.wait()
    assert sqlite3.connect(db).execute("select count(*), max(updated_at) from articles").fetchone() == before
    assert (index_dir / ix.MANIFEST).read_text() == manifest
    assert run("delete", "--id", "1", "--db", db, "--index-dir", index_dir).exit_code == 0  # a dead holder frees it


def test_a_kill_between_commit_and_index_save_is_caught_up_by_the_next_writer(copy):
    """The window SIGKILL can hit: the batch is committed, the index file not yet written."""
    db, index_dir = copy
    arc = Archive(db, index_dir, encoder=HashEncoder())
    try:
        dim = int(arc.meta["dimensions"])
        ids = arc.db.execute("select id from chunks order by id desc limit 7").fetchall()
        index, _ = ix.load(index_dir)
        index.remove([i for (i,) in ids])
        ix.save(index, index_dir, model_fingerprint=arc.meta["model_fingerprint"], db_generation=0)
        assert "7 chunk vectors are in the database but not in the index" in arc.verify().problems
        arc.delete([1])  # any writer brings the index level first
        report = arc.verify()
        assert report.ok and not report.problems
        index, _ = ix.load(index_dir)
        stored = np.frombuffer(
            arc.db.execute("select vector from chunks where id = ?", [ids[0][0]]).fetchone()[0], dtype=np.float32
        )
        assert np.allclose(index.vectors(np.array([ids[0][0]]))[0], stored) and len(stored) == dim
    finally:
        arc.close()


def test_a_reader_never_fails_while_a_writer_saves_generation_after_generation(tmp_path):
    """The server's LiveIndex against back-to-back saves: a save removes the file the previous manifest named,
    so a reader that read that manifest a moment earlier must read again, not answer 503. Counted, not timed:
    the writer saves 60 generations, each only after the readers have read a few more times."""
    saves_total, reads_per_save = 60, 3
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2000, 16)).astype(np.float32)
    index = ix.ChunkIndex(16)
    index.add(np.arange(1, 2001), vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    ix.save(index, tmp_path, model_fingerprint="", db_generation=0)
    done, errors, raw_errors, reads = threading.Event(), [], [], [0]
    read_more = threading.Condition()

    def writer():
        for generation in range(1, saves_total + 1):
            with read_more:  # let the readers in between saves, however the threads are scheduled
                read_more.wait_for(lambda g=generation: reads[0] >= g * reads_per_save or errors)
            ix.save(index, tmp_path, model_fingerprint="", db_generation=generation)
        done.set()

    def reader():
        live = ix.LiveIndex(tmp_path)
        while not done.is_set():
            try:
                live.current()
            except Exception as e:  # noqa: BLE001 - any failure is the bug
                errors.append(repr(e))
            with read_more:
                reads[0] += 1
                read_more.notify_all()
            try:  # the same read without LiveIndex's retry: shows the race is real (not asserted: scheduling)
                ix.load(tmp_path)
            except Exception as e:  # noqa: BLE001 - counted, not a failure: LiveIndex is what must not fail
                raw_errors.append(repr(e))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"\n{reads[0]} reads during {saves_total} saves; unprotected reads failed {len(raw_errors)} times")
    assert errors == [], f"{len(errors)} failed reads of {reads[0]} (unprotected reads failed {len(raw_errors)} times)"
    assert reads[0] >= saves_total * reads_per_save and ix.Manifest.read(tmp_path).db_generation == saves_total
