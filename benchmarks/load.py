"""Bulk-load throughput: `archive load` end to end on NewsArticles, against raw `encode()` of the same chunks.

    python -m benchmarks.load                 # the full NewsArticles.csv (3,824 rows; ~10+ minutes on 2 cores)
    python -m benchmarks.load --limit 300     # a quicker run

The baseline is the same Encoder embedding the very chunks the load produced, in the same process, so the
ratio is the pipeline's overhead (reading, cleaning, chunking, storing, indexing) over pure encoding. On a
shared machine the encoder's own speed drifts by ±10% between two time windows, so the load's time spent
outside `encode` is also measured inside the one run: that share is immune to the drift.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from archive import Archive
from archive.sample import fetch_news_articles, head_csv


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N rows")
    args = parser.parse_args(argv)
    src = fetch_news_articles()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.limit:
            src = head_csv(src, args.limit, tmp / "head.csv")
        arc = Archive(tmp / "a.db", tmp / "idx", create=True)
        arc.encoder.encode(["warm up"])  # model load is not throughput
        inside = _time_encode(arc.encoder)
        started = time.perf_counter()
        report = arc.load([str(src)])
        load_s = time.perf_counter() - started
        del arc.encoder.encode  # the baseline below runs the plain method
        rows = arc.db.execute("select a.title, c.text from chunks c join articles a on a.id = c.article_id").fetchall()
        from archive.chunk import Chunker

        prefix = Chunker(arc.encoder).title_prefix
        texts = [prefix(t)[0] + text for t, text in rows]
        started = time.perf_counter()
        arc.encoder.encode(texts)
        encode_s = time.perf_counter() - started
    n = len(texts)
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "articles": report.added,
        "rejected": len(report.rejected),
        "chunks": n,
        "load_s": round(load_s, 1),
        "load_chunks_per_s": round(n / load_s, 1),
        "encode_s": round(encode_s, 1),
        "encode_chunks_per_s": round(n / encode_s, 1),
        "overhead": round(load_s / encode_s - 1, 3),
        "encode_in_load_s": round(inside[0], 1),
        "outside_encode_share": round((load_s - inside[0]) / inside[0], 3),
    }
    print(f"bulk load of {src.name}: {result['articles']:,} articles, {n:,} chunks, {result['rejected']} rejected")
    print(f"{'':24}{'seconds':>10}{'chunks/s':>10}")
    print(f"{'archive load':24}{load_s:10.1f}{n / load_s:10.1f}")
    print(f"{'encode() baseline':24}{encode_s:10.1f}{n / encode_s:10.1f}")
    print(f"pipeline overhead over pure encoding: {result['overhead']:+.1%}")
    print(
        f"inside the load: {inside[0]:.1f} s encoding, {load_s - inside[0]:.1f} s everything else "
        f"({result['outside_encode_share']:+.1%} over the load's own encoding)"
    )
    return result


def _time_encode(encoder) -> list[float]:
    """Shadow `encoder.encode` with a timed call; returns the running total (seconds) as a one-item list."""
    total = [0.0]
    plain = encoder.encode

    def encode(*args, **kwargs):
        t = time.perf_counter()
        try:
            return plain(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - t

    encoder.encode = encode
    return total


if __name__ == "__main__":
    main()
