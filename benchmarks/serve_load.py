"""Serving under load: concurrent clients against `archive serve` while `archive load` adds articles.

    python -m benchmarks.serve_load --source-db path/to/archive.db        # 60 s on a copy of that archive
    python -m benchmarks.serve_load --rows 120 --duration 30              # build a 120-article archive first
    python -m benchmarks.serve_load --clients 16 --duration 120

Loopback only and bounded in time. The archive is copied to a temporary folder (the original is never
touched); `archive serve` runs on a free 127.0.0.1 port. `--clients` threads (>= 8) send a random mix of
semantic, hybrid and keyword searches (plugin JSON and HTML pages), related coverage, the SQL function, and
Datasette table/row requests, for `--duration` seconds. Meanwhile a writer runs `archive load` again and
again, each time with a few NewsArticles rows the archive does not hold yet, and for every load measures
the time from the database commit (seen by polling the database read-only) to the new articles answering a
semantic search through the server (target: within 5 s).

Reported: requests served, 5xx responses, "database is locked" answers, other errors, p50/p95/max latency
overall and per request kind, and the commit-to-visible time of every load. Exit status 1 on any 5xx or
lock error, or a visibility time over the target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import httpx

ARCHIVE = str(Path(sys.executable).parent / "archive")
STALL: dict = {}
TARGET_VISIBLE_S = 5.0
QUERIES = [
    "cyclone hits the Queensland coast", "avalanche buries a hotel in Italy", "North Korea missile test",
    "Brexit negotiations with the European Union", "Trump administration travel ban", "stock markets fall",
    "football club wins the league", "refugees cross the Mediterranean", "election results announced",
    "police investigate a shooting", "climate change report", "earthquake damages buildings",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def news_rows() -> list[dict]:
    from archive.sample import news_rows

    return [r for r in news_rows() if r["text"].strip() and r["title"].strip()]


def build_archive(rows: list[dict], work: Path) -> Path:
    src = work / "seed.jsonl"
    src.write_text("".join(json.dumps(as_record(r)) + "\n" for r in rows), encoding="utf-8")
    subprocess.run([ARCHIVE, "load", str(src), "--db", str(work / "archive.db"), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return work / "archive.db"


def as_record(row: dict) -> dict:
    return {"url": row["article_source_link"], "title": row["title"], "body": row["text"][:3000],
            "published": row["publish_date"], "subtitle": row["subtitle"]}


def stored_ids(db: Path, urls: list[str]) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        marks = ",".join("?" * len(urls))
        return dict(conn.execute(f"select url, id from articles where url in ({marks})", urls).fetchall())
    finally:
        conn.close()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.status: dict[int, int] = {}
        self.server_errors: list[str] = []
        self.locked = 0
        self.failures: list[str] = []  # connection errors, timeouts

    def record(self, kind: str, seconds: float, status: int, text: str) -> None:
        with self.lock:
            self.latency.setdefault(kind, []).append(seconds)
            self.status[status] = self.status.get(status, 0) + 1
            if "database is locked" in text:
                self.locked += 1
            if status >= 500:
                self.server_errors.append(f"{kind} {status}: {text[:200]}")


def client(base: str, stats: Stats, ids: list[int], stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            q = rng.choice(QUERIES)
            aid = rng.choice(ids)
            kind, path, params = rng.choice([
                ("semantic", "/archive/-/semantic.json", {"q": q, "mode": "semantic", "k": rng.randint(1, 20)}),
                ("hybrid", "/archive/-/semantic.json", {"q": q, "k": 10}),
                ("hybrid_page", "/archive/-/semantic", {"q": q}),
                ("keyword", "/archive/-/semantic.json", {"q": q.split()[0], "mode": "keyword"}),
                ("related", f"/archive/articles/{aid}/-/related.json", {"k": 5}),
                ("related_page", f"/archive/articles/{aid}/-/related", {}),
                ("sql_function", "/archive.json", {"sql": "select semantic_search(:q, 5) as hits", "q": q,
                                                   "_shape": "array"}),
                ("table", "/archive/articles.json", {"_search": q.split()[-1], "_size": 10}),
                ("table_page", "/archive/articles", {"outlet__exact": "bbc.co.uk", "_size": 20}),
                ("row", f"/archive/articles/{aid}.json", {}),
            ])
            started = time.monotonic()
            try:
                response = http.get(path, params=params)
            except httpx.HTTPError as e:
                with stats.lock:
                    stats.failures.append(f"{kind}: {type(e).__name__}: {e} after {time.monotonic() - started:.0f} s")
                    if isinstance(e, httpx.TimeoutException) and not STALL.get("dumped"):
                        STALL["dumped"] = True
                        os.kill(STALL["pid"], signal.SIGUSR1)
                continue
            stats.record(kind, time.monotonic() - started, response.status_code, response.text)


def visible(http: httpx.Client, title: str, article_id: int) -> bool:
    try:
        response = http.get("/archive/-/semantic.json", params={"q": title, "mode": "semantic", "k": 20})
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and article_id in [r["id"] for r in response.json()["results"]]


def writer(base: str, db: Path, rows: list[dict], per_load: int, work: Path, stop: threading.Event,
           loads: list[dict]) -> None:
    """`archive load` a few new articles at a time; time each commit and when the server answers with them."""
    n = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        while not stop.is_set() and rows:
            batch, rows = rows[:per_load], rows[per_load:]
            n += 1
            src = work / f"new-{n}.jsonl"
            src.write_text("".join(json.dumps(as_record(r)) + "\n" for r in batch), encoding="utf-8")
            urls = [r["article_source_link"] for r in batch]
            proc = subprocess.Popen([ARCHIVE, "load", str(src), "--db", str(db), "--quiet", "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            committed = None
            while committed is None:
                found = stored_ids(db, urls)
                if len(found) == len(urls):
                    committed = time.monotonic()
                elif proc.poll() is not None:
                    break
                else:
                    time.sleep(0.05)
            out, err = proc.communicate()
            entry = {"load": n, "exit": proc.returncode, "articles": len(batch), "visible_s": None}
            if committed is None:
                entry["error"] = (err or out)[-300:]
                loads.append(entry)
                continue
            found = stored_ids(db, urls)
            pending = {found[r["article_source_link"]]: r["title"] for r in batch}
            while pending and time.monotonic() - committed < 60:
                for aid, title in list(pending.items()):
                    if visible(http, title, aid):
                        pending.pop(aid)
                if pending:
                    time.sleep(0.1)
            entry["visible_s"] = None if pending else round(time.monotonic() - committed, 2)
            loads.append(entry)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-db", type=Path, help="an existing archive to copy (default: build one)")
    parser.add_argument("--rows", type=int, default=120, help="articles in the archive built when no --source-db")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--per-load", type=int, default=3, help="new articles per `archive load`")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = news_rows()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.source_db:
            db = work / "archive.db"
            shutil.copy(args.source_db, db)
            index_src = args.source_db.resolve().parent / "indexes"
            shutil.copytree(index_src, work / "indexes", ignore=shutil.ignore_patterns(".lock"))
        else:
            print(f"building an archive of {args.rows} NewsArticles rows ...", flush=True)
            db = build_archive(rows[: args.rows], work)
        conn = sqlite3.connect(db)
        have = {r[0] for r in conn.execute("select url from articles")}
        ids = [r[0] for r in conn.execute("select id from articles")]
        conn.close()
        new_rows = [r for r in rows if r["article_source_link"] not in have]
        random.Random(args.seed).shuffle(new_rows)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # The server dumps every thread's stack on SIGUSR1 (sent when a request times out) to find stalls.
        stacks = work / "server-stacks.txt"
        boot = ("import faulthandler, signal, sys; "
                "faulthandler.register(signal.SIGUSR1, file=open(sys.argv.pop(1), 'w'), all_threads=True); "
                "from archive.cli import cli; cli()")
        server = subprocess.Popen([sys.executable, "-c", boot, str(stacks), "serve", "--db", str(db), "--host",
                                   "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, text=True)
        STALL["pid"] = server.pid
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(base + "/archive/-/semantic.json?q=warm+up&k=1", timeout=60):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"archive serve did not start: {server.stdout.read()[-2000:]}") from None
                    time.sleep(0.2)
            stats, loads, stop = Stats(), [], threading.Event()
            threads = [threading.Thread(target=client, args=(base, stats, ids, stop, args.seed + i))
                       for i in range(args.clients)]
            threads.append(threading.Thread(target=writer, args=(base, db, new_rows, args.per_load, work, stop,
                                                                 loads)))
            started = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(args.duration)
            stop.set()
            for t in threads:
                t.join(timeout=120)
            elapsed = time.monotonic() - started
            if STALL.get("dumped"):
                time.sleep(1)
                print(f"server thread stacks at the first timeout:\n{stacks.read_text()[-6000:]}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()

    everything = [s for v in stats.latency.values() for s in v]
    served = len(everything)
    five_xx = sum(n for code, n in stats.status.items() if code >= 500)
    print(f"\n{args.clients} clients for {elapsed:.0f} s against archive serve ({len(ids)} articles at the start)")
    print(f"requests served: {served} ({served / elapsed:.1f}/s); status codes: {dict(sorted(stats.status.items()))}")
    print(f"5xx: {five_xx}; 'database is locked': {stats.locked}; connection errors/timeouts: {len(stats.failures)}")
    print(f"latency: p50 {statistics.median(everything) * 1000:.0f} ms, p95 {percentile(everything, 95) * 1000:.0f} ms,"
          f" max {max(everything) * 1000:.0f} ms" if everything else "latency: no requests")
    for kind, values in sorted(stats.latency.items()):
        print(f"  {kind:13} n={len(values):5}  p50 {statistics.median(values) * 1000:6.0f} ms  "
              f"p95 {percentile(values, 95) * 1000:6.0f} ms")
    times = [e["visible_s"] for e in loads if e["visible_s"] is not None]
    print(f"loads during the run: {len(loads)} ({sum(e['articles'] for e in loads)} articles); "
          f"commit -> answering: {times} s (target <= {TARGET_VISIBLE_S} s)")
    for e in loads:
        if e["visible_s"] is None:
            print(f"  load {e['load']}: {e.get('error') or 'never answered within 60 s'}")
    for line in stats.server_errors[:5] + stats.failures[:5]:
        print("  error:", line)
    ok = (served and not five_xx and not stats.locked and not stats.failures and loads
          and all(t is not None and t <= TARGET_VISIBLE_S for t in (e["visible_s"] for e in loads)))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
