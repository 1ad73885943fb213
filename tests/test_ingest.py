"""The load pipeline (archive/ingest.py, archive/prepare.py) with the deterministic encoder: fast, no torch."""

from __future__ import annotations

import json

import pytest
from hash_encoder import HashEncoder

from archive import Archive, ArchiveError, LoadStopped
from archive.ingest import Feeder
from archive.prepare import Prepared
from archive.sources import read_raw, read_sources

TOPICS = ["harbour", "railway", "hospital", "school", "bridge", "library", "stadium", "airport"]


def records(n: int, start: int = 0, **over) -> list[dict]:
    return [
        {
            "url": f"https://ingest.example.com/{i}",
            "title": f"Council votes on the {TOPICS[i % 8]} plan {i}",
            "published": f"2017-03-{1 + i % 28:02d}",
            "outlet": "ingest.example.com",
            "body": f"The council voted {i} times on the new {TOPICS[i % 8]} in ward {i}. Residents objected. "
            + " ".join(f"Sentence {j} of story {i} adds detail about the {TOPICS[(i + j) % 8]}." for j in range(30)),
            **over,
        }
        for i in range(start, start + n)
    ]


def jsonl(path, recs) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def open_archive(tmp_path, name="a") -> Archive:
    return Archive(tmp_path / f"{name}.db", tmp_path / f"{name}-idx", create=True, encoder=HashEncoder())


def contents(arc: Archive) -> list[tuple]:
    return arc.db.execute(
        "select a.identity, a.title, c.seq, c.text, c.vector from chunks c join articles a on a.id = c.article_id "
        "order by a.identity, c.seq"
    ).fetchall()


def test_worker_processes_give_the_same_archive_as_one_process(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", records(40))
    one, many = open_archive(tmp_path, "one"), open_archive(tmp_path, "many")
    r1 = one.load([src], workers=0, batch_size=7)
    r2 = many.load([src], workers=2, batch_size=7)
    assert (r1.added, r2.added) == (40, 40) and r1.chunks_embedded == r2.chunks_embedded > 40
    assert contents(one) == contents(many)
    assert one.verify().ok and many.verify().ok
    assert [r.id for r in many.search("railway plan", k=3)] == [r.id for r in one.search("railway plan", k=3)]


def test_a_reload_embeds_nothing_and_workers_skip_known_articles(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", records(30))
    arc = open_archive(tmp_path)
    arc.load([src], workers=0)  # worker processes cost ~1 CPU-s each to start: only the reload needs one
    calls = arc.encoder.calls
    report = arc.load([src], workers=1)
    assert (report.added, report.unchanged, report.chunks_embedded) == (0, 30, 0)
    assert arc.encoder.calls == calls  # nothing reached the encoder


def test_an_article_repeated_in_later_batches_lands_once_with_its_last_version(tmp_path):
    recs = records(5) + [dict(records(1, 2)[0], body="A rewritten body about the school. It is short now.")]
    arc = open_archive(tmp_path)
    report = arc.load([jsonl(tmp_path / "in.jsonl", recs)], batch_size=1, workers=0)
    assert (report.added, report.updated) == (5, 1)
    assert arc.article("https://ingest.example.com/2")["body"].startswith("A rewritten body")
    assert arc.db["articles"].count == 5 and arc.verify().ok


def test_progress_counts_every_article_including_unchanged_ones(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", records(12))
    arc = open_archive(tmp_path)
    arc.load([src])
    seen = []
    arc.load([src], batch_size=5, progress=lambda n, chunks: seen.append(n))
    assert sum(seen) == 12


def test_on_error_stop_with_workers_keeps_what_came_before(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = records(6)
    path.write_text("".join(json.dumps(r) + "\n" for r in good[:3]) + "{oops\n" + json.dumps(good[3]) + "\n")
    arc = open_archive(tmp_path)
    with pytest.raises(LoadStopped, match=f"{path}:4"):
        arc.load([str(path)], on_error="stop", workers=2, batch_size=2)
    assert arc.db["articles"].count == 3 and arc.verify().ok


def test_the_feeder_keeps_input_order_across_workers(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", records(50))
    arc = open_archive(tmp_path)
    with Feeder(read_raw([src]), arc.encoder, arc.db_path, workers=2) as stream:
        got = [p.article.url for p in stream]
    assert got == [r["url"] for r in records(50)]


def test_one_batch_commits_articles_chunks_and_signatures_together(tmp_path):
    arc = open_archive(tmp_path)
    arc.load([jsonl(tmp_path / "in.jsonl", records(9))], batch_size=4)
    for table in ("article_minhash", "article_terms", "article_groups"):
        assert arc.db[table].count == 9, table
    assert (
        arc.db.execute("select count(*) from articles where id not in (select article_id from chunks)").fetchone()[0]
        == 0
    )


def test_vectors_made_elsewhere_enter_through_the_writer(tmp_path):
    """What `--from-parquet` and the Ray route do: prepared, embedded articles handed to the one writer."""
    src = jsonl(tmp_path / "in.jsonl", records(8))
    local = open_archive(tmp_path, "local")
    local.load([src], workers=0)
    remote = open_archive(tmp_path, "remote")
    remote.record_model()
    with Feeder(read_raw([src]), remote.encoder, None, workers=0) as stream:
        prepared = list(stream)
    for p in prepared:
        p.vectors = remote.encoder.encode([c.embed_text for c in p.chunks])
    from archive.ingest import write_prepared

    report = write_prepared(remote, [prepared[:5], prepared[5:]])
    assert report.added == 8 and report.chunks_embedded == local.db["chunks"].count
    assert contents(local) == contents(remote) and remote.verify().ok


def test_a_load_is_refused_while_a_model_switch_is_unfinished(tmp_path):
    arc = open_archive(tmp_path)
    arc.load([jsonl(tmp_path / "in.jsonl", records(3))])
    arc.db["archive_meta"].insert({"key": "reembed_in_progress", "value": "x"}, replace=True)
    with pytest.raises(ArchiveError, match="interrupted"):
        arc.load([jsonl(tmp_path / "more.jsonl", records(2, 10))])


def test_prepared_of_carries_the_identity_and_hashes_only(tmp_path):
    (article,) = list(read_sources([jsonl(tmp_path / "one.jsonl", records(1))]))
    p = Prepared.of(article)
    assert p.identity == "https://ingest.example.com/0" and p.chunks == [] and p.minhash is None
    assert len(p.content_hash) == len(p.body_hash) == 40 and not p.terms


def test_keyword_signatures_and_document_frequencies_are_right_after_many_batches(tmp_path):
    """The writer remembers term ids across batches; every stored signature must still name the right words."""
    from collections import Counter

    import numpy as np

    from archive import terms

    arc = open_archive(tmp_path)
    arc.load([jsonl(tmp_path / "in.jsonl", records(30))], batch_size=4)
    names = dict(arc.db.execute("select id, term from terms"))
    df = Counter()
    for aid, blob in arc.db.execute("select article_id, terms from article_terms"):
        pairs = np.frombuffer(blob, np.int32).reshape(-1, 2)
        row = arc.db["articles"].get(aid)
        assert {names[t]: n for t, n in pairs.tolist()} == terms.counts(row["title"], row["body"])
        df.update(pairs[:, 0].tolist())
    assert len(df) >= 15 and dict(arc.db.execute("select id, df from terms where df > 0")) == dict(df)
