"""One `archive.Archive` per archive database, opened lazily and called from worker threads under a lock.

The Archive's own SQLite connection (separate from Datasette's) is not thread-safe, so every library call
goes through `ArchiveHandle.run` (blocking, for Datasette's SQL threads) or `ArchiveHandle.call` (async, for
views). Nothing is cached here but the Archive itself: its `LiveIndex` reloads when the manifest changes.

Plugin settings (metadata.yml `plugins: news-archive:`, per database or for all):

    index_dir: indexes          # FAISS index folder; else $NEWS_ARCHIVE_INDEX_DIR, else indexes/ beside the db
    model: mpnet                # a model name (`archive models`) or a sentence-transformers folder;
                                # else $NEWS_ARCHIVE_MODEL, else the archive's
    encoder: mypackage.enc:Enc  # "module:callable" returning an encoder object (the `archive.embed.Encoder`
                                # interface), used instead of a model: a custom encoder class plugs in here
                                # (the tests serve archives built with tests/hash_encoder.py this way)
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from archive import Archive, ArchiveError, registry

PLUGIN = "news-archive"
SETTINGS = {"index_dir", "model", "encoder"}
ARCHIVE_TABLES = {"articles", "chunks"}
ENCODER_INTERFACE = ("encode", "encode_queries", "fingerprint", "dimensions", "name")  # what Archive calls
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
        "model": _model_folder(config.get("model") or os.environ.get("NEWS_ARCHIVE_MODEL") or None),
        "encoder": config.get("encoder") or None,
    }


def _model_folder(model):
    """A model name (`archive models`) as its folder; anything else as it is, checked by `validate_config`."""
    return registry.resolve(model) if isinstance(model, str) and model in registry.MODELS else model


def encoder_factory(spec: str) -> Callable[[], object]:
    """The callable named by an `encoder` setting ("module:callable"); raises ArchiveError saying what is wrong."""
    where = f"plugins: {PLUGIN}: encoder {spec!r}"
    module_name, sep, attr = (p.strip() for p in spec.partition(":")) if isinstance(spec, str) else ("", "", "")
    if not (sep and module_name and attr):
        raise ArchiveError(f'{where}: expected "module:callable", e.g. "mypackage.encoders:MyEncoder"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ArchiveError(f"{where}: cannot import {module_name!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ArchiveError(f"{where}: {module_name!r} has no callable {attr!r}")
    return factory


def make_encoder(spec: str):
    """Call the `encoder` setting's callable and check that what it returns can serve as an encoder."""
    encoder = encoder_factory(spec)()
    missing = [name for name in ENCODER_INTERFACE if not hasattr(encoder, name)]
    if missing:
        raise ArchiveError(f"plugins: {PLUGIN}: encoder {spec!r} returned an object without {', '.join(missing)}")
    return encoder


def validate_config(datasette) -> None:
    """Fail at startup on a mistyped setting rather than on the first query."""
    for name in datasette.databases:
        config = datasette.plugin_config(PLUGIN, database=name) or {}
        if not isinstance(config, dict):
            raise ArchiveError(f"plugins: {PLUGIN}: expected a mapping, got {config!r}")
        unknown = set(config) - SETTINGS
        if unknown:
            raise ArchiveError(f"plugins: {PLUGIN}: unknown setting(s) {', '.join(sorted(unknown))}")
        opts = settings(datasette, name)
        if opts["model"] and opts["encoder"]:
            raise ArchiveError(f"plugins: {PLUGIN}: set model or encoder, not both (an encoder replaces the model)")
        if opts["model"] and not Path(opts["model"]).is_dir():
            raise ArchiveError(f"plugins: {PLUGIN}: model {opts['model']!r} is not a folder")
        if opts["encoder"]:
            encoder_factory(opts["encoder"])  # imported now; called when the archive first opens


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
                encoder = make_encoder(opts["encoder"]) if opts["encoder"] else None
                handle = ArchiveHandle(Archive(path, opts["index_dir"], opts["model"], encoder=encoder), path)
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
