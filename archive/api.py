"""`Archive`: the one Python API that the CLI and the Datasette plugin both use.

from archive import Archive
arc = Archive("archive.db", "indexes")
report = arc.load(["articles.csv"])
for r in arc.search("flooding in Queensland", k=5):
    print(r.score, r.title)
arc.related("http://www.bbc.co.uk/news/world-australia-39427466")

The facade holds the archive's state (database, index directory, encoder) and delegates each job to its
module: loading to `ingest`, index upkeep and model switches to `maintenance`, checks to `verify`, queries
to `search`.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from . import index as ix
from . import search as srch
from . import store
from .chunk import Chunker
from .embed import DEFAULT_MODEL_NAME, Encoder
from .maintenance import Maintenance
from .models import ArchiveError, Result
from .rerank import POOL as RERANK_POOL

if TYPE_CHECKING:  # loading and checking are imported when used: a query (a server, a one-off search) needs neither
    from .ingest import LoadReport
    from .verify import VerifyReport

LOAD_STALE_S = 120  # a first batch on a cold CPU (torch import, model load, 64 articles) takes well under this


class Archive:
    """A news archive: an SQLite database (the truth) and a FAISS index beside it (a cache).

    `model` is a local sentence-transformers folder; None uses the model the archive was built with, or
    the bundled all-MiniLM-L6-v2 for a new archive. `device` (auto, cpu, cuda) is where loads encode;
    queries stay on the CPU. `encoder` replaces the model altogether (tests use a small deterministic one).
    """

    def __init__(
        self,
        db_path: str | os.PathLike = "archive.db",
        index_dir: str | os.PathLike | None = None,
        model: str | os.PathLike | None = None,
        *,
        create: bool = False,
        backend: str | None = None,
        device: str = "cpu",
        encoder: Encoder | None = None,
    ):
        self.db_path = str(db_path)
        if not create and self.db_path != ":memory:" and not Path(self.db_path).exists():
            raise ArchiveError(f"{self.db_path}: no such archive; load articles first with `archive load`")
        self.db = store.open_db(self.db_path, create=create)
        self.index_dir = Path(index_dir) if index_dir else ix.default_index_dir(self.db_path, self.archive_id)
        self._model_arg = model
        self._backend_arg = backend  # torch | onnx; None: the archive's recorded backend, torch for a new one
        self._device = device
        self._encoder = self._injected = encoder
        self._checked = False
        self.live = ix.LiveIndex(self.index_dir, self.archive_id)
        self.maintenance = Maintenance(self)

    # ---- model ------------------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, str]:
        return store.get_meta(self.db)

    @property
    def archive_id(self) -> str | None:
        """The database's identity (None for an archive from before ids, until its next write stamps one)."""
        return self.meta.get("archive_id")

    @property
    def encoder(self) -> Encoder:
        """The encoder, checked against the model the archive's vectors were made with."""
        if self._encoder is None:
            self._encoder = self.new_encoder()
        if not self._checked:
            self._check_model(self._encoder)
            self._checked = True
        return self._encoder

    @cached_property
    def chunker(self) -> Chunker:
        return Chunker(self.encoder)

    def new_encoder(self) -> Encoder:
        """An encoder for the model asked for (or recorded), unchecked: a model switch starts from one."""
        model = self._model_arg or self._recorded_model_path()
        return Encoder(model, backend=self._backend_arg or self.meta.get("backend") or "torch", device=self._device)

    def _recorded_model_path(self) -> str | None:
        """The model folder the archive was built with; None (the bundled default) for a new archive."""
        meta = self.meta
        path = meta.get("model_path")
        if not path or Path(path).exists() or meta.get("model") == DEFAULT_MODEL_NAME:
            return path if path and Path(path).exists() else None
        raise ArchiveError(f"this archive was embedded with the model at {path}, which is gone; pass --model PATH")

    def _check_model(self, encoder: Encoder) -> None:
        meta = self.meta
        recorded = meta.get("model_fingerprint")
        same = encoder.accepts(recorded) if hasattr(encoder, "accepts") else recorded == encoder.fingerprint
        if recorded is not None and not same:
            raise ArchiveError(
                f"this archive was embedded with {meta['model']} ({meta['dimensions']} dims, "
                f"{meta.get('backend', 'torch')} backend); {encoder.name} ({encoder.backend} backend) "
                f"would mix incompatible vectors. To switch every vector to it, run "
                f"`archive index --rebuild --reembed --model {encoder.path} --backend {encoder.backend}`"
            )

    def record_model(self) -> None:
        """Record the encoder as the maker of the archive's vectors (and the devices it has run on)."""
        encoder = self._encoder or self.encoder
        meta = self.meta
        devices = {d for d in meta.get("devices", "").split(",") if d} | {encoder.precision_label}
        store.set_meta(self.db, model_path=str(encoder.path), devices=",".join(sorted(devices)), **encoder.describe())

    # ---- writing ----------------------------------------------------------------------------------------

    def load(
        self,
        paths: Iterable[str],
        *,
        field_map: dict[str, str] | None = None,
        on_error: str = "skip",
        batch_size: int | None = None,
        encoding: str = "utf-8",
        stdin=None,
        progress: Callable[[int, int], None] | None = None,
        workers: int | None = None,
        expected: int | None = None,
        engine: str = "local",
        ray=None,
    ) -> LoadReport:
        """Read, clean, chunk, embed, store and index articles; returns what happened to each.

        Commits every `batch_size` articles, so an interrupted load keeps its batches and a rerun skips them.
        `progress(articles_done, chunks_embedded)` is called after each batch. `workers`: processes that
        prepare articles ahead of the encoder (None: one per core for big inputs, none for small ones).
        `engine="ray"` runs the same stages on Ray Data (`ray`: a `distributed.RayOptions`: cluster address,
        Parquet shards out, actors); the writer stays here.
        """
        from . import ingest

        self.refuse_during_switch()
        opts = ingest.LoadOptions(field_map, on_error, batch_size, encoding, stdin, progress, workers, expected)
        if engine == "ray":
            from .distributed import RayOptions, load_ray

            return load_ray(self, paths, opts, ray or RayOptions())
        if engine != "local":
            raise ArchiveError(f"engine must be local or ray, not {engine!r}")
        return ingest.load(self, paths, opts)

    def load_shards(self, directory: str | os.PathLike, progress: Callable[[int, int], None] | None = None):
        """Ingest Parquet shards (from `load(engine="ray", ...)` with parquet_out, or anything that writes
        them) through the one writer; re-ingesting a shard changes nothing."""
        from .shards import load_shards

        return load_shards(self, directory, progress)

    def refuse_during_switch(self) -> None:
        if "reembed_in_progress" in self.meta:
            raise ArchiveError(
                "a model switch (archive index --rebuild --reembed) was interrupted; run it again before loading"
            )

    def delete(
        self,
        ids: Iterable[int] = (),
        *,
        urls: Iterable[str] = (),
        external_ids: Iterable[str] = (),
        dry_run: bool = False,
    ) -> list[dict]:
        """Delete articles, each named explicitly by id, URL or external id (one that names several articles
        is refused), with every earlier version, their chunks and vectors. Returns the deleted articles (id,
        url, external_id, title, outlet, published, chunks, versions); `dry_run` deletes nothing."""
        try:
            ids = [int(i) for i in ids]
        except (TypeError, ValueError):
            raise ArchiveError("article ids are whole numbers (name an article by URL with urls=...)") from None
        return self.maintenance.delete(ids, list(urls), list(external_ids), dry_run=dry_run)

    def rebuild_index(
        self, *, reembed: bool = False, progress: Callable[[int], None] | None = None, index_type: str = "auto"
    ) -> ix.Manifest:
        """Rebuild the index from stored vectors; with `reembed`, first re-chunk and re-embed every article
        with this Archive's model (the way to switch models). `index_type`: see `index.KINDS`."""
        if reembed:  # the model asked for (an injected encoder is that model)
            self._encoder, self._checked = self._injected or self.new_encoder(), True
            self.__dict__.pop("chunker", None)
        return self.maintenance.rebuild(reembed=reembed, progress=progress, index_type=index_type)

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Compare database and index; with `repair`, make the index agree with the database."""
        from . import verify

        return verify.verify(self, repair=repair)

    # ---- queries ----------------------------------------------------------------------------------------

    def article(self, ref: str | int) -> dict:
        """An article row by id, URL or external id (raises ArticleNotFound)."""
        return store.find_article(self.db, ref)

    def _index(self) -> ix.ChunkIndex:
        return self.live.current()[0]

    def warm(self) -> None:
        """Load what the first query needs (the query encoder, made if missing; the index), so it does not wait.

        A torch archive without its cached fp32 ONNX query encoder gets one made here (torch, once per
        machine), so later starts answer without importing torch."""
        self.encoder.prepare_queries()
        self.encoder.encode_queries(["warm up"])
        self._index()

    def reader(self) -> Archive:
        """This archive for another thread's queries: its own read-only SQLite connection (a connection must
        not serve two threads at once) and the same encoder and loaded index, which serve threads at once
        (FAISS searches and ONNX runs release the GIL). A server keeps one per worker thread; readers never write."""
        if self._encoder is None:
            try:
                _ = self.encoder  # made once here, shared by every reader
            except ArchiveError:  # (keyword search needs no model; a semantic query reports this)
                pass
        other = copy.copy(self)
        other.db = store.open_db(self.db_path, create=False)
        other.db.execute("pragma query_only = 1")
        return other

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        outlet: str | None = None,
        since: str | None = None,
        until: str | None = None,
        mode: str = "hybrid",
        rerank: bool = False,
    ) -> list[Result]:
        """Articles ranked for `query` (mode: semantic, keyword or hybrid), best chunk as the passage.

        `rerank` re-orders the top 20 with the cross-encoder (archive/rerank.py: seconds a query on a CPU)."""
        filters = srch.Filters(outlet, since, until)
        pool = max(k, RERANK_POOL) if rerank else k
        if mode == "keyword":  # full-text only: no model, no index
            results = srch.search(self.db, None, None, query, k=pool, filters=filters, mode=mode)
        else:
            results = srch.search(self.db, self._index(), self.encoder, query, k=pool, filters=filters, mode=mode)
        return self.reranker.rerank(query, results, RERANK_POOL)[:k] if rerank else results

    @cached_property
    def reranker(self):
        """The cross-encoder (rerank.Reranker), loaded at first use; ArchiveError naming the install if missing."""
        from .rerank import Reranker

        return Reranker()

    def related(
        self,
        ref: str | int,
        *,
        k: int = 10,
        outlet: str | None = None,
        since: str | None = None,
        until: str | None = None,
        mode: str = "hybrid",
        window: int | None = None,
        other_outlets: bool = False,
        weights: srch.RelatedWeights = srch.DEFAULT_WEIGHTS,
    ) -> list[Result]:
        """Other coverage of the article's story (never itself nor a near duplicate of it), one row per
        near-duplicate group; `window` days around its date; `other_outlets` ranks other outlets first;
        `weights` are the scoring's measured settings (`search.RelatedWeights`, for experiments)."""
        article = self.article(ref)
        index = self._index()
        filters = srch.Filters(outlet, since, until)
        options = {"mode": mode, "window": window, "other_outlets": other_outlets, "weights": weights}
        return srch.related(self.db, index, article, k=k, filters=filters, dim=index.dim, **options)

    def loading(self) -> dict | None:
        """{"loaded": articles, "expected": count or None} while a load is running, else None. A load that
        has committed nothing for LOAD_STALE_S seconds is taken for dead (killed loads leave the mark behind)."""
        state = self.meta.get("load_state")
        if not state:
            return None
        state = json.loads(state)
        if time.time() - state.get("updated", 0) > LOAD_STALE_S:
            return None
        return {"loaded": self.db["articles"].count, "expected": state.get("expected")}

    def stats(self) -> dict:
        meta = self.meta
        stats = store.summary(self.db) | {
            "model": meta.get("model"),
            "dimensions": int(meta.get("dimensions") or 0),
            "backend": meta.get("backend"),
            "devices": meta.get("devices"),
            "index": None,
        }
        try:
            m = ix.Manifest.read(self.index_dir)
        except ArchiveError:  # none yet, or one `verify` reports
            return stats
        stats["index"] = {
            "type": m.index_type,
            "vectors": m.count,
            "bytes": m.size,
            "generation": m.generation,
            "path": str(self.index_dir / m.file),
        }
        return stats

    def close(self) -> None:
        """Close the database, folding the write-ahead log back into the file (a copy of the .db alone is whole)."""
        try:
            self.db.execute("pragma wal_checkpoint(truncate)")
        except Exception:  # a reader holding the log (a server) only delays it to its own close
            pass
        self.db.conn.close()
