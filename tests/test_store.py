import sqlite3

import numpy as np
import pytest

from archive import store
from archive.chunk import Chunk
from archive.models import Article
from archive.prepare import Prepared


def art(url="http://example.com/a", body="First sentence. Second sentence.", **kw):
    return Article(title=kw.pop("title", "A title"), body=body, origin="t.jsonl:1", url=url, **kw)


def chunks_for(*texts):
    out, pos = [], 0
    for seq, t in enumerate(texts):
        out.append(Chunk(seq, pos, pos + len(t), t, "A title\n\n" + t))
        pos += len(t) + 1
    return out


def write(db, articles, chunk_texts):
    """One batch through classify/apply, with deterministic stand-in vectors (storage logic only)."""
    plans = store.classify(db, [Prepared.of(a) for a in articles])
    texts = []
    for p in plans:
        if p.status != "unchanged":
            p.set_chunks(chunks_for(*chunk_texts), store.existing_chunks(db, p.article_id))
            texts += p.texts_to_embed()
    vecs = np.stack([np.full(4, len(t), dtype=np.float32) for t in texts]) if texts else np.zeros((0, 4))
    return plans, texts, store.apply(db, plans, vecs)


@pytest.fixture
def db(tmp_path):
    return store.open_db(str(tmp_path / "a.db"))


def test_schema_has_fts_triggers_and_wal(db):
    assert {"articles", "chunks", "archive_meta", "articles_fts"} <= set(db.table_names())
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    write(db, [art(title="Cyclone hits Queensland")], ["x."])
    assert db.execute("select rowid from articles_fts where articles_fts match 'queensland'").fetchall()


def test_add_then_unchanged_then_updated_reuses_unchanged_chunks(db):
    plans, texts, applied = write(db, [art()], ["one.", "two."])
    assert plans[0].status == "added" and len(texts) == 2 and applied.added_ids == [1, 2]
    plans, texts, _ = write(db, [art()], ["one.", "two."])
    assert plans[0].status == "unchanged" and texts == []
    plans, texts, applied = write(db, [art(body="changed body")], ["one.", "three."])
    assert plans[0].status == "updated" and texts == ["A title\n\nthree."]
    assert applied.removed_ids == [2] and applied.added_ids == [3]
    assert [r["id"] for r in db["chunks"].rows_where(order_by="seq")] == [1, 3]


def test_repeated_passages_in_one_article_keep_distinct_ids(db):
    write(db, [art()], ["same.", "same."])
    _, texts, applied = write(db, [art(body="new")], ["same.", "same.", "other."])
    assert texts == ["A title\n\nother."] and applied.removed_ids == []
    assert sorted(r["id"] for r in db["chunks"].rows) == [1, 2, 3]


def test_identity_without_url_hashes_outlet_title_date_body(db):
    a = art(url=None, outlet="bbc.co.uk", published="2017-03-01")
    assert store.identity(a).startswith("sha1:")
    assert store.identity(a) != store.identity(art(url=None, outlet="cnn.com", published="2017-03-01"))
    assert store.identity(art()) == "http://example.com/a"


def test_last_copy_in_a_batch_wins(db):
    plans, _, _ = write(db, [art(body="old"), art(body="new")], ["x."])
    assert len(plans) == 1 and db["articles"].get(1)["body"] == "new"


def test_body_hash_folds_case_and_whitespace():
    assert store.body_hash("A  b\nC") == store.body_hash("a b c")


def test_delete_returns_chunk_ids(db):
    write(db, [art()], ["one.", "two."])
    assert store.delete_articles(db, [1]) == [1, 2]
    assert db["articles"].count == 0 and db["chunks"].count == 0


def test_generation_counts_batches(db):
    write(db, [art()], ["one."])
    write(db, [art(url="http://example.com/b")], ["one."])
    assert store.get_meta(db)["generation"] == "2"


def test_find_article_by_id_url_or_external_id(db):
    write(db, [art(external_id="X-1")], ["one."])
    assert store.find_article(db, 1)["url"] == "http://example.com/a"
    assert store.find_article(db, "http://example.com/a")["id"] == 1
    assert store.find_article(db, "X-1")["id"] == 1
    with pytest.raises(store.ArticleNotFound):
        store.find_article(db, "http://nowhere")


def test_not_an_sqlite_file(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is not a database\n" * 100)
    with pytest.raises(store.NotAnArchive, match="not an SQLite database"):
        store.open_db(str(path))
    assert path.read_text().startswith("this is not a database")


def test_an_sqlite_file_of_something_else(tmp_path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("create table t (x)")
    with pytest.raises(store.NotAnArchive, match="not a news archive"):
        store.open_db(str(path))


def test_a_batch_lands_whole_or_not_at_all(db):
    """A failure part-way through a batch (here: a vector missing for the second article) rolls back the
    first article too, so a killed load never leaves an article without its chunks or reuses chunk ids."""
    plans = store.classify(db, [Prepared.of(art()), Prepared.of(art(url="http://example.com/b"))])
    for p in plans:
        p.set_chunks(chunks_for("one."), [])
    with pytest.raises(StopIteration):
        store.apply(db, plans, np.ones((1, 4), dtype=np.float32))
    assert db["articles"].count == 0 and db["chunks"].count == 0
    assert store.get_meta(db)["next_chunk_id"] == "1"
