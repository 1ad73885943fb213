"""Crash-safe loading: SIGKILL `archive load` at random moments, rerun it to completion, then audit the archive.

    python -m benchmarks.crash                    # 20 kills over the first 300 rows of NewsArticles
    python -m benchmarks.crash --rows 0           # the full NewsArticles.csv (3,824 rows; slow on 2 cores)
    python -m benchmarks.crash --kills 30 --max-delay 30 --seed 7

Each round starts the venv's `archive load` as a subprocess (the real CLI: model load, batches, index saves)
and kills it with SIGKILL at a random moment: half the rounds anywhere in [--min-delay, --max-delay] seconds
after the start, half within --jitter seconds after that run's first commit (so kills land mid-batch,
mid-commit and mid-index-save, not only during start-up). A round whose load finished first is not a kill.
Then one load runs to completion, and the archive is checked:

  * `archive verify` is clean, or `archive verify --repair` makes it clean (both are reported);
  * the article count equals the source's distinct articles: the distinct identities among the records the
    reader accepts (for NewsArticles: distinct URLs among rows with a body, also printed);
  * no identity or URL is stored twice, and every accepted record is stored with its own content hash;
  * every chunk id in the database is in the index with the same vector, and the index holds nothing else.

Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from archive.sample import news_rows

ARCHIVE = str(Path(sys.executable).parent / "archive")


def stored_articles(db: Path) -> int:
    """Committed articles, read as another process would (0 before the schema exists)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("select count(*) from articles").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def load_cmd(source: Path, db: Path, index_dir: Path, batch_size: int) -> list[str]:
    return [
        ARCHIVE,
        "load",
        str(source),
        "--db",
        str(db),
        "--index-dir",
        str(index_dir),
        "--quiet",
        "--batch-size",
        str(batch_size),
        "--json",
    ]


def crash_rounds(
    source: Path,
    db: Path,
    index_dir: Path,
    *,
    kills: int,
    min_delay: float,
    max_delay: float,
    batch_size: int,
    rng: random.Random,
    after_commit: float = 0.5,
    jitter: float = 3.0,
    log=print,
) -> dict:
    """Kill `archive load` `kills` times at random moments; returns what happened.

    A fraction `after_commit` of the rounds waits until the run has committed a batch and kills it within
    `jitter` seconds after (mid-batch, mid-commit or mid-index-save); the others kill at a uniformly random
    time in [min_delay, max_delay] after the start (often during start-up and model load)."""
    done = {"kills": 0, "kills_after_progress": 0, "finished_before_kill": 0, "rounds": 0}
    while done["kills"] < kills:
        before = stored_articles(db)
        proc = subprocess.Popen(
            load_cmd(source, db, index_dir, batch_size), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        started = time.monotonic()
        done["rounds"] += 1
        if rng.random() < after_commit:  # mid-load: once this run has committed a batch, then a random jitter
            while proc.poll() is None and stored_articles(db) == before and time.monotonic() - started < 600:
                time.sleep(0.05)
            delay = time.monotonic() - started + rng.uniform(0, jitter)
        else:  # anywhere: interpreter start, model load, reading, embedding, commit, index save
            delay = rng.uniform(min_delay, max_delay)
        try:
            proc.wait(timeout=max(0.0, delay - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            after = stored_articles(db)
            done["kills"] += 1
            done["kills_after_progress"] += after > before
            log(f"kill {done['kills']:3} after {delay:5.1f} s: {before} -> {after} articles committed")
            continue
        err = proc.stderr.read()
        if proc.returncode != 0:
            raise RuntimeError(f"archive load failed (exit {proc.returncode}) before any kill: {err[-2000:]}")
        done["finished_before_kill"] += 1
        log(f"round {done['rounds']}: the load finished in under {delay:.1f} s (not a kill)")
        if done["finished_before_kill"] > 3 * kills:
            raise RuntimeError("the load keeps finishing before the kill: lower --max-delay or load more rows")
    return done


def run_to_completion(source: Path, db: Path, index_dir: Path, batch_size: int) -> dict:
    out = subprocess.run(load_cmd(source, db, index_dir, batch_size), capture_output=True, text=True)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"final archive load failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def verify(db: Path, index_dir: Path, repair: bool = False) -> dict:
    cmd = [ARCHIVE, "verify", "--db", str(db), "--index-dir", str(index_dir), "--json"] + (["--repair"] * repair)
    out = subprocess.run(cmd, capture_output=True, text=True)
    return (
        {"exit": out.returncode, **json.loads(out.stdout)}
        if out.stdout.strip()
        else {"exit": out.returncode, "error": out.stderr}
    )


def expected_articles(source: Path) -> dict:
    """What the source holds: the reader's accepted records by identity (last copy wins, as in a load)."""
    from archive import store
    from archive.models import Article
    from archive.sources import read_sources

    by_identity: dict[str, str] = {}
    rejected = 0
    for rec in read_sources([str(source)]):
        if isinstance(rec, Article):
            by_identity[store.identity(rec)] = store.content_hash(rec)
        else:
            rejected += 1
    rows = [r for r in news_rows(source) if (r.get("text") or "").strip()]
    urls = {r.get("article_source_link") for r in rows}
    return {"by_identity": by_identity, "rejected": rejected, "rows_with_body": len(rows), "distinct_urls": len(urls)}


def audit(db: Path, index_dir: Path, expected: dict) -> dict:
    """Compare the archive with the source and the index with the database; every count and every failure."""
    from archive import index as ix

    conn = sqlite3.connect(db)
    try:
        stored = dict(conn.execute("select identity, content_hash from articles"))

        def count(rows: str) -> int:
            return conn.execute(f"select count(*) from {rows}").fetchone()[0]

        n_articles = count("articles")
        dup_identity = count("(select identity from articles group by identity having count(*) > 1)")
        dup_url = count("(select url from articles where url is not null group by url having count(*) > 1)")
        chunkless = count("articles where id not in (select article_id from chunks)")
        orphans = count("chunks where article_id not in (select id from articles)")
        rows = conn.execute("select id, vector from chunks order by id").fetchall()
    finally:
        conn.close()
    want = expected["by_identity"]
    lost = sorted(set(want) - set(stored))
    extra = sorted(set(stored) - set(want))
    wrong = sorted(i for i in set(want) & set(stored) if want[i] != stored[i])
    index, _ = ix.load(index_dir, check_sha=True)
    db_ids = np.array([r[0] for r in rows], dtype=np.int64)
    in_index = index.ids()
    not_indexed = np.setdiff1d(db_ids, in_index)
    stale = np.setdiff1d(in_index, db_ids)
    mismatched = 0
    if len(db_ids) and not len(not_indexed):
        stored_vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), index.dim)
        mismatched = int((np.abs(index.vectors(db_ids) - stored_vecs).max(axis=1) > index.tolerance).sum())
    result = {
        "articles": n_articles,
        "expected_articles": len(want),
        "chunks": len(db_ids),
        "indexed": int(index.ntotal),
        "lost": len(lost),
        "unexpected": len(extra),
        "wrong_content": len(wrong),
        "duplicate_identities": dup_identity,
        "duplicate_urls": dup_url,
        "articles_without_chunks": chunkless,
        "orphan_chunks": orphans,
        "chunks_not_in_index": len(not_indexed),
        "index_entries_not_in_db": len(stale),
        "vectors_differing": mismatched,
    }
    failures = [
        k
        for k in (
            "lost",
            "unexpected",
            "wrong_content",
            "duplicate_identities",
            "duplicate_urls",
            "articles_without_chunks",
            "orphan_chunks",
            "chunks_not_in_index",
            "index_entries_not_in_db",
            "vectors_differing",
        )
        if result[k]
    ]
    if n_articles != len(want):
        failures.append("articles != expected_articles")
    result["failures"] = failures
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300, help="first N rows of NewsArticles (0: all 3,824)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs that land while the load runs (>= 20)")
    parser.add_argument("--min-delay", type=float, default=0.5, help="earliest kill, seconds after the start")
    parser.add_argument("--max-delay", type=float, default=20.0, help="latest kill, seconds after the start")
    parser.add_argument("--batch-size", type=int, default=8, help="articles per committed batch")
    parser.add_argument(
        "--after-commit",
        type=float,
        default=0.5,
        help="fraction of kills that wait for the run's first commit, then a random jitter",
    )
    parser.add_argument("--jitter", type=float, default=3.0, help="seconds of jitter after that commit")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", metavar="DIR", help="build the archive in DIR and keep it")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)

    from archive.sample import fetch_news_articles, head_csv

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source = head_csv(fetch_news_articles(), args.rows, work / "source.csv")
        db, index_dir = work / "archive.db", work / "indexes"
        expected = expected_articles(source)
        print(
            f"source: {expected['rows_with_body']} rows with a body, {expected['distinct_urls']} distinct URLs, "
            f"{len(expected['by_identity'])} distinct articles the reader accepts "
            f"({expected['rejected']} rejected); seed {seed}"
        )
        started = time.monotonic()
        rounds = crash_rounds(
            source,
            db,
            index_dir,
            kills=args.kills,
            min_delay=args.min_delay,
            max_delay=args.max_delay,
            batch_size=args.batch_size,
            rng=rng,
            after_commit=args.after_commit,
            jitter=args.jitter,
        )
        after_kills = verify(db, index_dir)  # before any rerun: what the last kill left behind
        print(f"verify right after the last kill: {after_kills.get('problems') or 'clean'}")
        final = run_to_completion(source, db, index_dir, args.batch_size)
        print(
            f"rerun to completion: added {final['added']}, updated {final['updated']}, "
            f"unchanged {final['unchanged']}, rejected {len(final['rejected'])}"
        )
        first = verify(db, index_dir)
        repaired = None if first.get("ok") and not first.get("problems") else verify(db, index_dir, repair=True)
        second = verify(db, index_dir)
        result = audit(db, index_dir, expected)
        elapsed = time.monotonic() - started

    print(
        f"\nkills survived: {rounds['kills']} (SIGKILL while `archive load` ran; {rounds['kills_after_progress']} "
        f"after it had committed new articles; {rounds['finished_before_kill']} rounds finished first)"
    )
    print(f"verify after rerun: {'clean' if first.get('ok') and not first.get('problems') else first}")
    if repaired is not None:
        print(f"verify --repair: {repaired}")
    print(f"verify at the end: {'clean' if second.get('ok') and not second.get('problems') else second}")
    for key, value in result.items():
        if key != "failures":
            print(f"  {key:26} {value}")
    ok = not result["failures"] and second.get("ok") and not second.get("problems")
    print(
        f"\n{'PASS' if ok else 'FAIL: ' + ', '.join(result['failures'])} in {elapsed:.0f} s "
        f"(rows {args.rows or 'all'}, seed {seed})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
