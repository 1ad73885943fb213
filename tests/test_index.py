import json
import os
from functools import cache

import faiss
import numpy as np
import pytest

from archive import index as ix
from archive.models import ArchiveError


def unit(n, dim=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def filled():
    index = ix.ChunkIndex(16)
    vecs = unit(500)
    index.add(np.arange(1, 501), vecs)
    return index, vecs


def test_search_matches_brute_force(filled):
    index, vecs = filled
    q = unit(3, seed=1)
    scores, ids = index.search(q, 10)
    oracle = np.argsort(-(q @ vecs.T), axis=1)[:, :10] + 1
    assert (ids == oracle).all()
    assert np.allclose(scores, np.sort(q @ vecs.T, axis=1)[:, ::-1][:, :10], atol=1e-5)


def test_allowed_ids_prefilter_returns_only_them(filled):
    index, _ = filled
    allowed = np.array([7, 99, 250, 401])
    _, ids = index.search(unit(1, seed=2), 10, allowed)
    assert set(ids[0][ids[0] >= 0]) == set(allowed)


def test_remove(filled):
    index, _ = filled
    assert index.remove([1, 2, 3]) == 3
    assert index.ntotal == 497 and 1 not in set(index.ids())


def test_save_load_roundtrip_and_generations(tmp_path, filled):
    index, vecs = filled
    m1 = ix.save(index, tmp_path, model_fingerprint="abc", db_generation=4)
    m2 = ix.save(index, tmp_path, model_fingerprint="abc", db_generation=5)
    assert (m1.generation, m2.generation) == (1, 2)
    assert [p.name for p in tmp_path.glob("*.faiss")] == [m2.file]
    loaded, manifest = ix.load(tmp_path, check_sha=True)
    assert manifest.db_generation == 5 and manifest.count == 500 and manifest.max_chunk_id == 500
    assert np.allclose(loaded.vectors(np.array([42])), vecs[41])


def test_missing_manifest_is_reported(tmp_path):
    with pytest.raises(ix.IndexMissing, match="manifest"):
        ix.load(tmp_path)


def test_truncated_index_is_reported(tmp_path, filled):
    m = ix.save(filled[0], tmp_path, model_fingerprint="", db_generation=1)
    path = tmp_path / m.file
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ix.IndexCorrupt, match="bytes, manifest says"):
        ix.load(tmp_path)


def test_corrupted_index_is_reported(tmp_path, filled):
    m = ix.save(filled[0], tmp_path, model_fingerprint="", db_generation=1)
    path = tmp_path / m.file
    data = bytearray(path.read_bytes())
    data[:64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(ix.IndexCorrupt):
        ix.load(tmp_path, check_sha=True)


def test_garbage_manifest_is_reported(tmp_path, filled):
    ix.save(filled[0], tmp_path, model_fingerprint="", db_generation=1)
    (tmp_path / ix.MANIFEST).write_text(json.dumps({"what": 1}))
    with pytest.raises(ix.IndexCorrupt, match="unreadable manifest"):
        ix.load(tmp_path)


def test_live_index_reloads_on_a_new_generation(tmp_path, filled):
    index, _ = filled
    ix.save(index, tmp_path, model_fingerprint="", db_generation=1)
    live = ix.LiveIndex(tmp_path)
    first = live.current()[0]
    assert live.current()[0] is first  # unchanged manifest: no reload
    index.remove([10])
    ix.save(index, tmp_path, model_fingerprint="", db_generation=2)
    assert live.current()[0].ntotal == 499


def test_writer_lock_refuses_a_second_writer(tmp_path):
    with ix.writer_lock(tmp_path):
        with pytest.raises(ArchiveError, match="another `archive` command"):
            with ix.writer_lock(tmp_path):
                pass
    with ix.writer_lock(tmp_path):  # released
        pass


# ---- index types by size ---------------------------------------------------------------------------------


def clustered(n, dim=32, seed=0):
    """Unit vectors around 40 centres, closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    v = centres[rng.integers(0, 40, n)] + 0.5 * rng.normal(size=(n, dim))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@cache
def _trained_bytes(kind: str, n: int, first_id: int) -> bytes:
    return faiss.serialize_index(ix.build(32, np.arange(first_id, first_id + n), clustered(n), kind).index)


def built(kind: str, n: int = 4000, first_id: int = 10):
    """`ix.build` of clustered(n) with ids from first_id, as (index, vectors, ids): trained once per module (an
    ivf-pq build is ~0.5 CPU-s), then a fresh copy per call through FAISS's serialisation, as `ix.load` reads it."""
    index = ix.ChunkIndex(32, faiss.deserialize_index(_trained_bytes(kind, n, first_id)))
    return index, clustered(n), np.arange(first_id, first_id + n, dtype=np.int64)


def recall_at_10(index, vecs, ids, queries):
    _, got = index.search(queries, 10, exact=lambda wanted: vecs[np.searchsorted(ids, wanted)])
    exact = ids[np.argsort(-(queries @ vecs.T), axis=1)[:, :10]]
    return np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact)])


def test_choose_kind_by_size_and_override():
    assert ix.choose_kind(1000) == "flat"
    assert ix.choose_kind(ix.FLAT_MAX + 1) == "ivf"
    assert ix.choose_kind(10, "ivf-sq8") == "ivf-sq8"
    with pytest.raises(ArchiveError, match="index type must be one of"):
        ix.choose_kind(10, "hnsw-pq")


@pytest.fixture(params=["ivf", "ivf-sq8", "ivf-pq"])
def ivf_index(request):
    return built(request.param)


def test_ivf_kinds_recall_and_ids(ivf_index):
    index, vecs, ids = ivf_index
    assert index.kind == ix.choose_kind(4000, index.kind) and index.ntotal == 4000
    assert sorted(index.ids()) == list(ids)
    assert recall_at_10(index, vecs, ids, clustered(50, seed=3)) >= 0.9
    got = index.vectors(ids[[0, 17, 3999]])
    assert np.abs(got - vecs[[0, 17, 3999]]).max() <= index.tolerance


def test_ivf_prefilter_is_exact_over_allowed_ids(ivf_index):
    index, vecs, ids = ivf_index
    allowed = ids[::97]
    q = clustered(1, seed=5)
    _, got = index.search(q, 5, allowed, exact=lambda wanted: vecs[np.searchsorted(ids, wanted)])
    exact = allowed[np.argsort(-(q @ vecs[::97].T)[0])[:5]]
    assert set(got[0]) == set(exact)


def test_ivf_remove_and_add(ivf_index):
    index, vecs, ids = ivf_index
    assert index.remove([10, 11, 12]) == 3
    assert index.ntotal == 3997 and not {10, 11, 12} & set(index.ids())
    index.add(np.array([99999]), vecs[:1])
    _, got = index.search(vecs[:1], 1)
    assert got[0][0] == 99999


def test_ivf_save_load_keeps_kind_and_nprobe(tmp_path, ivf_index):
    index, vecs, ids = ivf_index
    index.nprobe = 7
    m = ix.save(index, tmp_path, model_fingerprint="abc", db_generation=1)
    assert m.index_type == index.kind and m.max_chunk_id == 4009
    loaded, _ = ix.load(tmp_path, check_sha=True)
    assert loaded.kind == index.kind and loaded.nprobe == 7
    assert np.array_equal(loaded.search(vecs[:3], 10)[1], index.search(vecs[:3], 10)[1])


def test_sq8_uses_a_quarter_of_flat_memory():
    vecs, ids = clustered(4000), np.arange(4000)
    flat = len(faiss_bytes(ix.build(32, ids, vecs, "flat")))
    sq8 = len(faiss_bytes(ix.build(32, ids, vecs, "ivf-sq8")))
    ids_bytes, centroids = 8 * 4000, ix.ivf_lists(4000) * 32 * 4
    assert sq8 - ids_bytes - centroids <= (flat - ids_bytes) / 4 + 4096  # vectors: 1 byte a dimension, not 4


def faiss_bytes(index):
    return faiss.serialize_index(index.index)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ivf", "ivf-sq8", "ivf-pq"])
def test_archive_rebuilds_verifies_and_searches_with_ivf_kinds(sample_archive, tmp_path, kind):
    import shutil

    from archive import Archive

    shutil.copy(sample_archive.db_path, tmp_path / "a.db")
    arc = Archive(tmp_path / "a.db", tmp_path / "idx")
    try:
        assert arc.rebuild_index(index_type=kind).index_type == kind
        assert arc.verify().problems == []
        assert arc.stats()["index"]["type"] == kind
        assert arc.search("Cyclone Debbie hits Queensland", k=3, mode="semantic")
        first = arc.search("avalanche", k=1, mode="semantic")[0]
        arc.delete([first.id])  # IVF removes natively
        assert arc.verify().problems == []
    finally:
        arc.close()


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-sq8", "ivf-pq"])
def test_live_index_maps_the_file_and_answers_like_the_index_in_memory(tmp_path, kind):
    index, vecs, ids = built(kind, 3000, 5)
    m = ix.save(index, tmp_path, model_fingerprint="abc", db_generation=1)
    live, _ = ix.LiveIndex(tmp_path).current()
    q, allowed = clustered(4, seed=9), ids[::11]
    assert np.array_equal(live.search(q, 10)[1], index.search(q, 10)[1])
    assert np.array_equal(live.search(q, 5, allowed)[1], index.search(q, 5, allowed)[1])
    (tmp_path / m.file).unlink()  # a writer's next save removes the old generation while a reader maps it
    assert np.array_equal(live.search(q, 10)[1], index.search(q, 10)[1])


# ---- ivf-pq, streaming builds and exact re-scoring (issue 14 item 5) -------------------------------------


def test_auto_turns_to_ivf_pq_past_pq_min():
    assert ix.choose_kind(ix.PQ_MIN) == "ivf"
    assert ix.choose_kind(ix.PQ_MIN + 1) == "ivf-pq"
    assert ix.choose_kind(10, "ivf-pq") == "ivf-pq"


def in_batches(ids, vecs, size, calls):
    def batches():
        calls.append(1)
        for start in range(0, len(ids), size):
            yield ids[start : start + size], vecs[start : start + size]

    return batches


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-pq"])
def test_streaming_build_passes_twice_and_matches_a_build_from_arrays(kind):
    vecs, ids = clustered(3000), np.arange(5, 3005, dtype=np.int64)
    calls = []
    streamed = ix.build_streaming(32, in_batches(ids, vecs, 700, calls), len(ids), kind)
    assert len(calls) == (1 if kind == "flat" else 2)  # a sampling pass to train, then an adding pass
    assert streamed.kind == kind and sorted(streamed.ids()) == list(ids)
    q = clustered(5, seed=4)
    assert np.array_equal(streamed.search(q, 10)[1], built(kind, 3000, 5)[0].search(q, 10)[1])


def test_an_ivf_pq_build_with_too_few_vectors_to_train_is_flat():
    vecs = clustered(100)
    assert ix.build(32, np.arange(100), vecs, "ivf-pq").kind == "flat"


def exact_from(vecs, first_id):
    return lambda ids: vecs[np.asarray(ids) - first_id]


def test_ivf_pq_rescoring_returns_exact_scores_and_recall():
    index, vecs, ids = built("ivf-pq")
    q = clustered(50, seed=3)
    raw_scores, _ = index.search(q, 10)
    scores, got = index.search(q, 10, exact=exact_from(vecs, 10))
    true = np.einsum("qd,qkd->qk", q, vecs[got - 10])
    assert np.allclose(scores, true, atol=1e-6) and not np.allclose(raw_scores, scores, atol=1e-3)
    assert (np.diff(scores, axis=1) <= 0).all()
    exact = ids[np.argsort(-(q @ vecs.T), axis=1)[:, :10]]
    assert np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact)]) >= 0.95


def test_rescoring_drops_ids_the_store_no_longer_has():
    index, vecs, ids = built("ivf-pq")
    _, before = index.search(vecs[:1], 5, exact=exact_from(vecs, 10))
    gone = set(before[0][:2].tolist())

    def exact(wanted):
        out = vecs[np.asarray(wanted) - 10].copy()
        out[np.isin(wanted, list(gone))] = np.nan  # deleted from the database, still in this index
        return out

    scores, got = index.search(vecs[:1], 5, exact=exact)
    assert not gone & set(got[0].tolist()) and np.isfinite(scores).all() and (got >= 0).all()


@pytest.mark.slow
def test_semantic_hits_rescore_an_approximate_index(sample_archive, tmp_path):
    import shutil

    from archive import Archive, store
    from archive import search as srch

    shutil.copy(sample_archive.db_path, tmp_path / "a.db")
    arc = Archive(tmp_path / "a.db", tmp_path / "idx")
    try:
        assert arc.rebuild_index(index_type="ivf-pq").index_type == "ivf-pq"
        index = arc._index()
        dim = index.dim
        some = store.chunk_ids(arc.db)[len(store.chunk_ids(arc.db)) // 2]
        query = store.vectors_for(arc.db, [some], dim)
        hits = srch.semantic_hits(arc.db, index, query, 5, srch.Filters())
        assert len(hits) >= 5
        for score, chunk in hits.values():  # every score is the true cosine, not the PQ estimate
            assert abs(score - float(store.vectors_for(arc.db, [chunk], dim)[0] @ query[0])) < 1e-5
    finally:
        arc.close()


# ---- the manifest is not trusted blindly (issue 13 item 6) -----------------------------------------------


def rewrite_manifest(index_dir, **fields):
    manifest = json.loads((index_dir / ix.MANIFEST).read_text())
    manifest.update(fields)
    (index_dir / ix.MANIFEST).write_text(json.dumps(manifest))


def finishes(fn, seconds=10):
    """fn's exception (or None), failing the test instead of hanging when fn blocks (a FIFO read)."""
    import threading

    box = []

    def run():
        try:
            fn()
            box.append(None)
        except Exception as e:  # noqa: BLE001 - handed to the test
            box.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, "blocked"
    return box[0]


@pytest.mark.parametrize("where", ["../outside.faiss", "absolute", "sub/chunks.1.faiss", "chunks.1.faiss.bak"])
def test_manifest_naming_a_file_outside_the_folder_is_corrupt(tmp_path, filled, where):
    index_dir = tmp_path / "idx"
    m = ix.save(filled[0], index_dir, model_fingerprint="", db_generation=1)
    target = tmp_path / "outside.faiss" if where == "absolute" else index_dir / where
    target.parent.mkdir(exist_ok=True)
    target.write_bytes((index_dir / m.file).read_bytes())  # a readable index, just not where it may be
    rewrite_manifest(index_dir, file=str(target) if where == "absolute" else where)
    with pytest.raises(ix.IndexCorrupt, match="chunks.<n>.faiss"):
        ix.load(index_dir)


def test_generation_file_that_is_a_symlink_is_corrupt(tmp_path, filled):
    index_dir = tmp_path / "idx"
    m = ix.save(filled[0], index_dir, model_fingerprint="", db_generation=1)
    (tmp_path / "elsewhere.faiss").write_bytes((index_dir / m.file).read_bytes())
    (index_dir / "chunks.7.faiss").symlink_to(tmp_path / "elsewhere.faiss")
    rewrite_manifest(index_dir, file="chunks.7.faiss")
    with pytest.raises(ix.IndexCorrupt, match="cannot open"):
        ix.load(index_dir)


@pytest.mark.parametrize("which", ["index", "manifest"])
def test_a_fifo_does_not_hang_the_reader(tmp_path, filled, which):
    ix.save(filled[0], tmp_path, model_fingerprint="", db_generation=1)
    if which == "index":
        os.mkfifo(tmp_path / "chunks.9.faiss")
        rewrite_manifest(tmp_path, file="chunks.9.faiss", size=0)
    else:
        (tmp_path / ix.MANIFEST).unlink()
        os.mkfifo(tmp_path / ix.MANIFEST)
    error = finishes(lambda: ix.load(tmp_path))
    assert isinstance(error, ix.IndexCorrupt) and "not a regular file" in str(error)


@pytest.mark.parametrize(
    "field,value",
    [
        ("generation", "2"),
        ("generation", True),
        ("file", 5),
        ("file", None),
        ("count", 500.0),
        ("max_chunk_id", "500"),
        ("dimensions", [16]),
        ("model_fingerprint", 1),
        ("index_type", "hnsw"),
        ("db_generation", None),
        ("size", "123"),
        ("sha256", 0),
        ("archive_id", 7),
    ],
)
def test_wrong_typed_manifest_fields_are_corrupt_not_a_type_error(tmp_path, filled, field, value):
    ix.save(filled[0], tmp_path, model_fingerprint="", db_generation=1)
    rewrite_manifest(tmp_path, **{field: value})
    with pytest.raises(ix.IndexCorrupt, match=field):
        ix.load(tmp_path)
    with pytest.raises(ix.IndexCorrupt):
        ix.LiveIndex(tmp_path).current()


def test_manifest_that_is_not_an_object_is_corrupt(tmp_path):
    (tmp_path / ix.MANIFEST).write_text("[1, 2]")
    with pytest.raises(ix.IndexCorrupt, match="not an object"):
        ix.load(tmp_path)


def test_a_save_without_manifest_never_rewrites_a_generation_file_a_reader_maps(tmp_path, filled):
    index, vecs = filled
    old = ix.save(index, tmp_path, model_fingerprint="", db_generation=1)
    reader, _ = ix.LiveIndex(tmp_path).current()  # maps chunks.1.faiss
    q = unit(2, seed=7)
    before = reader.search(q, 5)[1]
    (tmp_path / ix.MANIFEST).unlink()  # lost (or never written by a crashed save)
    other = ix.ChunkIndex(16)
    other.add(np.arange(1000, 1300), unit(300, seed=8))
    new = ix.save(other, tmp_path, model_fingerprint="", db_generation=2)
    assert new.generation == old.generation + 1 and new.file != old.file
    assert np.array_equal(reader.search(q, 5)[1], before)  # the mapped file was not rewritten in place
    assert ix.load(tmp_path)[0].ntotal == 300


@pytest.mark.parametrize("planted", ["chunks.2.faiss", "chunks.2.faiss.tmp", "manifest.json.tmp"])
def test_saving_never_writes_through_a_planted_symlink(tmp_path, filled, planted):
    index_dir, victim = tmp_path / "idx", tmp_path / "victim.txt"
    ix.save(filled[0], index_dir, model_fingerprint="", db_generation=1)
    victim.write_text("precious")
    (index_dir / planted).symlink_to(victim)
    m = ix.save(filled[0], index_dir, model_fingerprint="", db_generation=2)
    assert victim.read_text() == "precious"
    assert ix.load(index_dir, check_sha=True)[1].generation == m.generation
    assert not (index_dir / ix.MANIFEST).is_symlink()


def test_writer_lock_does_not_follow_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / ".lock").symlink_to(victim)
    with pytest.raises(ArchiveError, match="symlink"):
        with ix.writer_lock(tmp_path / "idx"):
            pass
    assert victim.read_text() == "precious"


# ---- one index folder per database (issue 13 item 7) -----------------------------------------------------


def test_an_index_of_another_archive_is_refused(tmp_path, filled):
    ix.save(filled[0], tmp_path, model_fingerprint="", db_generation=1, archive_id="archive-a")
    assert ix.load(tmp_path, archive_id="archive-a")[1].archive_id == "archive-a"
    with pytest.raises(ix.IndexMismatch, match="another archive"):
        ix.load(tmp_path, archive_id="archive-b")
    with pytest.raises(ArchiveError, match="another archive"):
        ix.LiveIndex(tmp_path, archive_id="archive-b").current()
    with pytest.raises(ArchiveError, match="another archive"):  # and a writer does not overwrite it
        ix.save(filled[0], tmp_path, model_fingerprint="", db_generation=9, archive_id="archive-b")
    assert ix.Manifest.read(tmp_path).db_generation == 1


def test_default_index_dir_is_per_database(tmp_path):
    a, b = ix.default_index_dir(tmp_path / "a.db"), ix.default_index_dir(tmp_path / "b.db")
    assert a != b and a.parent == b.parent == tmp_path / "indexes"


def test_default_index_dir_keeps_reading_an_old_shared_folder_of_this_database(tmp_path, filled):
    ix.save(filled[0], tmp_path / "indexes", model_fingerprint="", db_generation=1)  # before archive ids
    assert ix.default_index_dir(tmp_path / "a.db", "archive-a") == tmp_path / "indexes"
    ix.save(filled[0], tmp_path / "indexes", model_fingerprint="", db_generation=2, archive_id="archive-a")
    assert ix.default_index_dir(tmp_path / "a.db", "archive-a") == tmp_path / "indexes"
    assert ix.default_index_dir(tmp_path / "b.db", "archive-b") == tmp_path / "indexes" / "b.db"
