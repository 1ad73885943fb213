"""Serving under load: concurrent clients against `archive serve` while `archive load` adds articles.

    python -m benchmarks.serve_load --source-db path/to/archive.db        # 60 s on a copy of that archive
    python -m benchmarks.serve_load --rows 120 --duration 30              # build a 120-article archive first
    python -m benchmarks.serve_load --clients 16 --duration 120
    python -m benchmarks.serve_load --source-db ~/.cache/news-archive/full/archive.db --mix queries \
        --no-writer --compare --duration 30                             # the issue's goal: 8 clients vs 1

Loopback only and bounded in time. The archive is copied to a temporary folder (the original is never
touched); `archive serve` runs on a free 127.0.0.1 port. `--clients` threads (>= 8) send a random mix of
semantic, hybrid and keyword searches (plugin JSON and HTML pages), related coverage, the SQL function, and
Datasette table/row requests, for `--duration` seconds. Meanwhile a writer runs `archive load` again and
again, each time with a few NewsArticles rows the archive does not hold yet, and for every load measures
the time from the database commit (seen by polling the database read-only) to the new articles answering a
semantic search through the server (target: within 5 s).

`--mix queries` sends only semantic, hybrid and related coverage JSON requests (the plugin's own work), and
`--no-writer` runs no loads. `--compare` first runs one client alone for the same time against the same
server, then the clients; it reports both throughputs and their ratio (the CPU is shared, so the ratio from
one run is the figure to compare) against the goal: >= 1.7x the one-client throughput at p95 <= 150 ms.

Reported: requests served, 5xx responses, "database is locked" answers, other errors, p50/p95/max latency
overall and per request kind, and the commit-to-visible time of every load. Exit status 1 on any 5xx or
lock error, or a visibility time over the target (or, with --compare, a missed goal). A JSON record is saved
under benchmarks/results/.
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

from . import record

ARCHIVE = str(Path(sys.executable).parent / "archive")
STALL: dict = {}
TARGET_VISIBLE_S = 5.0
GOAL_RATIO, GOAL_P95_S = 1.7, 0.150  # --compare: N clients' throughput over one client's; their p95
QUERY_KINDS = {"semantic", "hybrid", "related"}
QUERIES = [
    "cyclone hits the Queensland coast",
    "avalanche buries a hotel in Italy",
    "North Korea missile test",
    "Brexit negotiations with the European Union",
    "Trump administration travel ban",
    "stock markets fall",
    "football club wins the league",
    "refugees cross the Mediterranean",
    "election results announced",
    "police investigate a shooting",
    "climate change report",
    "earthquake damages buildings",
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
    subprocess.run(
        [ARCHIVE, "load", str(src), "--db", str(work / "archive.db"), "--quiet"], check=True, stdout=subprocess.DEVNULL
    )
    return work / "archive.db"


def as_record(row: dict) -> dict:
    return {
        "url": row["article_source_link"],
        "title": row["title"],
        "body": row["text"][:3000],
        "published": row["publish_date"],
        "subtitle": row["subtitle"],
    }


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


def client(base: str, stats: Stats, ids: list[int], stop: threading.Event, seed: int, mix: str = "all") -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            q = rng.choice(QUERIES)
            aid = rng.choice(ids)
            kind, path, params = rng.choice(
                [
                    r
                    for r in [
                        ("semantic", "/archive/-/semantic.json", {"q": q, "mode": "semantic", "k": rng.randint(1, 20)}),
                        ("hybrid", "/archive/-/semantic.json", {"q": q, "k": 10}),
                        ("hybrid_page", "/archive/-/semantic", {"q": q}),
                        ("keyword", "/archive/-/semantic.json", {"q": q.split()[0], "mode": "keyword"}),
                        ("related", f"/archive/articles/{aid}/-/related.json", {"k": 5}),
                        ("related_page", f"/archive/articles/{aid}/-/related", {}),
                        (
                            "sql_function",
                            "/archive.json",
                            {"sql": "select semantic_search(:q, 5) as hits", "q": q, "_shape": "array"},
                        ),
                        ("table", "/archive/articles.json", {"_search": q.split()[-1], "_size": 10}),
                        ("table_page", "/archive/articles", {"outlet__exact": "bbc.co.uk", "_size": 20}),
                        ("row", f"/archive/articles/{aid}.json", {}),
                    ]
                    if mix == "all" or r[0] in QUERY_KINDS
                ]
            )
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


def writer(
    base: str, db: Path, rows: list[dict], per_load: int, work: Path, stop: threading.Event, loads: list[dict]
) -> None:
    """`archive load` a few new articles at a time; time each commit and when the server answers with them."""
    n = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        while not stop.is_set() and rows:
            batch, rows = rows[:per_load], rows[per_load:]
            n += 1
            src = work / f"new-{n}.jsonl"
            src.write_text("".join(json.dumps(as_record(r)) + "\n" for r in batch), encoding="utf-8")
            urls = [r["article_source_link"] for r in batch]
            proc = subprocess.Popen(
                [ARCHIVE, "load", str(src), "--db", str(db), "--quiet", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
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


def copy_archive(source: Path, work: Path) -> Path:
    """The archive and its index into `work` (the index where the copy's default folder is)."""
    from archive import index as ix

    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    archive_id = dict(conn.execute("select key, value from archive_meta")).get("archive_id")
    conn.close()
    db = work / "archive.db"
    shutil.copy(source, db)
    index_src = ix.default_index_dir(source, archive_id)
    shutil.copytree(
        index_src,
        ix.default_index_dir(db, archive_id) if index_src.name == source.name else work / "indexes",
        ignore=shutil.ignore_patterns(".lock"),
    )  # (an older shared indexes/)
    return db


def run_phase(
    base: str, db: Path, ids: list[int], new_rows: list[dict], work: Path, args, clients: int, writer_on: bool
) -> tuple[Stats, list[dict], float]:
    """`clients` clients (and the writer) for args.duration seconds; (stats, loads, elapsed seconds)."""
    stats, loads, stop = Stats(), [], threading.Event()
    threads = [
        threading.Thread(target=client, args=(base, stats, ids, stop, args.seed + i, args.mix)) for i in range(clients)
    ]
    if writer_on:
        threads.append(threading.Thread(target=writer, args=(base, db, new_rows, args.per_load, work, stop, loads)))
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(args.duration)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    return stats, loads, time.monotonic() - started


def summary(stats: Stats, elapsed: float) -> dict:
    everything = [s for v in stats.latency.values() for s in v]
    return {
        "served": len(everything), "per_s": round(len(everything) / elapsed, 1),
        "p50_ms": round(statistics.median(everything) * 1000) if everything else None,
        "p95_ms": round(percentile(everything, 95) * 1000) if everything else None,
        "max_ms": round(max(everything) * 1000) if everything else None,
        "status": dict(sorted(stats.status.items())),
        "kinds": {k: {"n": len(v), "p50_ms": round(statistics.median(v) * 1000),
                      "p95_ms": round(percentile(v, 95) * 1000)} for k, v in sorted(stats.latency.items())},
    }  # fmt: skip


def report(stats: Stats, loads: list[dict], elapsed: float, clients: int, articles: int) -> None:
    s = summary(stats, elapsed)
    five_xx = sum(n for code, n in stats.status.items() if code >= 500)
    print(f"\n{clients} clients for {elapsed:.0f} s against archive serve ({articles} articles at the start)")
    print(f"requests served: {s['served']} ({s['per_s']}/s); status codes: {s['status']}")
    print(f"5xx: {five_xx}; 'database is locked': {stats.locked}; connection errors/timeouts: {len(stats.failures)}")
    print(f"latency: p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, max {s['max_ms']} ms")
    for kind, k in s["kinds"].items():
        print(f"  {kind:13} n={k['n']:5}  p50 {k['p50_ms']:6} ms  p95 {k['p95_ms']:6} ms")
    if loads:
        times = [e["visible_s"] for e in loads if e["visible_s"] is not None]
        print(
            f"loads during the run: {len(loads)} ({sum(e['articles'] for e in loads)} articles); "
            f"commit -> answering: {times} s (target <= {TARGET_VISIBLE_S} s)"
        )
    for e in loads:
        if e["visible_s"] is None:
            print(f"  load {e['load']}: {e.get('error') or 'never answered within 60 s'}")
    for line in stats.server_errors[:5] + stats.failures[:5]:
        print("  error:", line)


def healthy(stats: Stats, loads: list[dict], writer_on: bool) -> bool:
    served = sum(len(v) for v in stats.latency.values())
    five_xx = sum(n for code, n in stats.status.items() if code >= 500)
    visible = all(e["visible_s"] is not None and e["visible_s"] <= TARGET_VISIBLE_S for e in loads)
    return bool(served and not five_xx and not stats.locked and not stats.failures
                and (not writer_on or (loads and visible)))  # fmt: skip


def start_server(db: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The server dumps every thread's stack on SIGUSR1 (sent when a request times out) to find stalls.
    stacks = work / "server-stacks.txt"
    boot = (
        "import faulthandler, signal, sys; "
        "faulthandler.register(signal.SIGUSR1, file=open(sys.argv.pop(1), 'w'), all_threads=True); "
        "from archive.cli import cli; cli()"
    )
    server = subprocess.Popen([sys.executable, "-c", boot, str(stacks), "serve", "--db", str(db), "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    STALL["pid"], STALL["stacks"] = server.pid, stacks
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/archive/-/semantic.json?q=warm+up&k=1", timeout=60):
                return server, base
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("archive serve did not start") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-db", type=Path, help="an existing archive to copy (default: build one)")
    parser.add_argument("--rows", type=int, default=120, help="articles in the archive built when no --source-db")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (per phase)")
    parser.add_argument("--per-load", type=int, default=3, help="new articles per `archive load`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mix",
        choices=["all", "queries"],
        default="all",
        help="all request kinds, or only semantic, hybrid and related JSON",
    )
    parser.add_argument("--no-writer", action="store_true", help="no `archive load` during the run")
    parser.add_argument("--compare", action="store_true", help="first one client alone, then --clients")
    args = parser.parse_args(argv)
    rows = news_rows()
    writer_on = not args.no_writer
    phases: dict[int, tuple[Stats, list[dict], float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.source_db:
            db = copy_archive(args.source_db.expanduser().resolve(), work)
        else:
            print(f"building an archive of {args.rows} NewsArticles rows ...", flush=True)
            db = build_archive(rows[: args.rows], work)
        conn = sqlite3.connect(db)
        have = {r[0] for r in conn.execute("select url from articles")}
        ids = [r[0] for r in conn.execute("select id from articles")]
        conn.close()
        new_rows = [r for r in rows if r["article_source_link"] not in have]
        random.Random(args.seed).shuffle(new_rows)
        server, base = start_server(db, work)
        try:
            for clients in ([1] if args.compare else []) + [args.clients]:
                phases[clients] = run_phase(base, db, ids, new_rows, work, args, clients, writer_on)
            if STALL.get("dumped"):
                time.sleep(1)
                print(f"server thread stacks at the first timeout:\n{STALL['stacks'].read_text()[-6000:]}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    for clients, (stats, loads, elapsed) in phases.items():
        report(stats, loads, elapsed, clients, len(ids))
    ok = all(healthy(stats, loads, writer_on) for stats, loads, _ in phases.values())
    figures = {"articles": len(ids), "mix": args.mix, "writer": writer_on, "duration_s": args.duration,
               "phases": {str(c): summary(st, el) for c, (st, _, el) in phases.items()}}  # fmt: skip
    if args.compare:
        one, many = (summary(phases[c][0], phases[c][2]) for c in (1, args.clients))
        ratio = many["per_s"] / one["per_s"] if one["per_s"] else 0.0
        met = ratio >= GOAL_RATIO and many["p95_ms"] is not None and many["p95_ms"] <= GOAL_P95_S * 1000
        figures |= {"ratio": round(ratio, 2), "goal_met": met}
        print(
            f"\n{args.clients} clients: {many['per_s']}/s, p95 {many['p95_ms']} ms; one client: {one['per_s']}/s, "
            f"p50 {one['p50_ms']} ms -> {ratio:.2f}x (goal >= {GOAL_RATIO}x at p95 <= {GOAL_P95_S * 1000:.0f} ms): "
            f"{'met' if met else 'missed'}"
        )
        ok = ok and met
    print(f"record: {record.save('serve_load', figures, argv)}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
