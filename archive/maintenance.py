"""Index upkeep: keep the FAISS cache level with the database, rebuild it, switch models, delete articles.

The database is the truth and the index a cache of `chunks.vector`: a writer first brings the index level
with the database (a killed load may have committed batches it never indexed), and a rebuild needs no
re-embedding. Re-embedding (a model switch) goes through the load pipeline with every article forced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from . import dedupe, store, stories, terms
from . import index as ix
from .models import ArchiveError


class Maintenance:
    def __init__(self, arc):
        self.arc = arc

    @property
    def db(self):
        return self.arc.db

    def writable_index(self) -> ix.ChunkIndex:
        """The index, brought level with the database first (a crashed load may have left it behind)."""
        self.derive_missing()
        store.ensure_archive_id(self.db)
        try:
            index, _ = ix.load(self.arc.index_dir, archive_id=self.arc.archive_id)
        except ix.IndexMismatch:
            raise  # another database's index: never overwrite it
        except ArchiveError:
            return self.build_index()
        self.sync(index)
        return index

    def derive_missing(self) -> None:
        """Signatures of articles loaded before the derived tables existed."""
        store.ensure_derived_tables(self.db)
        dedupe.backfill(self.db)
        terms.backfill(self.db)

    def build_index(self, kind: str = "auto") -> ix.ChunkIndex:
        """Every stored vector in a new index of `kind` (auto: chosen by size, see `index.choose_kind`)."""
        dim = int(self.arc.meta.get("dimensions") or self.arc.encoder.dimensions)
        # Streamed out of SQLite in batches (trained on a sample first): peak memory is the index plus a batch.
        return ix.build_streaming(dim, lambda: store.all_vectors(self.db, dim), self.db["chunks"].count, kind)

    def sync(self, index: ix.ChunkIndex) -> tuple[int, int]:
        """Add vectors the index lacks, drop ids the database no longer has; returns (added, removed)."""
        in_db, in_index = store.chunk_ids(self.db), index.ids()
        missing = np.setdiff1d(in_db, in_index)
        stale = np.setdiff1d(in_index, in_db)
        index.remove(stale)
        if len(missing):
            index.add(missing, store.vectors_for(self.db, missing, index.dim))
        return len(missing), len(stale)

    def save(self, index: ix.ChunkIndex) -> ix.Manifest:
        meta = self.arc.meta
        return ix.save(
            index,
            self.arc.index_dir,
            model_fingerprint=meta.get("model_fingerprint", ""),
            db_generation=int(meta["generation"]),
            archive_id=meta.get("archive_id", ""),
        )

    def delete(
        self, ids: Iterable[int] = (), urls: Iterable[str] = (), external_ids: Iterable[str] = (), *, dry_run=False
    ) -> list[dict]:
        """The articles named (`store.articles_to_delete`: all must exist, or nothing goes); unless `dry_run`,
        deleted with every earlier version, chunk, vector and derived row. Returns what was (or would be) deleted."""
        if dry_run:  # reads only: no writer lock, so it answers while a load runs
            return store.articles_to_delete(self.db, ids, urls, external_ids)
        with ix.writer_lock(self.arc.index_dir):
            doomed = store.articles_to_delete(self.db, ids, urls, external_ids)
            if doomed:
                index = self.writable_index()
                index.remove(store.delete_articles(self.db, [r["id"] for r in doomed], _forget))
                self.save(index)
        return doomed

    def rebuild(self, *, reembed: bool, progress: Callable[[int], None] | None, index_type: str) -> ix.Manifest:
        with ix.writer_lock(self.arc.index_dir):
            if reembed:
                self.reembed(progress)
            return self.save(self.build_index(index_type))

    def reembed(self, progress=None, ids: Iterable[int] | None = None) -> None:
        """Chunk and embed stored articles again (all of them: a model switch; or `ids`: a repair), replacing
        their chunks. A switch is recorded as in progress until it ends, so `verify` can tell."""
        from .ingest import reembed_articles  # the load pipeline, forced over stored articles

        encoder = self.arc.encoder
        switching = ids is None
        if switching:
            store.set_meta(self.db, reembed_in_progress=encoder.fingerprint)
        each = (lambda n, _chunks: progress(n)) if progress else None
        todo = store.article_ids(self.db) if switching else list(ids)
        reembed_articles(self.arc, todo, each, assign_stories=not switching)
        if switching:
            self.arc.record_model()
            store.clear_meta(self.db, "reembed_in_progress")
            stories.rebuild(self.db)  # stories compare the stored vectors, which are the new model's now
        from .ingest import prepare_queries

        prepare_queries(encoder)


def _forget(db, article_ids: list[int]) -> None:
    dedupe.forget(db, article_ids)
    terms.forget(db, article_ids)
    stories.forget(db, article_ids)
