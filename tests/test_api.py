"""The Archive facade end to end on small archives: loading, index upkeep, verify/repair and delete on the
hash-encoder sample and fresh hash archives (real chunking, FAISS, SQLite); the model's own vectors and the
model check on the real sample (slow)."""

import json
import shutil

import numpy as np
import pytest
from hash_encoder import HashEncoder

from archive import Archive, ArchiveError, LoadStopped, store, terms
from archive import index as ix

BODY = (
    "Heavy rain flooded the town centre on Monday. Residents were moved to the school hall. "
    "The river rose two metres overnight, the council said. Roads to the coast stayed closed."
)


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def record(n, body=BODY, **kw):
    return {
        "url": f"http://news.example.com/{n}",
        "title": f"Story {n}",
        "body": f"{body} Item {n}.",
        "published": "2017-03-01",
        **kw,
    }


@pytest.fixture
def sample_copy(hash_sample, tmp_path):
    a = hash_sample.copy_to(tmp_path).open()
    yield a
    a.close()


@pytest.fixture
def real_copy(sample_archive, tmp_path):
    a = sample_archive.copy_to(tmp_path).open()
    yield a
    a.close()


def test_reloading_the_same_file_adds_nothing_and_embeds_nothing(arc, tmp_path):
    src = jsonl(tmp_path / "a.jsonl", [record(i) for i in range(5)])
    first = arc.load([src])
    second = arc.load([src])
    assert (first.added, first.chunks_embedded > 0) == (5, True)
    assert (second.added, second.unchanged, second.chunks_embedded) == (0, 5, 0)
    assert arc.verify().ok


def test_a_changed_article_reembeds_only_its_changed_chunks(arc, tmp_path):
    long_body = " ".join(f"Paragraph {i} says something distinct about the harbour works." for i in range(60))
    arc.load([jsonl(tmp_path / "a.jsonl", [record(1, body=long_body)])])
    before = arc.db["chunks"].count
    changed = long_body + " A late correction was added at the end."
    report = arc.load([jsonl(tmp_path / "b.jsonl", [record(1, body=changed)])])
    assert report.updated == 1 and 0 < report.chunks_embedded < before
    assert arc.verify().ok
    assert "correction" in arc.article("http://news.example.com/1")["body"]


def test_rejections_carry_file_and_line_and_the_rest_loads(arc, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps(record(1)) + "\n{not json\n" + json.dumps({"title": "no body"}) + "\n" + json.dumps(record(2)) + "\n"
    )
    report = arc.load([str(path)])
    assert report.added == 2
    assert [r.origin for r in report.rejected] == [f"{path}:2", f"{path}:3"]


def test_on_error_stop_keeps_what_came_before(arc, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(record(1)) + "\n{broken\n" + json.dumps(record(2)) + "\n")
    with pytest.raises(LoadStopped, match=":2"):
        arc.load([str(path)], on_error="stop")
    assert arc.db["articles"].count == 1
    assert arc.verify().ok


def test_delete_removes_article_chunks_and_vectors(arc, tmp_path):
    arc.load([jsonl(tmp_path / "a.jsonl", [record(i) for i in range(3)])])
    assert [a["id"] for a in arc.delete(urls=["http://news.example.com/1"])] == [2]
    index, _ = ix.load(arc.index_dir)
    assert index.ntotal == arc.db["chunks"].count
    assert arc.verify().ok


def test_a_load_after_a_crash_brings_the_index_level(sample_copy, tmp_path):
    """A crash between a batch's commit and the index save leaves the index behind; the next writer fixes it."""
    index, _ = ix.load(sample_copy.index_dir)
    lost = index.ids()[:25]
    index.remove(lost)
    ix.save(index, sample_copy.index_dir, model_fingerprint=sample_copy.meta["model_fingerprint"], db_generation=1)
    report = sample_copy.verify()
    assert not report.ok and "25 chunk vectors are in the database but not in the index" in report.problems
    sample_copy.load([jsonl(tmp_path / "one.jsonl", [record(1)])])
    assert sample_copy.verify().ok


def test_verify_repairs_a_truncated_index(sample_copy):
    manifest = ix.Manifest.read(sample_copy.index_dir)
    path = sample_copy.index_dir / manifest.file
    path.write_bytes(path.read_bytes()[: manifest.size // 2])
    report = sample_copy.verify(repair=True)
    assert report.repaired and report.problems
    assert sample_copy.verify().ok and not sample_copy.verify().problems


def test_rebuild_from_stored_vectors_gives_the_same_answers(sample_copy):
    before = [r.id for r in sample_copy.search("avalanche hotel", k=5)]
    shutil.rmtree(sample_copy.index_dir)
    with pytest.raises(ArchiveError, match="no index"):
        sample_copy.search("avalanche hotel")
    sample_copy.rebuild_index()
    assert [r.id for r in sample_copy.search("avalanche hotel", k=5)] == before


@pytest.mark.slow
def test_stored_vectors_are_the_models_vectors(real_copy):
    row = real_copy.db.execute(
        "select c.text, a.title, c.vector from chunks c join articles a on a.id = c.article_id limit 1"
    ).fetchone()
    fresh = real_copy.encoder.encode([f"{row[1]}\n\n{row[0]}"])[0]
    assert np.allclose(np.frombuffer(row[2], dtype=np.float32), fresh, atol=1e-4)


@pytest.mark.slow
def test_another_model_is_refused(real_copy, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(real_copy.encoder.path, other)
    cfg = other / "config.json"
    cfg.write_text(cfg.read_text().replace("}", ', "note": "fine-tuned"}', 1))
    arc = Archive(real_copy.db_path, real_copy.index_dir, other)
    with pytest.raises(ArchiveError, match="index --rebuild --reembed"):
        arc.load([jsonl(tmp_path / "one.jsonl", [record(1)])])


def test_another_encoder_is_refused_before_anything_changes(sample_copy, tmp_path):
    """The fingerprint check itself: a different encoder (here 32 dims), or the default model on a hash archive."""
    before = sample_copy.stats()
    other = Archive(sample_copy.db_path, sample_copy.index_dir, encoder=HashEncoder(32))
    with pytest.raises(ArchiveError, match="hash-64 .*would mix incompatible vectors.*index --rebuild --reembed"):
        other.load([jsonl(tmp_path / "one.jsonl", [record(1)])])
    with pytest.raises(ArchiveError, match="embedded with hash-64"):
        Archive(sample_copy.db_path, sample_copy.index_dir).search("cyclone")
    assert sample_copy.stats() == before


def test_a_switch_to_a_model_of_another_size_rebuilds_stories(arc, tmp_path):
    """Mid-switch the stored vectors are of two sizes (64 and 32 here): stories wait for the switch's end."""
    arc.load([jsonl(tmp_path / "a.jsonl", [record(i) for i in range(70)])])  # two batches of the switch
    switched = Archive(arc.db_path, arc.index_dir, encoder=HashEncoder(32))
    switched.rebuild_index(reembed=True)
    assert switched.meta["model_fingerprint"] == "hash-v1-32"
    assert switched.verify().ok
    assert switched.db.execute("select sum(size) from stories").fetchone()[0] == 70
    assert switched.search("river flooded", k=3, mode="semantic")
    switched.close()


class _FailsOnSecondBatch(HashEncoder):
    """A model switch that dies halfway: its second batch raises (as a killed process would stop)."""

    def encode(self, texts, **kw):
        if self.calls == 1:
            raise RuntimeError("the machine went away")
        return super().encode(texts, **kw)


def test_repair_refuses_an_index_of_two_models_after_an_interrupted_switch(arc, tmp_path):
    arc.load([jsonl(tmp_path / "a.jsonl", [record(i) for i in range(70)])])
    switch = Archive(arc.db_path, arc.index_dir, encoder=_FailsOnSecondBatch(32))
    with pytest.raises(RuntimeError):
        switch.rebuild_index(reembed=True)
    dims = {r[0] for r in arc.db.execute("select distinct length(vector) / 4 from chunks")}
    assert dims == {32, 64}  # the database holds vectors of both models
    report = arc.verify(repair=True)
    assert not report.ok and not report.repaired
    assert "interrupted" in " ".join(report.problems) and "--reembed" in " ".join(report.unrepaired)
    assert Archive(arc.db_path, arc.index_dir, encoder=HashEncoder(32)).rebuild_index(reembed=True)
    assert Archive(arc.db_path, arc.index_dir, encoder=HashEncoder(32)).verify().ok


def test_stats(hash_sample):
    arc = hash_sample.open()
    try:
        s = arc.stats()
    finally:
        arc.close()
    assert s["articles"] > 100 and s["chunks"] > s["articles"]
    assert s["model"] == "hash-64" and s["dimensions"] == 64  # what the archive was built with
    assert s["index"]["vectors"] == s["chunks"] and s["earliest"] <= s["latest"]
    assert sum(s["outlet_counts"].values()) == s["articles"]


def test_verify_reports_and_repairs_missing_duplicate_signatures(sample_copy):
    sample_copy.db.execute("delete from article_minhash where article_id in (select id from articles limit 3)")
    sample_copy.db.conn.commit()
    report = sample_copy.verify()
    assert "3 articles have no near-duplicate signature" in report.problems
    assert sample_copy.verify(repair=True).repaired
    assert sample_copy.verify().problems == []


def test_verify_reports_and_repairs_missing_keyword_signatures(sample_copy):
    df_before = dict(sample_copy.db.execute("select term, df from terms").fetchall())
    with store.transaction(sample_copy.db):
        terms.forget(sample_copy.db, [r[0] for r in sample_copy.db.execute("select id from articles limit 4")])
    assert "4 articles have no keyword signature" in sample_copy.verify().problems
    assert sample_copy.verify(repair=True).repaired
    assert sample_copy.verify().problems == []
    assert dict(sample_copy.db.execute("select term, df from terms").fetchall()) == df_before


def test_verify_reports_and_repairs_articles_without_chunks(sample_copy, hash_sample):
    """The state an old non-atomic batch could leave: an article committed, its chunks not. The repair embeds
    it again: the same passages and vectors as before, searchable again."""
    article = sample_copy.article(hash_sample.story_urls["debbie"][0])["id"]

    def chunks():
        rows = "select seq, text, vector from chunks where article_id = ? order by seq"
        return sample_copy.db.execute(rows, [article]).fetchall()

    before = chunks()
    assert before
    sample_copy.db.execute("delete from chunks where article_id = ?", [article])
    sample_copy.db.conn.commit()
    report = sample_copy.verify()
    assert "1 articles have no chunks (--repair embeds them)" in report.problems
    assert sample_copy.verify(repair=True).repaired
    assert sample_copy.verify().problems == []
    assert chunks() == before
    assert article in {r.id for r in sample_copy.search(before[0][1], k=3, mode="semantic")}
