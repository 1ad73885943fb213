import json

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
