"""dedupe.signature(): the blocked MinHash equals the one-matrix formula, and a 2 MB article stays small."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
from conftest import distinct_rows

from archive import dedupe


def one_matrix_signature(hashed: np.ndarray) -> np.ndarray:
    """The formula signature() used before blocking: every shingle against every permutation at once."""
    with np.errstate(over="ignore"):
        mixed = (hashed[:, None] * dedupe._A[None, :] + dedupe._B[None, :]) >> np.uint64(32)
    return mixed.min(axis=0)


def test_blocked_signature_equals_the_one_matrix_formula(news_csv: Path) -> None:
    bodies = [r["text"] for r in distinct_rows(news_csv, 20, 3000)]
    long_body = " ".join(bodies)  # more shingles than one block, so blocks really are combined
    for body in [*bodies[:3], long_body, "too short"]:
        hashed = dedupe.shingles(body)
        assert np.array_equal(dedupe.signature(hashed), one_matrix_signature(hashed))
    assert len(dedupe.shingles(long_body)) > 4096


def test_signature_of_a_2mb_article_stays_small(news_csv: Path) -> None:
    rows = distinct_rows(news_csv, 400, 2000)
    words = " ".join(r["text"] for r in rows).split()
    body = " ".join(words[i % len(words)] + str(i // len(words)) for i in range(350_000))  # ~350k distinct shingles
    assert len(body) > 2_000_000
    hashed = dedupe.shingles(body)
    tracemalloc.start()
    try:
        sig = dedupe.signature(hashed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sig.shape == (dedupe.NUM_PERM,)
    full_matrix = len(hashed) * dedupe.NUM_PERM * 8  # one (shingles x NUM_PERM) uint64 matrix: ~350 MB here
    assert peak < 32 * 2**20 and peak < full_matrix / 10, (peak, full_matrix)
