"""`archive verify`: does the index agree with the database, and are the derived tables complete?

Each check says what differs in words a user can act on; `repair` makes everything agree again (the index
is rebuilt from the stored vectors, articles without chunks are embedded, missing signatures computed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import dedupe, store, stories, terms
from . import index as ix
from .models import ArchiveError

SAMPLE = 200  # stored vectors compared with the index's copies


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    repaired: bool = False
    unrepaired: list[str] = field(default_factory=list)  # problems a repair could not fix
    articles: int = 0
    chunks: int = 0
    indexed: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was wrong, or a repair fixed everything that was."""
        return not self.problems or (self.repaired and not self.unrepaired)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "repaired": self.repaired,
            "unrepaired": self.unrepaired,
            "articles": self.articles,
            "chunks": self.chunks,
            "indexed": self.indexed,
        }


def verify(arc, *, repair: bool = False) -> VerifyReport:
    """Compare database and index; with `repair`, make the index agree with the database."""
    db = arc.db
    report = VerifyReport(articles=db["articles"].count, chunks=db["chunks"].count)
    with ix.writer_lock(arc.index_dir):
        report.indexed, index_problems = _check_index(arc)
        report.problems += index_problems + _check_tables(arc)
        if repair and report.problems:
            _repair(arc, report)
    return report


def _check_index(arc) -> tuple[int, list[str]]:
    try:
        index, manifest = ix.load(arc.index_dir, check_sha=True, archive_id=arc.archive_id)
    except ArchiveError as e:
        return 0, [str(e)]
    return index.ntotal, compare(arc, index, manifest)


def _check_tables(arc) -> list[str]:
    db, problems = arc.db, []
    if "reembed_in_progress" in arc.meta:
        problems.append("a model switch (index --rebuild --reembed) was interrupted; run it again")
    orphans = store.orphan_chunks(db)
    if orphans:
        problems.append(f"{orphans} chunks belong to no article")
    orphan_versions = store.orphan_versions(db)
    if orphan_versions:
        problems.append(f"{orphan_versions} earlier versions belong to no article (--repair drops them)")
    ungrouped = len(dedupe.ungrouped(db))
    if ungrouped:
        problems.append(f"{ungrouped} articles have no near-duplicate signature")
    unsigned = len(terms.unsigned(db))
    if unsigned:
        problems.append(f"{unsigned} articles have no keyword signature")
    chunkless = len(store.chunkless_articles(db))
    if chunkless:
        problems.append(f"{chunkless} articles have no chunks (--repair embeds them)")
    return problems + stories.check(db)


def _repair(arc, report: VerifyReport) -> None:
    db, upkeep = arc.db, arc.maintenance
    if "reembed_in_progress" in arc.meta:  # an index of two models' vectors would answer nonsense: refuse
        report.unrepaired.append("the interrupted model switch: run `archive index --rebuild --reembed` again")
        return
    store.delete_orphan_chunks(db)
    store.delete_orphan_versions(db)
    chunkless = store.chunkless_articles(db)
    if chunkless:
        upkeep.reembed(ids=chunkless)
    upkeep.derive_missing()
    if stories.check(db):
        stories.rebuild(db)
    index = upkeep.build_index()
    upkeep.save(index)
    report.indexed, report.repaired = index.ntotal, True


def compare(arc, index: ix.ChunkIndex, manifest: ix.Manifest) -> list[str]:
    """What differs between the index and the database's chunks."""
    db, problems = arc.db, []
    if manifest.model_fingerprint != arc.meta.get("model_fingerprint", ""):
        problems.append("the index was built with another model than the database records")
    in_db, in_index = store.chunk_ids(db), index.ids()
    missing, stale = np.setdiff1d(in_db, in_index), np.setdiff1d(in_index, in_db)
    if len(missing):
        problems.append(f"{len(missing)} chunk vectors are in the database but not in the index")
    if len(stale):
        problems.append(f"{len(stale)} index entries have no chunk in the database")
    common = np.intersect1d(in_db, in_index)
    sample = common[np.linspace(0, len(common) - 1, min(len(common), SAMPLE)).astype(int)] if len(common) else common
    if len(sample):
        diff = np.abs(index.vectors(sample) - store.vectors_for(db, sample, index.dim)).max()
        if diff > index.tolerance:
            problems.append("index vectors differ from the stored vectors")
    return problems
