"""A small deterministic encoder for the logic tests: the bundled model's real tokenizer, hashed-word vectors.

It is not a model: texts that share words get close vectors (a hashed bag of words and word pairs), which is
enough to test loading, storing, indexing, searching and repairing without torch, in milliseconds. Every path
whose outcome depends on the real model keeps a real-model test (marked `slow`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from archive.embed import Encoder

_WORD = re.compile(r"\w+")


class HashEncoder(Encoder):
    """Drop-in for `archive.embed.Encoder`: same tokenizer and chunking, vectors from hashed words."""

    def __init__(self, dimensions: int = 64, **kwargs):
        super().__init__(None, **kwargs)
        self._dims = dimensions
        self.calls = 0  # encode() calls, for tests that count re-embedding

    @property
    def name(self) -> str:
        return f"hash-{self._dims}"

    @property
    def fingerprint(self) -> str:
        return f"hash-v1-{self._dims}"

    @property
    def dimensions(self) -> int:
        return self._dims

    def encode(self, texts: Sequence[str], progress=None) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self._dims), np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            if not words:
                out[row, 0] = 1.0
                continue
            grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
            h = np.array([zlib.crc32(g.encode()) for g in grams], np.uint32)
            # each gram adds +1 or -1 (its hash's top bit) at its hash's slot: one bincount, not a loop
            out[row] = np.bincount(h % self._dims, np.where(h >> 31, 1.0, -1.0), self._dims)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        if progress:
            progress(len(texts))
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def prepare_queries(self) -> None:
        """Nothing to export: there is no network behind these vectors."""
