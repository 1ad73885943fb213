"""`Archive`: the one Python API that the CLI and the Datasette plugin both use.

from archive import Archive
arc = Archive("archive.db", "indexes")
report = arc.load(["articles.csv"])
for r in arc.search("flooding in Queensland", k=5):
    print(r.score, r.title)
arc.related("http://www.bbc.co.uk/news/world-australia-39427466")
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from . import dedupe, store, terms
from . import index as ix
from . import search as srch
from .chunk import Chunker
from .embed import DEFAULT_MODEL_NAME, Encoder
from .models import ArchiveError, Article, Rejection, Result
from .sources import read_sources

log = logging.getLogger(__name__)

SAVE_EVERY_S = 3.0  # a running server sees new articles within this (plus its own check) while a load runs
SAVE_SHARE = 0.02  # ... unless saving the index takes longer: then at most this share of the load's time


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

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [{"origin": r.origin, "reason": r.reason} for r in self.rejected],
            "chunks_embedded": self.chunks_embedded,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    repaired: bool = False
    articles: int = 0
    chunks: int = 0
    indexed: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems or self.repaired


class Archive:
    """A news archive: an SQLite database (the truth) and a FAISS index beside it (a cache).

    `model` is a local sentence-transformers folder; None uses the model the archive was built with, or
    the bundled all-MiniLM-L6-v2 for a new archive.
    """

    def __init__(
        self,
        db_path: str | os.PathLike = "archive.db",
        index_dir: str | os.PathLike | None = None,
        model: str | os.PathLike | None = None,
        *,
        create: bool = False,
        backend: str | None = None,
    ):
        self.db_path = str(db_path)
        self.index_dir = Path(index_dir) if index_dir else Path(self.db_path).resolve().parent / "indexes"
        if not create and self.db_path != ":memory:" and not Path(self.db_path).exists():
            raise ArchiveError(f"{self.db_path}: no such archive; load articles first with `archive load`")
        self.db = store.open_db(self.db_path, create=create)
        self._model_arg = model
        self._backend_arg = backend  # torch | onnx; None: the archive's recorded backend, torch for a new one
        self._encoder: Encoder | None = None
        self.live = ix.LiveIndex(self.index_dir)

    # ---- model ------------------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, str]:
        return store.get_meta(self.db)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            encoder = Encoder(self._model_arg or self._recorded_model_path(), backend=self._backend())
            self._check_model(encoder)
            self._encoder = encoder
        return self._encoder

    def _backend(self) -> str:
        return self._backend_arg or self.meta.get("backend") or "torch"

    def _recorded_model_path(self) -> str | None:
        """The model folder the archive was built with; None (the bundled default) for a new archive."""
        meta = self.meta
        path = meta.get("model_path")
        if not path or Path(path).exists() or meta.get("model") == DEFAULT_MODEL_NAME:
            return path if path and Path(path).exists() else None
        raise ArchiveError(f"this archive was embedded with the model at {path}, which is gone; pass --model PATH")

    def _check_model(self, encoder: Encoder) -> None:
        meta = self.meta
        if "model_fingerprint" in meta and meta["model_fingerprint"] != encoder.fingerprint:
            raise ArchiveError(
                f"this archive was embedded with {meta['model']} ({meta['dimensions']} dims, "
                f"{meta.get('backend', 'torch')} backend); {encoder.name} ({encoder.backend} backend) "
                f"would mix incompatible vectors. To switch every vector to it, run "
                f"`archive index --rebuild --reembed --model {encoder.path} --backend {encoder.backend}`"
            )

    def _record_model(self, encoder: Encoder) -> None:
        store.set_meta(self.db, model_path=str(encoder.path), **encoder.describe())

    # ---- loading ----------------------------------------------------------------------------------------

    def load(
        self,
        paths: Iterable[str],
        *,
        field_map: dict[str, str] | None = None,
        on_error: str = "skip",
        batch_size: int = 64,
        encoding: str = "utf-8",
        stdin=None,
        progress: Callable[[int, int], None] | None = None,
    ) -> LoadReport:
        """Read, clean, chunk, embed, store and index articles; returns what happened to each.

        Commits every `batch_size` articles, so an interrupted load keeps its batches and a rerun skips them.
        `progress(articles_done, chunks_embedded)` is called after each batch.
        """
        if on_error not in ("skip", "stop"):
            raise ArchiveError("on_error must be 'skip' or 'stop'")
        encoder = self.encoder
        report, started = LoadReport(), time.monotonic()
        records = read_sources(paths, field_map, encoding=encoding, stdin=stdin)
        with ix.writer_lock(self.index_dir):
            self._record_model(encoder)
            index = self._writable_index()
            chunker = Chunker(encoder)
            next_save = time.monotonic() + SAVE_EVERY_S
            for batch in _batches(records, batch_size):
                articles = self._take_articles(batch, report, on_error)
                self._load_batch(articles, index, chunker, report)
                if progress:
                    progress(len(articles), report.chunks_embedded)
                if time.monotonic() >= next_save:
                    took = time.monotonic()
                    self._save(index)  # a whole-file rewrite: ~0.1 s at 15k vectors, seconds at a million
                    took = time.monotonic() - took
                    next_save = time.monotonic() + max(SAVE_EVERY_S, took / SAVE_SHARE)
                if report.rejected and on_error == "stop":
                    break
            self._save(index)
        if report.chunks_embedded:
            self._prepare_queries(encoder)  # torch is loaded now, so the export costs only its own seconds
        report.seconds = time.monotonic() - started
        if report.rejected and on_error == "stop":
            raise LoadStopped(f"stopped at {report.rejected[-1]} (everything before it was loaded)")
        return report

    @staticmethod
    def _prepare_queries(encoder: Encoder) -> None:
        """Export a torch model's fp32 ONNX query encoder once per machine, so a server starts without torch."""
        try:
            encoder.prepare_queries()
        except Exception as e:  # only an optimisation: queries then run on torch
            log.warning("could not export the ONNX query encoder (%s); queries will run on torch", e)

    @staticmethod
    def _take_articles(batch: list, report: LoadReport, on_error: str) -> list[Article]:
        articles = []
        for item in batch:
            if isinstance(item, Rejection):
                report.rejected.append(item)
                if on_error == "stop":
                    break
            else:
                articles.append(item)
        return articles

    def _load_batch(self, articles: list[Article], index: ix.ChunkIndex, chunker: Chunker, report: LoadReport):
        plans = store.classify(self.db, articles)
        texts: list[str] = []
        for p in plans:
            setattr(report, p.status, getattr(report, p.status) + 1)
            if p.status != "unchanged":
                p.set_chunks(
                    chunker.chunk(p.article.title, p.article.body), store.existing_chunks(self.db, p.article_id)
                )
                texts += p.texts_to_embed()
        if all(p.status == "unchanged" for p in plans):
            return
        vectors = self.encoder.encode(texts)
        report.chunks_embedded += len(texts)
        applied = store.apply(self.db, plans, vectors)
        self._derive([p.article_id for p in plans if p.status != "unchanged"])
        index.remove(applied.removed_ids)
        if applied.added_ids:
            index.add(np.array(applied.added_ids), np.vstack(applied.added_vectors))

    def _derive(self, article_ids: list[int]) -> None:
        """The tables derived from new or changed articles: near-duplicate groups and keyword signatures."""
        dedupe.update(self.db, article_ids)
        terms.update(self.db, article_ids)

    def _derive_missing(self) -> None:
        dedupe.backfill(self.db)
        terms.backfill(self.db)

    def _writable_index(self) -> ix.ChunkIndex:
        """The index, brought level with the database first (a crashed load may have left it behind)."""
        self._derive_missing()  # likewise the derived tables, written just after each batch's commit
        try:
            index, manifest = ix.load(self.index_dir)
        except ArchiveError:
            return self._build_index()
        self._sync(index)
        return index

    def _build_index(self, kind: str = "auto") -> ix.ChunkIndex:
        """Every stored vector in a new index of `kind` (auto: chosen by size, see `index.choose_kind`)."""
        dim = int(self.meta.get("dimensions") or self.encoder.dimensions)
        if ix.choose_kind(self.db["chunks"].count, kind) != "flat":  # IVF kinds train on all of them at once
            parts = list(store.all_vectors(self.db, dim))
            ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
            return ix.build(dim, ids, np.vstack([p[1] for p in parts]) if parts else np.zeros((0, dim)), kind)
        index = ix.ChunkIndex(dim)
        for ids, vecs in store.all_vectors(self.db, dim):
            index.add(ids, vecs)
        return index

    def _sync(self, index: ix.ChunkIndex) -> tuple[int, int]:
        """Add vectors the index lacks, drop ids the database no longer has; returns (added, removed)."""
        in_db, in_index = store.chunk_ids(self.db), index.ids()
        missing = np.setdiff1d(in_db, in_index)
        stale = np.setdiff1d(in_index, in_db)
        index.remove(stale)
        if len(missing):
            index.add(missing, store.vectors_for(self.db, missing, index.dim))
        return len(missing), len(stale)

    def _save(self, index: ix.ChunkIndex) -> ix.Manifest:
        meta = self.meta
        return ix.save(
            index,
            self.index_dir,
            model_fingerprint=meta.get("model_fingerprint", ""),
            db_generation=int(meta["generation"]),
        )

    # ---- maintenance ------------------------------------------------------------------------------------

    def delete(self, refs: Iterable[str | int]) -> list[int]:
        """Delete articles (by id or URL) with their chunks and vectors; returns the deleted article ids."""
        ids = [self.article(r)["id"] for r in refs]
        with ix.writer_lock(self.index_dir):
            index = self._writable_index()
            index.remove(store.delete_articles(self.db, ids))
            dedupe.forget(self.db, ids)
            terms.forget(self.db, ids)
            self._save(index)
        return ids

    def rebuild_index(
        self, *, reembed: bool = False, progress: Callable[[int], None] | None = None, index_type: str = "auto"
    ) -> ix.Manifest:
        """Rebuild the index from stored vectors; with `reembed`, first re-chunk and re-embed every article
        with this Archive's model (the way to switch models). `index_type`: auto, flat, ivf or ivf-sq8."""
        with ix.writer_lock(self.index_dir):
            if reembed:
                encoder = Encoder(self._model_arg or self._recorded_model_path(), backend=self._backend())
                self._reembed(encoder, progress)
            return self._save(self._build_index(index_type))

    def _reembed(self, encoder: Encoder, progress) -> None:
        store.set_meta(self.db, reembed_in_progress=encoder.fingerprint)
        self._embed_articles(encoder, [r[0] for r in self.db.execute("select id from articles order by id")], progress)
        self._encoder = encoder
        self._record_model(encoder)
        self._prepare_queries(encoder)
        self.db.execute("delete from archive_meta where key = 'reembed_in_progress'")
        self.db.conn.commit()

    def _embed_articles(self, encoder: Encoder, ids: list[int], progress=None) -> None:
        """Chunk and embed these stored articles again, replacing whatever chunks they have."""
        chunker = Chunker(encoder)
        for start in range(0, len(ids), 64):
            plans = []
            for aid in ids[start : start + 64]:
                row = self.db["articles"].get(aid)
                article = Article(
                    row["title"],
                    row["body"],
                    row["origin"] or "",
                    row["url"],
                    row["outlet"],
                    row["published"],
                    row["subtitle"],
                    row["byline"],
                    row["external_id"],
                    row["language"],
                )
                plan = store.Planned(article, row["identity"], "updated", aid)
                plan.set_chunks(chunker.chunk(article.title, article.body), [])
                plans.append(plan)
            store.apply(self.db, plans, encoder.encode([t for p in plans for t in p.texts_to_embed()]))
            if progress:
                progress(len(plans))

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Compare database and index; with `repair`, make the index agree with the database."""
        report = VerifyReport(articles=self.db["articles"].count, chunks=self.db["chunks"].count)
        with ix.writer_lock(self.index_dir):
            try:
                index, manifest = ix.load(self.index_dir, check_sha=True)
                report.indexed = index.ntotal
                report.problems += self._compare(index, manifest)
            except ArchiveError as e:
                index, report.problems = None, [str(e)]
            if "reembed_in_progress" in self.meta:
                report.problems.append("a model switch (index --rebuild --reembed) was interrupted; run it again")
            orphans = self.db.execute(
                "select count(*) from chunks where article_id not in (select id from articles)"
            ).fetchone()[0]
            if orphans:
                report.problems.append(f"{orphans} chunks belong to no article")
            ungrouped = len(dedupe.ungrouped(self.db))
            if ungrouped:
                report.problems.append(f"{ungrouped} articles have no near-duplicate signature")
            unsigned = len(terms.unsigned(self.db))
            if unsigned:
                report.problems.append(f"{unsigned} articles have no keyword signature")
            chunkless = [r[0] for r in self.db.execute(
                "select id from articles where id not in (select article_id from chunks) order by id")]  # fmt: skip
            if chunkless:
                report.problems.append(f"{len(chunkless)} articles have no chunks (--repair embeds them)")
            if repair and report.problems:
                self.db.execute("delete from chunks where article_id not in (select id from articles)")
                self.db.conn.commit()
                self._embed_articles(self.encoder, chunkless)
                self._derive_missing()
                index = self._build_index()
                self._save(index)
                report.indexed, report.repaired = index.ntotal, True
        return report

    def _compare(self, index: ix.ChunkIndex, manifest: ix.Manifest) -> list[str]:
        problems = []
        meta = self.meta
        if manifest.model_fingerprint != meta.get("model_fingerprint", ""):
            problems.append("the index was built with another model than the database records")
        in_db, in_index = store.chunk_ids(self.db), index.ids()
        missing, stale = np.setdiff1d(in_db, in_index), np.setdiff1d(in_index, in_db)
        if len(missing):
            problems.append(f"{len(missing)} chunk vectors are in the database but not in the index")
        if len(stale):
            problems.append(f"{len(stale)} index entries have no chunk in the database")
        common = np.intersect1d(in_db, in_index)
        sample = common[np.linspace(0, len(common) - 1, min(len(common), 200)).astype(int)] if len(common) else common
        if len(sample):
            diff = np.abs(index.vectors(sample) - store.vectors_for(self.db, sample, index.dim)).max()
            if diff > index.tolerance:
                problems.append("index vectors differ from the stored vectors")
        return problems

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

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        outlet: str | None = None,
        since: str | None = None,
        until: str | None = None,
        mode: str = "hybrid",
    ) -> list[Result]:
        """Articles ranked for `query` (mode: semantic, keyword or hybrid), best chunk as the passage."""
        filters = srch.Filters(outlet, since, until)
        index = self._index() if mode != "keyword" else None
        return srch.search(self.db, index, self.encoder, query, k=k, filters=filters, mode=mode)

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
    ) -> list[Result]:
        """Other coverage of the article's story (never itself nor a near duplicate of it), one row per
        near-duplicate group; `window` days around its date; `other_outlets` ranks other outlets first."""
        article = self.article(ref)
        index = self._index()
        filters = srch.Filters(outlet, since, until)
        options = {"mode": mode, "window": window, "other_outlets": other_outlets}
        return srch.related(self.db, index, article, k=k, filters=filters, dim=index.dim, **options)

    def stats(self) -> dict:
        meta = self.meta
        row = self.db.execute(
            "select count(*), count(distinct outlet), min(published), max(published) from articles"
        ).fetchone()
        outlets = self.db.execute("select outlet, count(*) n from articles group by outlet order by n desc").fetchall()
        stats = {
            "articles": row[0],
            "chunks": self.db["chunks"].count,
            "outlets": row[1],
            "outlet_counts": dict(outlets),
            "earliest": row[2],
            "latest": row[3],
            "model": meta.get("model"),
            "dimensions": int(meta.get("dimensions") or 0),
            "backend": meta.get("backend"),
            "index": None,
        }
        manifest_path = self.index_dir / ix.MANIFEST
        if manifest_path.exists():
            m = ix.Manifest.read(self.index_dir)
            stats["index"] = {
                "type": m.index_type,
                "vectors": m.count,
                "bytes": m.size,
                "generation": m.generation,
                "path": str(self.index_dir / m.file),
            }
        return stats

    def close(self) -> None:
        self.db.conn.close()


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
