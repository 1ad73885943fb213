"""The CPU work a load does per article before the encoder: identity, hashes, chunks and signatures.

Everything here is a pure function of the article and the model's tokenizer, so it runs in worker processes
ahead of the encoder (`ingest.load` spreads it over cores) or, identically, inside a Ray Data task. Nothing here
touches the database except `Preparer.known`, a read-only look-up that lets a worker skip chunking an article
the archive already holds unchanged (the writer checks again, so a stale answer costs time, never data).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import dedupe, terms
from .chunk import Chunk, Chunker, splits_on_whitespace
from .models import Article, Rejection
from .sources import Raw, parse_raw
from .store import body_hash, content_hash, identity


@dataclass
class Prepared:
    """An article with everything the writer needs but its vectors (and, from a remote route, with them)."""

    article: Article
    identity: str
    content_hash: str
    body_hash: str
    chunks: list[Chunk] = field(default_factory=list)
    shingles: int = 0  # near-duplicate signature: distinct 5-shingles and the MinHash values
    minhash: np.ndarray | None = None
    terms: Counter = field(default_factory=Counter)
    known_unchanged: bool = False  # the archive held this exact article when it was prepared: nothing computed
    vectors: np.ndarray | None = None  # one per chunk, when embedded elsewhere (Ray, Parquet shards)

    @classmethod
    def of(cls, article: Article) -> Prepared:
        """Identity and hashes only (what `store.classify` needs); chunks and signatures come from a Preparer."""
        return cls(article, identity(article), content_hash(article), body_hash(article.body))


@dataclass(frozen=True)
class TokenizerSpec:
    """What a worker process needs to rebuild the chunker: the tokenizer file and the model's window."""

    tokenizer_json: str
    max_tokens: int

    def chunker(self) -> Chunker:
        return Chunker(FileTokenizer(self.tokenizer_json, self.max_tokens))


class FileTokenizer:
    """The model's fast tokenizer from its tokenizer.json alone: no torch, cheap to load in every worker."""

    def __init__(self, path: str, max_tokens: int):
        from tokenizers import Tokenizer

        self.max_tokens = max_tokens
        self.additive = splits_on_whitespace(json.loads(Path(path).read_text(encoding="utf-8")))
        self._tok = Tokenizer.from_file(path)
        self._tok.no_truncation()
        self._tok.no_padding()

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self._tok.encode(text, add_special_tokens=False).offsets)


class Preparer:
    """Prepares articles with one chunker, optionally skipping those the archive (read-only) holds unchanged."""

    def __init__(self, chunker: Chunker, db_path: str | None = None, field_map: dict[str, str] | None = None):
        self.chunker = chunker
        self.field_map = field_map  # applied to raw records, which are parsed here (in the worker)
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = None

    def known(self, ident: str, chash: str) -> bool:
        if not self._db_path or not Path(self._db_path).exists():
            return False
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self._db_path}?mode=ro", uri=True, timeout=30)
        row = self._conn.execute("select content_hash from articles where identity = ?", [ident]).fetchone()
        return row is not None and row[0] == chash

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __call__(self, article: Article) -> Prepared:
        p = Prepared.of(article)
        if self.known(p.identity, p.content_hash):
            p.known_unchanged = True
            return p
        p.chunks = self.chunker.chunk(article.title, article.body)
        hashed = dedupe.shingles(article.body)
        p.shingles, p.minhash = len(hashed), dedupe.signature(hashed)
        p.terms = terms.counts(article.title, article.body)
        return p


# ---- worker-process entry points (module-level so they pickle) ---------------------------------------------

_worker: Preparer | None = None


def init_worker(spec: TokenizerSpec, db_path: str | None, field_map: dict[str, str] | None = None) -> None:
    global _worker
    _worker = Preparer(spec.chunker(), db_path, field_map)


def prepare_batch(items: list) -> list[Prepared | Rejection]:
    """In a worker: parse raw records (the reader hands them over undecoded) and prepare each article."""
    assert _worker is not None, "init_worker first"
    return [prepare_item(_worker, item) for item in items]


def prepare_item(preparer: Preparer, item: Raw | Article | Rejection) -> Prepared | Rejection:
    if isinstance(item, Raw):
        item = parse_raw(item, preparer.field_map)
    return item if isinstance(item, Rejection) else preparer(item)
