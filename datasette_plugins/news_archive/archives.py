"""One `archive.Archive` per archive database, opened lazily and called from worker threads under a lock.

The Archive's own SQLite connection (separate from Datasette's) is not thread-safe, so every library call
goes through `ArchiveHandle.run` (blocking, for Datasette's SQL threads) or `ArchiveHandle.call` (async, for
views). Nothing is cached here but the Archive itself: its `LiveIndex` reloads when the manifest changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path

from archive import Archive, ArchiveError

PLUGIN = "news-archive"
ARCHIVE_TABLES = {"articles", "chunks"}
log = logging.getLogger(__name__)


class ArchiveHandle:
    """An Archive plus the lock that serialises calls into it."""

    def __init__(self, archive: Archive, path: str):
        self.archive = archive
        self.path = path
        self.lock = threading.Lock()

    def run(self, fn, *args, **kwargs):
        """Call `fn(archive, *args, **kwargs)` in this thread, holding the lock."""
        with self.lock:
            return fn(self.archive, *args, **kwargs)

    async def call(self, fn, *args, **kwargs):
        """`run` in a worker thread, so the event loop never waits on the model or FAISS."""
        return await asyncio.to_thread(self.run, fn, *args, **kwargs)

    def warm(self) -> None:
        """`Archive.warm`: the query encoder and the index load while the server starts answering."""
        try:
            self.run(lambda arc: arc.warm())
        except Exception as e:  # the first real query reports it properly
            log.warning("news-archive: could not preload the model for %s: %s", self.path, e)

    def warm_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.warm, name=f"news-archive-warm-{Path(self.path).name}", daemon=True)
        thread.start()
        return thread


def settings(datasette, database: str) -> dict:
    """Plugin config for a database, with the environment (set by `archive serve`) as fallback."""
    config = datasette.plugin_config(PLUGIN, database=database) or {}
    return {
        "index_dir": config.get("index_dir") or os.environ.get("NEWS_ARCHIVE_INDEX_DIR") or None,
        "model": config.get("model") or os.environ.get("NEWS_ARCHIVE_MODEL") or None,
    }


def validate_config(datasette) -> None:
    """Fail at startup on a mistyped setting rather than on the first query."""
    for name in datasette.databases:
        config = datasette.plugin_config(PLUGIN, database=name) or {}
        if not isinstance(config, dict):
            raise ArchiveError(f"plugins: {PLUGIN}: expected a mapping, got {config!r}")
        unknown = set(config) - {"index_dir", "model"}
        if unknown:
            raise ArchiveError(f"plugins: {PLUGIN}: unknown setting(s) {', '.join(sorted(unknown))}")
        model = settings(datasette, name)["model"]
        if model and not Path(model).is_dir():
            raise ArchiveError(f"plugins: {PLUGIN}: model {model!r} is not a folder")


def has_archive_tables(conn: sqlite3.Connection) -> bool:
    rows = conn.execute("select name from sqlite_master where type = 'table' and name in ('articles', 'chunks')")
    return {r[0] for r in rows} == ARCHIVE_TABLES


def _is_archive_file(path: str) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return has_archive_tables(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return False


class Archives:
    """The archives of one Datasette instance, keyed by database name."""

    def __init__(self, datasette):
        self.datasette = datasette
        self._handles: dict[str, ArchiveHandle] = {}
        self._lock = threading.Lock()

    def get(self, database: str) -> ArchiveHandle | None:
        """The handle for an archive database; None for an unknown, in-memory or non-archive database."""
        db = self.datasette.databases.get(database)
        path = getattr(db, "path", None)
        if db is None or not path or getattr(db, "is_memory", False):
            return None
        with self._lock:
            handle = self._handles.get(database)
            if handle is None or handle.path != path:
                if not _is_archive_file(path):
                    return None
                opts = settings(self.datasette, database)
                handle = ArchiveHandle(Archive(path, opts["index_dir"], opts["model"]), path)
                self._handles[database] = handle
            return handle

    async def aget(self, database: str) -> ArchiveHandle | None:
        return await asyncio.to_thread(self.get, database)

    def names(self) -> list[str]:
        return [name for name in self.datasette.databases if self.get(name) is not None]


_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def archives(datasette) -> Archives:
    with _REGISTRY_LOCK:
        if datasette not in _REGISTRY:
            _REGISTRY[datasette] = Archives(datasette)
        return _REGISTRY[datasette]
