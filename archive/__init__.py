"""A searchable news-article archive with semantic retrieval: SQLite store, FAISS index, Datasette plugin.

The names below load on first use, so a worker process that imports `archive.prepare` to chunk articles does
not pay for FAISS, sqlite-utils and the rest of the library.
"""

from __future__ import annotations

import importlib

from .models import ArchiveError, Article, Rejection, Result, SourceError

_LAZY = {
    "Archive": "api",
    "IndexCorrupt": "index",
    "IndexMissing": "index",
    "LoadReport": "ingest",
    "LoadStopped": "ingest",
    "ArticleNotFound": "store",
    "NotAnArchive": "store",
    "VerifyReport": "verify",
}

__all__ = ["ArchiveError", "Article", "Rejection", "Result", "SourceError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
