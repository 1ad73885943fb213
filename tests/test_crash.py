"""Crash safety: SIGKILLed loads, a damaged index, a missing manifest, a second writer; each detected and repaired.

The long version (20+ kills over NewsArticles) is `python -m benchmarks.crash`; this is the CI-sized one.
tests/test_index.py and tests/test_api.py cover the library-level errors; here it is the `archive` command
a cron job would run, and the server a reporter would be using at the time.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.app import Datasette

from archive import Archive
from archive import index as ix
from archive.cli import cli

ARCHIVE = str(Path(sys.executable).parent / "archive")
TOPICS = ["harbour", "railway", "hospital", "school", "bridge", "library", "stadium", "airport"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def short_articles(n: int) -> list[dict]:
    return [{"url": f"https://crash.example.com/{i}", "title": f"Council votes on the {TOPICS[i % 8]} plan {i}",
             "published": f"2017-03-{1 + i % 28:02d}", "outlet": "crash.example.com",
             "body": f"The council voted {i} times on the new {TOPICS[i % 8]} in ward {i}. Residents objected."}
            for i in range(n)]


from benchmarks.crash import stored_articles as committed  # noqa: E402  (read as another process would)


@pytest.fixture
def copy(sample_archive, tmp_path):
    shutil.copy(sample_archive.db_path, tmp_path / "archive.db")
    shutil.copytree(sample_archive.index_dir, tmp_path / "indexes", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path / "archive.db", tmp_path / "indexes"


@pytest.mark.slow
def test_sigkilled_loads_then_a_rerun_leave_every_article_once_and_indexed(tmp_path):
    records = short_articles(80)
    src = tmp_path / "feed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    db, index_dir = tmp_path / "archive.db", tmp_path / "indexes"
    cmd = [ARCHIVE, "load", str(src), "--db", str(db), "--index-dir", str(index_dir), "--quiet", "--batch-size", "2"]
    rng, kills = random.Random(6), 0
    while kills < 3:
        before = committed(db)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and committed(db) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))  # somewhere in the next batches: embedding, commit or index save
        if proc.poll() is not None:
            break  # it finished: the remaining kills would hit nothing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills == 3 and 0 < committed(db) < len(records), "the kills should land while the load runs"
    final = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    assert report["added"] + report["unchanged"] == len(records) and report["updated"] == 0

    verify = run("verify", "--db", db, "--index-dir", index_dir, "--json")
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output) | {"ok": True, "problems": []} == json.loads(verify.output)
    arc = Archive(db, index_dir)
    try:
        urls = [r[0] for r in arc.db.execute("select url from articles order by url")]
        assert sorted(urls) == sorted(r["url"] for r in records)  # none lost, none twice
        chunk_ids = arc.db.execute("select id from chunks order by id").fetchall()
        index, _ = ix.load(index_dir, check_sha=True)
        assert sorted(index.ids().tolist()) == [c[0] for c in chunk_ids]
        assert all(arc.db.execute("select count(*) from chunks where article_id = ?", [a]).fetchone()[0]
                   for (a,) in arc.db.execute("select id from articles"))
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
    ds = Datasette([str(db)])
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
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from archive.index import writer_lock\n"
        "with writer_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)"), str(index_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (["load", src], ["delete", "1"], ["verify", "--repair"], ["index", "--rebuild"]):
            result = run(*args, "--db", db, "--index-dir", index_dir)
            assert result.exit_code == 1, (args, result.output)
            assert "another `archive` command is writing this archive; try again when it ends" in result.output
            assert "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait()
    assert sqlite3.connect(db).execute("select count(*), max(updated_at) from articles").fetchone() == before
    assert (index_dir / ix.MANIFEST).read_text() == manifest
    assert run("delete", "1", "--db", db, "--index-dir", index_dir).exit_code == 0  # a dead holder frees it


def test_a_kill_between_commit_and_index_save_is_caught_up_by_the_next_writer(copy):
    """The window SIGKILL can hit: the batch is committed, the index file not yet written."""
    db, index_dir = copy
    arc = Archive(db, index_dir)
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
        stored = np.frombuffer(arc.db.execute("select vector from chunks where id = ?", [ids[0][0]]).fetchone()[0],
                               dtype=np.float32)
        assert np.allclose(index.vectors(np.array([ids[0][0]]))[0], stored) and len(stored) == dim
    finally:
        arc.close()


def test_a_reader_never_fails_while_a_writer_saves_generation_after_generation(tmp_path):
    """The server's LiveIndex against back-to-back saves: a save removes the file the previous manifest named,
    so a reader that read that manifest a moment earlier must read again, not answer 503."""
    import threading

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2000, 16)).astype(np.float32)
    index = ix.ChunkIndex(16)
    index.add(np.arange(1, 2001), vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    ix.save(index, tmp_path, model_fingerprint="", db_generation=1)
    stop, errors, raw_errors, reads, saves = threading.Event(), [], [], [0], [0]

    def writer():
        while not stop.is_set():
            ix.save(index, tmp_path, model_fingerprint="", db_generation=saves[0])
            saves[0] += 1

    def reader():
        live = ix.LiveIndex(tmp_path)
        while not stop.is_set():
            try:
                live.current()
                reads[0] += 1
            except Exception as e:  # noqa: BLE001 - any failure is the bug
                errors.append(repr(e))
            try:  # the same read without LiveIndex's retry: shows the race is real (not asserted: timing)
                ix.load(tmp_path)
            except (ix.IndexMissing, ix.IndexCorrupt, OSError) as e:
                raw_errors.append(repr(e))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    print(f"\n{reads[0]} reads during {saves[0]} saves; unprotected reads failed {len(raw_errors)} times")
    assert saves[0] > 20 and reads[0] > 20
    assert errors == [], f"{len(errors)} failed reads of {reads[0]} (unprotected reads failed {len(raw_errors)} times)"
