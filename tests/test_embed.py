"""The Encoder with the real bundled model, on both backends (the ONNX export is cached after the first run)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from archive import Archive, embed
from archive.embed import Encoder
from archive.models import ArchiveError
from archive.sample import news_rows

SIMILAR = (
    "Cyclone Debbie made landfall in Queensland, bringing destructive winds and flooding.",
    "The storm hit the Queensland coast with heavy rain and gales, flooding towns.",
)
UNRELATED = "The central bank left interest rates unchanged and said inflation was on target."


@pytest.fixture(scope="module")
def torch_encoder():
    return Encoder()


@pytest.fixture(scope="module")
def onnx_encoder():
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    return Encoder(backend="onnx")


@pytest.fixture(scope="module")
def news_texts(news_csv):
    """Sixteen real article bodies (long enough to fill the 256-token window) and four short titles."""
    rows = news_rows(news_csv)[:400]
    bodies = [r["text"] for r in rows if len(r["text"]) > 1500][:16]
    titles = [r["title"] for r in rows if r["title"].strip()][:4]
    return bodies + titles


@pytest.fixture(params=["torch", "onnx"])
def encoder(request, torch_encoder, onnx_encoder):
    return torch_encoder if request.param == "torch" else onnx_encoder


@pytest.mark.slow
def test_dimensions_and_unit_norm(encoder):
    vecs = encoder.encode(["hello world", "a much longer sentence about flooding in northern Queensland"])
    assert vecs.shape == (2, encoder.dimensions) == (2, 384)
    assert vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_empty_input(encoder):
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_order_is_preserved(encoder):
    texts = ["short", UNRELATED, SIMILAR[0] * 3, "a medium length sentence about nothing much"]
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    # int8 activations are quantised per batch (padding included), so very different batch-mates move a
    # vector a little; the encoder sorts by length, so real batches are of like texts
    floor = 0.999 if encoder.backend == "torch" else 0.97
    assert np.all(np.sum(together * alone, axis=1) > floor)
    assert np.argmax(together @ alone.T, axis=1).tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_similar_texts_are_closer_than_unrelated(encoder):
    a, b, c = encoder.encode([*SIMILAR, UNRELATED])
    assert a @ b > 0.6
    assert a @ b > a @ c + 0.3


@pytest.mark.slow
def test_onnx_matches_torch_on_real_text(torch_encoder, onnx_encoder, news_texts):
    ref = torch_encoder.encode(news_texts)
    got = onnx_encoder.encode(news_texts)
    cos = np.sum(ref * got, axis=1)
    assert cos.min() > 0.98, cos
    assert cos.mean() > 0.99, cos


def test_backend_is_part_of_the_identity(torch_encoder, onnx_encoder):
    assert torch_encoder.model_fingerprint == onnx_encoder.model_fingerprint
    assert torch_encoder.fingerprint != onnx_encoder.fingerprint
    assert onnx_encoder.describe()["backend"] == "onnx"
    assert onnx_encoder.describe()["model_fingerprint"] == onnx_encoder.fingerprint
    assert onnx_encoder.onnx_path.exists() and onnx_encoder.model_fingerprint in str(onnx_encoder.onnx_path)


@pytest.mark.slow
def test_an_int8_export_that_breaks_the_model_is_refused(onnx_encoder, tmp_path, monkeypatch):
    """mpnet's int8 export gave cosine ~0.01 to its fp32 vectors; a MiniLM export with one weight matrix
    scrambled stands for it here (the same on every CPU), and the onnx backend refuses it."""
    import onnx
    from onnx import numpy_helper

    onnx_encoder.encode(["the real export exists"])
    real = onnx_encoder.onnx_file("fp32").parent
    monkeypatch.setenv("NEWS_ARCHIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(embed, "_MODELS", {})  # the process keeps one session per model folder
    enc = Encoder(backend="onnx")
    cache = enc.onnx_file("int8").parent
    shutil.copytree(real, cache, ignore=shutil.ignore_patterns("model-int8*"))
    graph = onnx.load(str(cache / "model-fp32.onnx"))
    biggest = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    biggest.CopyFrom(
        numpy_helper.from_array(
            np.random.default_rng(0).permutation(weights.ravel()).reshape(weights.shape), biggest.name
        )
    )
    onnx.save(graph, str(cache / "model-int8.onnx"))
    with pytest.raises(ArchiveError, match="int8 ONNX export does not keep the model's vectors.*--backend torch"):
        enc.encode(["flooding in Queensland"])
    assert json.loads((cache / "model-int8.check.json").read_text())["min_cosine"] < 0.97


def test_unknown_backend_is_refused():
    with pytest.raises(ArchiveError, match="backend must be one of"):
        Encoder(backend="tensorrt")


@pytest.mark.slow
def test_archive_refuses_to_mix_backends(sample_archive):
    arc = Archive(sample_archive.db_path, sample_archive.index_dir, backend="onnx")
    try:
        with pytest.raises(ArchiveError, match="incompatible vectors.*--backend onnx"):
            _ = arc.encoder
    finally:
        arc.close()


@pytest.mark.slow
def test_onnx_query_path_does_not_import_torch(onnx_encoder):
    onnx_encoder.encode(["make sure the export exists"])
    code = (
        "import sys; from archive.embed import Encoder; "
        "v = Encoder(backend='onnx').encode(['flooding in Queensland']); "
        "assert v.shape == (1, 384); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_torch_queries_use_the_fp32_export_with_the_same_vectors(torch_encoder, news_texts):
    torch_encoder.prepare_queries()
    assert torch_encoder.onnx_file("fp32").exists()
    cos = np.sum(torch_encoder.encode(news_texts) * torch_encoder.encode_queries(news_texts), axis=1)
    assert cos.min() > 0.9999, cos


@pytest.mark.slow
def test_a_loaded_torch_archive_answers_queries_without_torch(sample_archive):
    """The load made the fp32 export, so a fresh process (a server) searches a torch archive torch-free."""
    code = (
        "import sys; from archive import Archive; "
        f"arc = Archive({str(sample_archive.db_path)!r}, {str(sample_archive.index_dir)!r}); arc.warm(); "
        "hits = arc.search('cyclone hits Queensland', k=3, mode='semantic'); "
        "print(arc.encoder.backend, 'Debbie' in hits[0].title, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["torch", "True", "False"], out.stderr[-2000:]


# ---- devices: the CUDA path's logic, checked on the CPU (CI has no GPU) ------------------------------------


@pytest.mark.slow
def test_fp16_vectors_stay_within_cosine_0999_of_fp32_on_real_chunks(torch_encoder, news_texts):
    """The GPU path encodes in fp16; the same half-precision weights run on the CPU here give the figure that
    lets CUDA and CPU vectors share one index (the fingerprint does not change with the device)."""
    half = Encoder(precision="fp16")
    texts = news_texts[:6]
    a, b = torch_encoder.encode(texts), half.encode(texts)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() >= 0.999
    assert half.fingerprint == torch_encoder.fingerprint and half.precision_label == "cpu-fp16"


@pytest.mark.slow
def test_device_choice_and_its_errors():
    assert Encoder(device="auto").device in ("cpu", "cuda")
    assert Encoder(device="cpu").precision == "fp32" and Encoder(device="cpu").batch_size == 32
    assert Encoder(backend="onnx", device="auto").device == "cpu"  # onnx runs on the CPU whatever is asked
    with pytest.raises(ArchiveError, match="onnx backend runs on the CPU"):
        Encoder(backend="onnx", device="cuda")
    with pytest.raises(ArchiveError, match="device must be one of"):
        Encoder(device="tpu")


class _OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which is what `_is_oom` recognises."""


def test_out_of_memory_halves_the_batch_and_goes_on():
    from archive.embed import _is_oom, halving_on_oom

    encoder = Encoder(batch_size=1024)
    seen = []

    def run(batch):  # a device that holds at most 200 texts a forward pass
        seen.append(encoder.batch_size)
        if encoder.batch_size > 200:
            raise _OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.ones((len(batch), 2), np.float32)

    out = halving_on_oom(run, ["t"] * 700, encoder, _is_oom)
    assert out.shape == (700, 2) and seen == [1024, 512, 256, 128] and encoder.batch_size == 128
    with pytest.raises(ValueError):  # anything but running out of memory is not retried
        halving_on_oom(lambda b: (_ for _ in ()).throw(ValueError("bad")), ["t"], encoder, _is_oom)


def test_an_archive_records_where_its_vectors_were_made(tmp_path):
    from hash_encoder import HashEncoder

    arc = Archive(tmp_path / "a.db", tmp_path / "idx", create=True, encoder=HashEncoder())
    arc.record_model()
    assert arc.meta["devices"] == "cpu-fp32"
    arc._encoder = HashEncoder(precision="fp16")
    arc.record_model()
    assert arc.meta["devices"] == "cpu-fp16,cpu-fp32" and arc.stats()["devices"] == "cpu-fp16,cpu-fp32"
