"""Loading: read -> prepare (worker processes) -> encode (this thread) -> write (one writer thread).

The stages overlap so the encoder, the slow part on a CPU and the expensive part on a GPU, never waits:
- a feeder thread reads records and hands them in small tasks to worker processes, which clean, chunk and
  sign them (`prepare.py`), a bounded number of tasks ahead;
- this thread decides what is new or changed (`store.classify`) and encodes only the chunks that need it;
- the writer thread commits each batch in one transaction (articles, chunks, vectors, duplicate and keyword
  signatures) and adds its vectors to the FAISS index, saving it now and then.
A batch is committed whole or not at all, so a killed load keeps its finished batches and a rerun skips them.
Vectors embedded elsewhere (Ray Data, Parquet shards) enter at the writer through `write_prepared`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context

import numpy as np

from . import dedupe, store, stories, terms
from . import index as ix
from .chunk import Chunker
from .models import ArchiveError, Rejection
from .prepare import Prepared, Preparer, init_worker, prepare_batch, prepare_item
from .sources import read_raw

log = logging.getLogger(__name__)

SAVE_EVERY_S = 3.0  # a running server sees new articles within this (plus its own check) while a load runs
SAVE_SHARE = 0.02  # ... unless saving the index takes longer: then at most this share of the load's time
TASK_SIZE = 16  # articles per worker task: big enough to amortise pickling, small enough to keep order cheap
SMALL_INPUT = 1 << 20  # below this many bytes of input, worker processes cost more than they save


class LoadStopped(ArchiveError):
    """`on_error="stop"` met a bad record; everything before it was committed."""


@dataclass
class LoadReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    chunks_embedded: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0  # time this load spent inside the encoder (the rest is the pipeline's)
    input_wait_seconds: float = 0.0  # the encoder's thread waiting for prepared articles (workers too slow)
    writer_wait_seconds: float = 0.0  # ... waiting for the writer to take a batch (writes too slow)
    skipped: dict[str, int] = field(default_factory=dict)  # records passed over on purpose (a WARC's non-HTML)

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [r.to_dict() for r in self.rejected],
            "chunks_embedded": self.chunks_embedded,
            "seconds": round(self.seconds, 2),
            "encode_seconds": round(self.encode_seconds, 2),
            "input_wait_seconds": round(self.input_wait_seconds, 2),
            "writer_wait_seconds": round(self.writer_wait_seconds, 2),
            "skipped": self.skipped,
        }


@dataclass
class LoadOptions:
    field_map: dict[str, str] | None = None
    on_error: str = "skip"
    batch_size: int | None = None  # articles per committed batch; None: 64 on a CPU, 512 on a GPU
    encoding: str = "utf-8"
    stdin: object = None
    progress: Callable[[int, int], None] | None = None
    workers: int | None = None  # preparing processes; None: one per core for inputs over SMALL_INPUT, else 0
    expected: int | None = None  # articles the input holds, when known: a server shows "N of expected loaded"

    def __post_init__(self):
        if self.on_error not in ("skip", "stop"):
            raise ArchiveError("on_error must be 'skip' or 'stop'")


def load(arc, paths: Iterable[str], opts: LoadOptions) -> LoadReport:
    """Read, prepare, embed, store and index articles; returns what happened to each."""
    paths = list(paths)
    encoder = arc.encoder
    report, started = LoadReport(), time.monotonic()
    records = read_raw(paths, opts.field_map, encoding=opts.encoding, stdin=opts.stdin)
    batch_size = opts.batch_size or _batch_size(encoder)
    with ix.writer_lock(arc.index_dir):
        writer = Writer(arc, report, opts.progress, expected=opts.expected)
        try:
            feeder = Feeder(records, encoder, arc.db_path, _workers(opts.workers, paths), opts.field_map)
            with feeder as prepared:
                for batch in _timed_batches(prepared, batch_size, report):
                    writer.put(*_encode(arc, writer, _accept(batch, report, opts.on_error), report))
                    if report.rejected and opts.on_error == "stop":
                        break
        finally:
            writer.close()
    report.skipped = dict(records.skipped)
    if report.chunks_embedded:
        prepare_queries(encoder)  # torch is loaded now, so the export costs only its own seconds
    report.seconds = time.monotonic() - started
    if report.rejected and opts.on_error == "stop":
        raise LoadStopped(f"stopped at {report.rejected[-1]} (everything before it was loaded)")
    return report


def write_prepared(arc, batches: Iterable[list[Prepared]], progress=None) -> LoadReport:
    """The writer alone, for articles prepared and embedded elsewhere (each Prepared carries its vectors)."""
    report, started = LoadReport(), time.monotonic()
    with ix.writer_lock(arc.index_dir):
        writer = Writer(arc, report, progress, fingerprint=arc.meta.get("model_fingerprint"))
        try:
            for batch in batches:
                writer.put(*_encode(arc, writer, batch, report))
        finally:
            writer.close()
    report.seconds = time.monotonic() - started
    return report


def prepare_queries(encoder) -> None:
    """Export a torch model's fp32 ONNX query encoder once per machine, so a server starts without torch."""
    try:
        encoder.prepare_queries()
    except Exception as e:  # only an optimisation: queries then run on torch
        log.warning("could not export the ONNX query encoder (%s); queries will run on torch", e)


def _workers(asked: int | None, paths: list[str]) -> int:
    if asked is not None:
        return max(0, asked)
    size = sum(os.path.getsize(p) if p != "-" and os.path.isfile(p) else SMALL_INPUT for p in paths)
    return (os.cpu_count() or 1) if size >= SMALL_INPUT else 0


def _batch_size(encoder) -> int:
    """Articles per committed batch: on a GPU, enough chunks (~2,000) for the encoder's large batches."""
    return 512 if getattr(encoder, "device", "cpu") == "cuda" else 64


def _accept(batch: list, report: LoadReport, on_error: str) -> list[Prepared]:
    """The batch's articles up to (with on_error=stop) its first rejection; rejections are reported."""
    out = []
    for item in batch:
        if isinstance(item, Rejection):
            report.rejected.append(item)
            if on_error == "stop":
                break
        else:
            out.append(item)
    return out


def _encode(arc, writer: Writer, prepared: list[Prepared], report: LoadReport):
    """Classify the batch against the archive and embed the chunks it lacks; returns the writer's work."""
    if writer.pending_any(p.identity for p in prepared):
        writer.drain()  # an article repeated across batches: classify it against its committed copy
    plans = store.classify(writer.reader, prepared)
    for p in plans:
        setattr(report, p.status, getattr(report, p.status) + 1)
    todo = [p for p in plans if p.status != "unchanged"]
    for p in todo:
        if p.prepared.minhash is None:  # skipped as already held, but it changed since (or came twice)
            p.prepared = Preparer(arc.chunker)(p.article)
        p.set_chunks(p.prepared.chunks, store.existing_chunks(writer.reader, p.article_id))
    texts = [t for p in todo for t in p.texts_to_embed()]
    t = time.monotonic()
    vectors = _vectors(arc, todo, texts)
    report.encode_seconds += time.monotonic() - t
    report.chunks_embedded += len(texts)
    return todo, vectors, len(prepared)


def _vectors(arc, plans: list[store.Planned], texts: list[str]) -> np.ndarray:
    if plans and all(p.prepared.vectors is not None for p in plans):  # embedded elsewhere: take the new ones
        return np.vstack([p.new_vectors() for p in plans] or [np.zeros((0, arc.encoder.dimensions))])
    return arc.encoder.encode(texts) if texts else np.zeros((0, 0), np.float32)


class Writer:
    """The one writer: a thread that commits batches and keeps the FAISS index level with them."""

    def __init__(
        self,
        arc,
        report: LoadReport,
        progress=None,
        *,
        fingerprint: str | None = None,
        index=True,
        expected=None,
        assign_stories=True,
    ):
        """`fingerprint` None: record the archive's encoder as the model of its vectors (a load); else the
        vectors come from elsewhere and the caller checked them. `index` False: leave the index to the caller.
        `assign_stories` False: the caller rebuilds stories afterwards (a model switch)."""
        self.arc, self.report, self.progress = arc, report, progress
        self.assign_stories = assign_stories
        store.ensure_derived_tables(arc.db)
        if fingerprint is None:
            arc.record_model()
        self.index = arc.maintenance.writable_index() if index else None
        self._state = {"expected": expected, "pid": os.getpid(), "started": store.now()}
        store.set_meta(arc.db, load_state=self._state_json())
        self.reader = store.open_reader(arc.db_path)  # classification reads commits, never the writer's batch
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._pending: dict[str, int] = {}
        self._term_ids: dict[str, int] = {}  # the terms table's ids, met by this load (they never change)
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._next_save = time.monotonic() + SAVE_EVERY_S
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()

    def pending_any(self, identities: Iterable[str]) -> bool:
        with self._lock:
            return any(i in self._pending for i in identities)

    def put(self, plans: list[store.Planned], vectors: np.ndarray, articles: int | None = None) -> None:
        """Queue a batch for writing (`articles`: how many the batch had, unchanged ones included)."""
        self._raise()
        with self._lock:
            for p in plans:
                self._pending[p.identity] = self._pending.get(p.identity, 0) + 1
        t = time.monotonic()
        self._queue.put((plans, vectors, len(plans) if articles is None else articles))
        self.report.writer_wait_seconds += time.monotonic() - t

    def drain(self) -> None:
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Finish every queued batch, then save the index (skipped after a failure: the next writer syncs)."""
        self._queue.put(None)
        self._thread.join()
        self.reader.conn.close()
        store.clear_meta(self.arc.db, "load_state")
        self._raise()
        if self.index is not None:
            self.arc.maintenance.save(self.index)

    def _derive(self, db, plans: list[store.Planned]) -> None:
        """Inside the batch's transaction: near-duplicate groups, keyword signatures and stories of its articles."""
        dedupe.write(db, [(p.article_id, p.prepared.body_hash, p.prepared.shingles, p.prepared.minhash) for p in plans])
        terms.write(db, {p.article_id: p.prepared.terms for p in plans}, self._term_ids)
        if self.assign_stories:
            stories.assign(db, [p.article_id for p in plans])  # after the two above: it reads both

    def _state_json(self) -> str:
        """What a server shows while this load runs (`Archive.loading`); `updated` tells a live load from a dead one."""
        return json.dumps(self._state | {"updated": time.time()})

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._write(*item)
            except BaseException as e:  # surfaced to the loading thread at its next put/drain/close
                self._error = e
            finally:
                self._release(item[0])
                self._queue.task_done()
        self._queue.task_done()

    def _release(self, plans: list[store.Planned]) -> None:
        with self._lock:
            for p in plans:
                self._pending[p.identity] -= 1
                if not self._pending[p.identity]:
                    del self._pending[p.identity]

    def _write(self, plans: list[store.Planned], vectors: np.ndarray, articles: int) -> None:
        db = self.arc.db
        applied = store.apply(db, plans, vectors, derive=self._derive, meta={"load_state": self._state_json()})
        if self.progress:
            self.progress(articles, self.report.chunks_embedded)
        if self.index is None:
            return
        self.index.remove(applied.removed_ids)
        if applied.added_ids:
            self.index.add(np.array(applied.added_ids), np.vstack(applied.added_vectors))
        if time.monotonic() >= self._next_save:
            took = time.monotonic()
            self.arc.maintenance.save(self.index)  # a whole-file rewrite: ~0.1 s at 15k vectors, more at 1M
            took = time.monotonic() - took
            self._next_save = time.monotonic() + max(SAVE_EVERY_S, took / SAVE_SHARE)


class Feeder:
    """Prepared articles (and rejections) in input order, made by worker processes a bounded way ahead.

    With `workers=0` the feeder thread prepares them itself, which still overlaps with encoding."""

    def __init__(self, records: Iterator, encoder, db_path: str | None, workers: int, field_map=None):
        self.records, self.db_path, self.field_map = records, db_path, field_map
        spec = encoder.tokenizer_spec()
        self.workers = workers if spec is not None else 0
        self.spec, self.encoder = spec, encoder
        self._queue: queue.Queue = queue.Queue(maxsize=max(4, 4 * self.workers))
        self._stop = threading.Event()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Iterator[Prepared | Rejection]:
        if self.workers:
            ctx = get_context("spawn")  # fork after torch (or CUDA) is loaded is not safe
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=ctx,
                initializer=init_worker,
                initargs=(self.spec, self.db_path, self.field_map),
            )
        self._thread = threading.Thread(target=self._feed, name="archive-feeder", daemon=True)
        self._thread.start()
        return self._results()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a feeder waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _feed(self) -> None:
        chunker = self.spec.chunker() if self.spec else Chunker(self.encoder)
        local = None if self._pool else Preparer(chunker, self.db_path, self.field_map)
        try:
            while not self._stop.is_set() and (task := list(islice(self.records, TASK_SIZE))):
                if self._pool is not None:
                    self._queue.put(self._pool.submit(prepare_batch, task))
                else:
                    self._queue.put(_done([prepare_item(local, item) for item in task]))
        except BaseException as e:  # a reader bug: report it in order, where the loading thread will raise it
            self._queue.put(_failed(e))
        finally:
            if local is not None:
                local.close()  # a read-only connection left open would keep SQLite from checkpointing at close
        self._queue.put(None)

    def _results(self) -> Iterator[Prepared | Rejection]:
        while (future := self._queue.get()) is not None:
            yield from future.result()


def _done(value) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def _failed(error: BaseException) -> Future:
    f: Future = Future()
    f.set_exception(error)
    return f


def _timed_batches(items: Iterable, size: int, report: LoadReport) -> Iterator[list]:
    """Lists of `size` items, counting the time spent waiting for them in `report.input_wait_seconds`."""
    it = iter(items)
    while True:
        t = time.monotonic()
        batch = list(islice(it, size))
        report.input_wait_seconds += time.monotonic() - t
        if not batch:
            return
        yield batch


def reembed_articles(arc, ids: list[int], progress=None, *, assign_stories: bool = True) -> None:
    """Chunk and embed these stored articles again with the archive's encoder, replacing all their chunks.

    The index is left alone (the caller rebuilds it): a half-switched index must never be published. A model
    switch passes `assign_stories=False`: mid-switch, the stored vectors are of two models (even two sizes), so
    stories are rebuilt once at its end instead."""
    reader = store.open_reader(arc.db_path)
    records = (store.stored_article(reader, i) for i in ids)
    report = LoadReport()
    writer = Writer(arc, report, progress, fingerprint="", index=False, assign_stories=assign_stories)
    try:
        workers = (os.cpu_count() or 1) if len(ids) > 256 else 0  # as a load: processes only for a big job
        with Feeder(records, arc.encoder, None, workers) as prepared:
            for batch in _timed_batches(prepared, _batch_size(arc.encoder), report):
                plans = store.classify(reader, batch)
                for p in plans:  # same text, new model: every chunk is embedded anew
                    p.status = "updated"
                    p.set_chunks(p.prepared.chunks, [])
                writer.put(plans, arc.encoder.encode([t for p in plans for t in p.texts_to_embed()]))
    finally:
        writer.close()
        reader.conn.close()
