"""Optional re-ranking: a cross-encoder reads the query beside each candidate and re-orders the top of a search.

The model is ms-marco-MiniLM-L-12-v2 as int8 ONNX (`archive models install reranker`), run with onnxruntime and
the tokenizers library: no torch. Each candidate is read as its title plus its best passage (the chunk that
matched), which is shorter than title plus the body's start and so faster; one batch per query. It is slow on a
CPU (seconds a query), so the shells turn it on only when asked, or by default where a GPU is present.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import registry
from .embed import ort_options
from .models import ArchiveError, Result

NAME = "reranker"
POOL = 20  # how many of the first-stage results are re-read (the issue measured the hybrid top-20)
MAX_TOKENS = 512  # query + title + passage; a chunk is at most 384 tokens, so nothing real is cut
_SESSIONS: dict[str, object] = {}
_LOCK = threading.Lock()


def installed() -> Path | None:
    return registry.installed_path(NAME)


def not_installed() -> ArchiveError:
    return ArchiveError(f"re-ranking needs the re-ranker model, which is not installed here; "
                        f"run {registry.install_hint(NAME)}")  # fmt: skip


def gpu_present() -> bool:
    """Whether onnxruntime, which runs the re-ranker, can run it on a CUDA GPU: an NVIDIA device and a CUDA
    build of onnxruntime (the plain wheel runs on the CPU only, where re-ranking costs seconds a query)."""
    if not (Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@lru_cache(maxsize=1)
def default_on() -> bool:
    """Re-rank by default only where the re-ranker is installed and can run on a GPU."""
    return installed() is not None and gpu_present()


def document(title: str | None, passage: str) -> str:
    """What the cross-encoder reads of a candidate: its title, then the passage."""
    title = (title or "").strip()
    return f"{title}\n{passage.strip()}" if title else passage.strip()


class Reranker:
    """Scores (query, document) pairs with the cross-encoder; higher is more relevant."""

    def __init__(self, path: str | os.PathLike | None = None, *, max_tokens: int = MAX_TOKENS):
        folder = Path(path) if path else installed()
        if folder is None:
            raise not_installed()
        self.path = folder
        self.max_tokens = max_tokens
        self._tokenizer = self._load_tokenizer()
        self._session = _session(folder / "model.onnx")
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _load_tokenizer(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tok.enable_truncation(self.max_tokens, strategy="longest_first")
        tok.no_padding()  # the file pads every pair to 512; padding to the batch's longest is much cheaper
        tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")
        return tok

    def scores(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """The relevance logit of each document for the query, in one batch."""
        if not documents:
            return np.zeros(0, dtype=np.float32)
        enc = self._tokenizer.encode_batch([(query, d) for d in documents])
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        logits = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        return logits.reshape(len(documents)).astype(np.float32)

    def rerank(self, query: str, results: list[Result], pool: int = POOL) -> list[Result]:
        """The first `pool` results re-ordered by the cross-encoder (score: its relevance, 0 to 1), the rest after."""
        head, tail = results[:pool], results[pool:]
        logits = self.scores(query, [document(r.title, r.passage) for r in head])
        probs = 1.0 / (1.0 + np.exp(-logits))
        order = np.argsort(-logits, kind="stable")
        return [replace(head[i], score=round(float(probs[i]), 4)) for i in order] + tail


def _session(model: Path):
    """One onnxruntime session per model file in the process (the plugin's threads share it)."""
    import onnxruntime as ort

    with _LOCK:
        if str(model) not in _SESSIONS:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in ort.get_available_providers()]  # fmt: skip
            _SESSIONS[str(model)] = ort.InferenceSession(str(model), ort_options(), providers=providers)
        return _SESSIONS[str(model)]
