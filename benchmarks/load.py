"""Bulk-load throughput: `archive load` end to end on NewsArticles, against raw `encode()` of the same chunks.

    python -m benchmarks.load                         # the full NewsArticles.csv, the real model on this CPU
    python -m benchmarks.load --limit 300             # a quicker run
    python -m benchmarks.load --stand-in 3000 --copies 4   # the pipeline's capacity (see below)

With the real model, the baseline is the same Encoder embedding the very chunks the load produced, in the same
process and run, so `end_to_end` (load chunks/s over raw encode chunks/s) is the pipeline's cost. Inside the load,
the encoding thread's time is split into encoding, waiting for prepared articles, and waiting for the writer.

`--stand-in RATE` measures the pipeline's own capacity with a BENCHMARK-ONLY STAND-IN FOR THE MODEL: it returns
random unit vectors at RATE chunks/s (sleeping as a GPU would, so the CPU stays free for the pipeline; 0 means
at once). It is not a model and lives only here. If the load keeps the stand-in busy (input wait near zero), the
pipeline feeds an encoder of that speed. `--copies N` repeats the corpus N times with distinct URLs and
rotated sentences, so there is enough work to time.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from archive import Archive
from archive.embed import Encoder
from archive.sample import fetch_news_articles, head_csv

from . import record


class StandInEncoder(Encoder):
    """BENCHMARK-ONLY stand-in for the model: random unit vectors at a set rate. Not a model; not in the library."""

    def __init__(self, rate: float, dimensions: int = 384):
        super().__init__()
        self.rate, self._dims = rate, dimensions
        self._rng = np.random.default_rng(0)

    @property
    def fingerprint(self) -> str:
        return f"stand-in-{self._dims}"

    @property
    def dimensions(self) -> int:
        return self._dims

    def encode(self, texts, progress=None) -> np.ndarray:
        if self.rate:
            time.sleep(len(texts) / self.rate)  # releases the GIL, as a GPU kernel does
        vecs = self._rng.standard_normal((len(texts), self._dims)).astype(np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)

    def encode_queries(self, texts):
        return self.encode(texts)

    def prepare_queries(self) -> None:
        pass


def copies_csv(src: Path, n: int, out: Path) -> Path:
    """The corpus n times over: copy k has URL suffix #k, title suffix (k) and its sentences rotated by k."""
    with open(src, newline="", encoding="utf-8") as f, open(out, "w", newline="", encoding="utf-8") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, fieldnames=reader.fieldnames)
        writer.writeheader()
        rows = list(reader)
        for k in range(n):
            for r in rows:
                sentences = r["text"].split(". ")
                rot = k % max(1, len(sentences))
                body = ". ".join(sentences[rot:] + sentences[:rot])
                link = r["article_source_link"] + (f"#{k}" if k else "")
                writer.writerow(
                    r | {"text": body, "article_source_link": link, "title": r["title"] + (f" ({k})" if k else "")}
                )
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--copies", type=int, default=1, help="repeat the corpus N times (distinct articles)")
    parser.add_argument(
        "--stand-in", type=float, metavar="RATE", help="benchmark-only stand-in encoder at RATE chunks/s"
    )
    parser.add_argument("--workers", type=int, help="preparing processes (default: the load's own choice)")
    parser.add_argument("--batch-size", type=int, help="articles per committed batch")
    args = parser.parse_args(argv)
    src = fetch_news_articles()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.limit:
            src = head_csv(src, args.limit, tmp / "head.csv")
        if args.copies > 1:
            src = copies_csv(src, args.copies, tmp / "copies.csv")
        encoder = StandInEncoder(args.stand_in) if args.stand_in is not None else Encoder()
        arc = Archive(tmp / "a.db", tmp / "idx", create=True, encoder=encoder)
        encoder.encode(["warm up"])  # model load is not throughput
        started = time.perf_counter()
        report = arc.load([str(src)], workers=args.workers, batch_size=args.batch_size)
        load_s = time.perf_counter() - started
        n = arc.db["chunks"].count
        result = {
            "encoder": "stand-in" if args.stand_in is not None else encoder.name,
            "stand_in_rate": args.stand_in,
            "articles": report.added,
            "rejected": len(report.rejected),
            "chunks": n,
            "load_s": round(load_s, 2),
            "load_chunks_per_s": round(n / load_s, 1),
            "encode_in_load_s": round(report.encode_seconds, 2),
            "input_wait_s": round(report.input_wait_seconds, 2),
            "writer_wait_s": round(report.writer_wait_seconds, 2),
            "outside_encode_share": round((load_s - report.encode_seconds) / report.encode_seconds, 4),
        }
        if args.stand_in is None:
            result |= _raw_encode(arc, n, load_s)
    _print(src.name, result)
    print(f"record: {record.save('load', result, argv)}")
    return result


def _raw_encode(arc: Archive, n: int, load_s: float) -> dict:
    """The baseline: the same encoder on the very chunk texts the load embedded, in one call."""
    from archive.chunk import Chunker

    rows = arc.db.execute("select a.title, c.text from chunks c join articles a on a.id = c.article_id").fetchall()
    prefix = Chunker(arc.encoder).title_prefix
    texts = [prefix(t)[0] + text for t, text in rows]
    started = time.perf_counter()
    arc.encoder.encode(texts)
    encode_s = time.perf_counter() - started
    return {
        "raw_encode_s": round(encode_s, 2),
        "raw_encode_chunks_per_s": round(n / encode_s, 1),
        "end_to_end": round(encode_s / load_s, 4),  # load chunks/s over raw encode chunks/s
    }


def _print(name: str, r: dict) -> None:
    print(f"bulk load of {name} with {r['encoder']}: {r['articles']:,} articles, {r['chunks']:,} chunks")
    print(f"  load            {r['load_s']:8.1f} s  {r['load_chunks_per_s']:8.1f} chunks/s")
    if "raw_encode_s" in r:
        print(f"  raw encode()    {r['raw_encode_s']:8.1f} s  {r['raw_encode_chunks_per_s']:8.1f} chunks/s")
        print(f"  end to end: {r['end_to_end']:.1%} of raw encode()")
    print(
        f"  inside the load: {r['encode_in_load_s']:.1f} s encoding, {r['input_wait_s']:.1f} s waiting for input, "
        f"{r['writer_wait_s']:.1f} s waiting for the writer; outside encode: {r['outside_encode_share']:+.1%}"
    )


if __name__ == "__main__":
    main()
