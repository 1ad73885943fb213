"""Serving many requests: concurrent calls on their own readers, the time budget (503 with Retry-After only past
it), and a server that notices its database swapped or its model switched by another process (through
datasette.client, on copies of the hash-encoder sample; the real-model switch is slow)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import with_hash_encoder
from datasette.app import Datasette
from hash_encoder import HashEncoder

from archive import Archive, ArchiveError
from datasette_plugins.news_archive.archives import archives, validate_config

ZEBRA = {
    "title": "Zebra escapes from a circus in Vienna",
    "outlet": "example.org",
    "published": "2017-04-01",
    "url": "https://example.org/zebra",
    "body": "A zebra escaped from a circus in Vienna on Saturday and trotted along the Ringstrasse before keepers "
    "caught it near the opera house. Police closed two tram lines for an hour.",
}
ZEBRA_QUERY = "/archive/-/semantic.json?q=zebra+escaped+from+a+circus+in+Vienna&k=3&mode=semantic"


def serve(sample, **settings) -> Datasette:
    metadata = sample.metadata({"plugins": {"news-archive": settings}} if settings else None)
    return Datasette([str(sample.db_path)], metadata=metadata)


class Blocker:
    """`n` library calls that hold their turns (in threads) until released: a server kept busy on purpose."""

    def __init__(self, handle, n: int):
        self.release, self.started = threading.Event(), threading.Semaphore(0)
        self.threads = [threading.Thread(target=handle.run, args=(self._hold,)) for _ in range(n)]
        for t in self.threads:
            t.start()
        for _ in range(n):
            assert self.started.acquire(timeout=10)

    def _hold(self, arc) -> None:
        self.started.release()
        self.release.wait(10)

    def done(self) -> None:
        self.release.set()
        for t in self.threads:
            t.join(10)


# ---- concurrency -----------------------------------------------------------------------------------------


def test_a_call_does_not_wait_for_another_to_finish(hash_sample):
    handle = archives(serve(hash_sample)).get("archive")
    busy = Blocker(handle, 1)
    try:
        results = handle.run(lambda arc: arc.search("cyclone hits the Queensland coast", k=3, mode="semantic"))
        assert len(results) == 3 and not busy.release.is_set() and busy.threads[0].is_alive()
    finally:
        busy.done()


def test_each_thread_reads_through_its_own_connection(hash_sample):
    handle = archives(serve(hash_sample)).get("archive")
    conns = []
    for _ in range(2):
        t = threading.Thread(target=lambda: conns.append(handle.run(lambda arc: arc.db.conn)))
        t.start()
        t.join()
    assert len(conns) == 2 and conns[0] is not conns[1] and handle.archive.db.conn not in conns
    assert handle.run(lambda arc: arc.db.execute("pragma query_only").fetchone()[0]) == 1  # readers never write


async def test_concurrent_requests_all_answer(hash_sample):
    ds = serve(hash_sample)
    paths = [ZEBRA_QUERY, "/archive/-/semantic.json?q=avalanche&mode=hybrid", "/archive/articles/1/-/related.json"]
    responses = await asyncio.gather(*(ds.client.get(p) for p in paths * 4))
    assert [r.status_code for r in responses] == [200] * 12


class QueryOnlyEncoder(HashEncoder):
    """The hash encoder whose document path (`encode`: the loader's, torch for a real model) refuses: a server
    must reach only `encode_queries`."""

    def encode(self, texts, progress=None):
        raise AssertionError("a server encoded documents (a real model would have loaded torch here)")

    def encode_queries(self, texts):
        return HashEncoder.encode(self, texts)


async def test_every_query_path_goes_through_the_query_encoder(hash_sample):
    metadata = {"plugins": {"news-archive": {"encoder": "test_plugin_serving:QueryOnlyEncoder"}}}
    ds = Datasette([str(hash_sample.db_path)], metadata=metadata)
    assert type(archives(ds).get("archive").archive.encoder).__name__ == "QueryOnlyEncoder"
    sql = await ds.client.get("/archive.json", params={"sql": "select semantic_search('zebra', 3) as hits"})
    assert sql.status_code == 200 and len(json.loads(sql.json()["rows"][0][0])) == 3
    for path in (ZEBRA_QUERY, "/archive/-/semantic.json?q=zebra&mode=hybrid", "/archive/articles/1/-/related.json"):
        assert (await ds.client.get(path)).status_code == 200, path


# ---- the time budget -------------------------------------------------------------------------------------


async def test_a_queue_that_fits_the_budget_is_served_not_refused(hash_sample):
    ds = serve(hash_sample, time_budget=5)
    handle = archives(ds).get("archive")
    busy = Blocker(handle, handle.gate.slots)  # every slot taken: this request must wait its turn
    threading.Timer(0.3, busy.done).start()
    response = await ds.client.get(ZEBRA_QUERY)
    assert response.status_code == 200 and busy.release.is_set()


@pytest.mark.parametrize("path", [ZEBRA_QUERY, "/archive/-/semantic?q=zebra", "/archive/articles/1/-/related.json"])
async def test_a_wait_past_the_budget_is_503_with_retry_after(hash_sample, path):
    ds = serve(hash_sample, time_budget=0.2)
    handle = archives(ds).get("archive")
    busy = Blocker(handle, handle.gate.slots)
    try:
        response = await ds.client.get(path)
    finally:
        busy.done()
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert "busy" in response.text
    if path.endswith(".json") or ".json?" in path:
        assert response.json()["ok"] is False
    assert (await ds.client.get(path)).status_code == 200  # and once the queue clears, it answers


def test_a_call_whose_expected_wait_passes_the_budget_is_refused_at_once(hash_sample):
    handle = archives(serve(hash_sample, time_budget=1)).get("archive")
    busy = Blocker(handle, handle.gate.slots)
    handle.gate._mean_s = 0.8  # calls have been taking 0.8 s: a second round of them would pass 1 s
    waiting = [threading.Thread(target=quietly, args=(handle, busy.release)) for _ in range(handle.gate.slots)]
    for t in waiting:
        t.start()
    try:
        while handle.gate._waiting < handle.gate.slots:  # a full round of calls waits behind the running ones
            threading.Event().wait(0.01)
        with pytest.raises(ArchiveError, match="busy") as refused:
            handle.run(lambda arc: None)
        assert refused.value.retry_after == 2
    finally:
        busy.done()
        for t in waiting:
            t.join(10)


def test_a_call_dropped_while_it_waits_for_its_turn_leaves_without_running_and_is_counted_once(hash_sample):
    """A request closed while its job already waits in `turn` (on a worker thread): the job must not run for
    nobody, and the queue must not count it out twice (that undercounts every later wait)."""
    handle = archives(serve(hash_sample)).get("archive")
    gate, ran, outcome = handle.gate, [], []
    busy = Blocker(handle, gate.slots)
    ticket = gate.admit()

    def job():
        try:
            with gate.turn(ticket):
                ran.append(True)
        except ArchiveError as e:
            outcome.append(e)

    waiter = threading.Thread(target=job)
    waiter.start()
    try:
        threading.Event().wait(0.05)  # the job is waiting for a slot
        gate.drop(ticket)
        waiter.join(10)
        assert not waiter.is_alive() and ran == [] and "busy" in str(outcome[0])
    finally:
        busy.done()
    assert (gate._waiting, gate._running) == (0, 0)
    assert gate.expected_wait() == 0.0 and handle.run(lambda arc: "served") == "served"


def quietly(handle, release: threading.Event) -> None:
    """A call that may be refused (its wait passes the budget) without an unhandled error in its thread."""
    try:
        handle.run(lambda arc: None)
    except ArchiveError:
        assert not release.is_set()


@pytest.mark.parametrize("value", ["soon", 0, -1, "nan", 10_000])
def test_a_bad_time_budget_is_refused_at_startup(hash_sample, value):
    with pytest.raises(ArchiveError, match="time_budget"):
        validate_config(serve(hash_sample, time_budget=value))


def test_the_time_budget_comes_from_the_environment(hash_sample, monkeypatch):
    monkeypatch.setenv("NEWS_ARCHIVE_TIME_BUDGET", "2.5")
    assert archives(serve(hash_sample)).get("archive").gate.budget_s == 2.5


# ---- a database or model changed under the server ---------------------------------------------------------


def write_jsonl(path: Path, *records: dict) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


async def test_a_database_swapped_under_the_same_path_is_reopened(hash_sample, tmp_path):
    sample = hash_sample.copy_to(tmp_path / "served")
    ds = serve(sample)
    before = (await ds.client.get(ZEBRA_QUERY)).json()["results"]
    assert ZEBRA["url"] not in [r["url"] for r in before]
    (tmp_path / "other").mkdir()
    other = Archive(tmp_path / "other" / "archive.db", create=True, encoder=HashEncoder())  # another archive_id
    other.load([write_jsonl(tmp_path / "zebra.jsonl", ZEBRA)])
    other_index, other_id = other.index_dir, other.archive_id
    other.close()
    os.replace(other.db_path, sample.db_path)  # swapped under the running server, with its index beside it
    shutil.copytree(other_index, sample.db_path.parent / "indexes" / "archive.db")
    after = (await ds.client.get(ZEBRA_QUERY)).json()["results"]
    assert [r["url"] for r in after] == [ZEBRA["url"]]
    assert archives(ds).get("archive").archive.archive_id == other_id


class RolledHashEncoder(HashEncoder):
    """Another 64-dim "model": the hash encoder's vectors rotated by one place (other vectors, same size)."""

    name = property(lambda self: f"rolled-hash-{self.dimensions}")
    fingerprint = property(lambda self: f"rolled-hash-v1-{self.dimensions}")

    def encode(self, texts, progress=None):
        return np.roll(super().encode(texts, progress), 1, axis=1)


def switch_model(db_path: Path, encoder) -> None:
    """What `archive index --rebuild --reembed` does in another process, with this encoder for the model."""
    switch = Archive(db_path, encoder=encoder)
    switch._checked = True  # (rebuild_index(reembed=True) does this for the model it makes; here, this encoder)
    switch.maintenance.rebuild(reembed=True, progress=None, index_type="auto")
    switch.close()


async def test_a_model_switched_by_another_process_is_noticed(tmp_path):
    """The server's encoder setting is the hash encoder; another process re-embeds the archive with another
    model, then back. The server answers a clear error naming the archive's model while they differ (before,
    it went on encoding queries for vectors of another model), and results again after."""
    db_path = tmp_path / "archive.db"
    arc = Archive(db_path, create=True, encoder=HashEncoder())
    others = [
        {**ZEBRA, "url": f"https://example.org/{n}", "title": f"Story {n}", "body": f"A {n} walks."} for n in "ab"
    ]
    arc.load([write_jsonl(tmp_path / "in.jsonl", ZEBRA, *others)])
    arc.close()
    ds = Datasette([str(db_path)], metadata=with_hash_encoder())
    assert (await ds.client.get(ZEBRA_QUERY)).status_code == 200
    switch_model(db_path, RolledHashEncoder())
    response = await ds.client.get(ZEBRA_QUERY)
    assert response.status_code == 400 and "rolled-hash-64" in response.json()["error"]
    switch_model(db_path, HashEncoder())
    response = await ds.client.get(ZEBRA_QUERY)
    assert response.status_code == 200 and response.json()["results"][0]["url"] == ZEBRA["url"]


@pytest.mark.slow
async def test_a_real_model_switch_is_served_with_the_new_model(news_csv, tmp_path):
    """minilm -> mpnet by `rebuild_index(reembed=True)` in another Archive: the server's next query uses mpnet."""
    from archive import registry
    from archive.sample import news_rows

    mpnet = registry.resolve("mpnet")
    if not Path(mpnet).is_dir():
        pytest.skip("mpnet is not installed (archive models install mpnet)")
    rows = [r for r in news_rows(news_csv) if "avalanche" in r["title"].lower()][:3]
    records = [{"title": r["title"], "body": r["text"][:1500], "url": r["article_source_link"]} for r in rows]
    arc = Archive(tmp_path / "archive.db", create=True)
    arc.load([write_jsonl(tmp_path / "in.jsonl", ZEBRA, *records)])
    arc.close()
    ds = Datasette([str(tmp_path / "archive.db")])
    assert (await ds.client.get(ZEBRA_QUERY)).json()["results"][0]["url"] == ZEBRA["url"]
    switch = Archive(tmp_path / "archive.db", model=mpnet)
    switch.rebuild_index(reembed=True)
    switch.close()
    response = await ds.client.get(ZEBRA_QUERY)
    assert response.status_code == 200 and response.json()["results"][0]["url"] == ZEBRA["url"]
    assert archives(ds).get("archive").archive.encoder.dimensions == 768
