"""One `archive.Archive` per archive database, opened lazily, its queries served on several threads at once.

Each worker thread queries through its own reader (`Archive.reader`: its own read-only SQLite connection, the
shared encoder and index), so concurrent requests use every core: FAISS searches, ONNX runs and SQLite reads
release the GIL, and readers take no lock. A `Gate` gives calls their turns, a few at once, and refuses one (503
with Retry-After) only when its wait would pass the time budget. Every request checks cheaply (a `stat` of the
database, a read of archive_meta) that the file and its model are the ones opened, and reopens the Archive
when another process swapped the database or switched its model; the Archive's `LiveIndex` reloads on its own
when the index manifest changes.

Plugin settings (metadata.yml `plugins: news-archive:`, per database or for all):

    index_dir: indexes          # FAISS index folder; else $NEWS_ARCHIVE_INDEX_DIR, else indexes/ beside the db
    model: mpnet                # a model name (`archive models`) or a sentence-transformers folder;
                                # else $NEWS_ARCHIVE_MODEL, else the archive's
    encoder: mypackage.enc:Enc  # "module:callable" returning an encoder object (the `archive.embed.Encoder`
                                # interface), used instead of a model: a custom encoder class plugs in here
                                # (the tests serve archives built with tests/hash_encoder.py this way)
    time_budget: 10             # seconds a request may wait for its turn (else $NEWS_ARCHIVE_TIME_BUDGET,
                                # else 10); a longer queue is answered 503 with Retry-After
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from archive import Archive, ArchiveError, registry

PLUGIN = "news-archive"
SETTINGS = {"index_dir", "model", "encoder", "time_budget"}
ARCHIVE_TABLES = {"articles", "chunks"}
ENCODER_INTERFACE = ("encode", "encode_queries", "fingerprint", "dimensions", "name")  # what Archive calls
DEFAULT_BUDGET_S = 10.0
SLOTS = max(2, os.cpu_count() or 2)  # calls at once: every core busy while one call holds the GIL
WORKERS = 32  # threads that run (or wait for) calls; past them a call waits in the executor, counted as waiting
IDENTITY_KEYS = ("archive_id", "model_fingerprint", "dimensions")
log = logging.getLogger(__name__)


class Busy(ArchiveError):
    """A call's wait for its turn would pass (or passed) the time budget: answered 503 with Retry-After."""

    def __init__(self, wait_s: float):
        self.retry_after = max(1, math.ceil(wait_s))
        super().__init__(f"the archive is busy (about {wait_s:.1f} s of queries ahead); try again shortly")


@dataclass
class Ticket:
    """A call's place in the queue, from `Gate.admit` to its turn."""

    deadline: float
    started: bool = False
    dropped: bool = False


class Gate:
    """Turns for one archive's library calls: `slots` run at once, the others wait in order. A call is refused
    (Busy) only when its wait would pass the budget: on arrival, estimated from the calls ahead and the recent
    mean call time; or while waiting, when its deadline passes. A queue that fits the budget is served."""

    def __init__(self, budget_s: float, slots: int = SLOTS):
        self.budget_s, self.slots = budget_s, slots
        self._cond = threading.Condition()
        self._running = self._waiting = 0
        self._mean_s = 0.05  # moving average of a call's duration

    def expected_wait(self) -> float:
        """Seconds a call arriving now would wait: the calls ahead of it, `slots` at a time."""
        ahead = self._running + self._waiting - self.slots + 1
        return math.ceil(ahead / self.slots) * self._mean_s if ahead > 0 else 0.0

    def admit(self) -> Ticket:
        with self._cond:
            wait = self.expected_wait()
            if wait > self.budget_s:
                raise Busy(wait)
            self._waiting += 1
            return Ticket(time.monotonic() + self.budget_s)

    def drop(self, ticket: Ticket) -> None:
        """The caller went away before its turn (a closed connection): give up its place. A job already waiting
        in `turn` wakes, leaves without running, and does not count itself out a second time."""
        with self._cond:
            if not ticket.started and not ticket.dropped:
                ticket.dropped = True
                self._waiting -= 1
                self._cond.notify_all()

    @contextmanager
    def turn(self, ticket: Ticket):
        """Wait for a free slot (Busy past the ticket's deadline), run the block, free the slot."""
        with self._cond:
            try:
                while not ticket.dropped and self._running >= self.slots:
                    left = ticket.deadline - time.monotonic()
                    if left <= 0:
                        raise Busy(self.expected_wait() or self._mean_s)
                    self._cond.wait(left)
            finally:
                if not ticket.dropped:  # (a dropped ticket was counted out by `drop`)
                    ticket.started = True
                    self._waiting -= 1
            if ticket.dropped:
                raise Busy(0)
            self._running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)
                self._cond.notify()


class ArchiveHandle:
    """An Archive, a reader of it per thread, and the gate that gives their calls turns."""

    def __init__(self, archive: Archive, path: str, gate: Gate, executor: ThreadPoolExecutor):
        self.archive, self.path, self.gate, self.executor = archive, path, gate, executor
        self._local = threading.local()
        self._lock = threading.Lock()
        self.identity = self.identify()

    def reader(self) -> Archive:
        """This thread's reader of the archive (its own SQLite connection; encoder and index shared)."""
        arc = getattr(self._local, "archive", None)
        if arc is None:
            with self._lock:  # the shared encoder is made once
                arc = self._local.archive = self.archive.reader()
        return arc

    def identify(self) -> tuple:
        """What must not change under a running server: the database file, its archive_id and its model."""
        st = os.stat(self.path)
        sql = f"select key, value from archive_meta where key in ({','.join('?' * len(IDENTITY_KEYS))})"
        meta = dict(self.reader().db.execute(sql, IDENTITY_KEYS))
        return (st.st_dev, st.st_ino, *(meta.get(k) for k in IDENTITY_KEYS))

    def current(self) -> bool:
        """Is the database still the one opened (same file, id and model)? One stat and one small read."""
        try:
            return self.identify() == self.identity
        except (OSError, sqlite3.Error):
            return False

    def run(self, fn, *args, **kwargs):
        """Call `fn(reader, *args, **kwargs)` in this thread in its turn (Busy if that is past the budget)."""
        return self._run(self.gate.admit(), fn, *args, **kwargs)

    def _run(self, ticket: Ticket, fn, *args, **kwargs):
        with self.gate.turn(ticket):
            return fn(self.reader(), *args, **kwargs)

    async def call(self, fn, *args, **kwargs):
        """`run` on a worker thread, so the event loop never waits on the model, FAISS or SQLite."""
        ticket = self.gate.admit()
        job = functools.partial(self._run, ticket, fn, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, job)
        except asyncio.CancelledError:
            self.gate.drop(ticket)
            raise

    async def glance(self, fn):
        """`fn(reader)` on a thread without waiting for a turn: for a read of a row or two. Not on `executor`,
        whose threads may all be waiting for turns."""
        return await asyncio.to_thread(lambda: fn(self.reader()))

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
        "time_budget": time_budget(config.get("time_budget", os.environ.get("NEWS_ARCHIVE_TIME_BUDGET"))),
    }


def time_budget(value) -> float:
    """The `time_budget` setting in seconds (a positive number; text from the environment); ArchiveError if not."""
    if value in (None, ""):
        return DEFAULT_BUDGET_S
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 < seconds <= 3600:  # (NaN fails too)
        raise ArchiveError(f"plugins: {PLUGIN}: time_budget must be a number of seconds from 0 to 3600, not {value!r}")
    return seconds


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
    """The archives of one Datasette instance, keyed by database name, and the threads that serve their calls."""

    def __init__(self, datasette):
        self.datasette = datasette
        self._handles: dict[str, ArchiveHandle] = {}
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="news-archive")

    def get(self, database: str) -> ArchiveHandle | None:
        """The handle for an archive database; None for an unknown, in-memory or non-archive database. A handle
        whose database was swapped, or whose model was switched, since it opened is replaced by a new one."""
        db = self.datasette.databases.get(database)
        path = getattr(db, "path", None)
        if db is None or not path or getattr(db, "is_memory", False):
            return None
        handle = self._handles.get(database)
        if handle is not None and handle.path == path and handle.current():
            return handle
        with self._lock:
            handle = self._handles.get(database)
            if handle is None or handle.path != path or not handle.current():
                handle = self._open(database, path, handle)
            return handle

    def _open(self, database: str, path: str, old: ArchiveHandle | None) -> ArchiveHandle | None:
        if not _is_archive_file(path):
            self._handles.pop(database, None)
            return None
        opts = settings(self.datasette, database)
        encoder = make_encoder(opts["encoder"]) if opts["encoder"] else None
        archive = Archive(path, opts["index_dir"], opts["model"], encoder=encoder)
        gate = old.gate if old is not None else Gate(opts["time_budget"])  # the queue outlives a reopen
        handle = self._handles[database] = ArchiveHandle(archive, path, gate, self.executor)
        if old is not None:
            log.info("news-archive: %s changed under the server (swapped, or a new model); reopened it", path)
            handle.warm_in_background()
        return handle

    async def aget(self, database: str) -> ArchiveHandle | None:
        """`get` off the event loop (it may open the archive), not queued behind calls waiting for turns."""
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
