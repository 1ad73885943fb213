"""Loading on Ray Data (`archive load --engine ray`): the same stages as a local load, spread over a cluster.

    files --read (tasks)--> raw records --parse, clean, chunk, sign (tasks)--> shard rows
          --embed (an actor pool: one model per actor, a GPU each when the cluster has them)--> shard rows
          --> the driver: the one writer (`ingest.write_prepared`), or Parquet shards (`--parquet-out DIR`)

Rows travel between stages in the shard schema (`shards.py`), so what reaches the driver is exactly what a
shard holds. Workers open the input files themselves (as Ray's own readers do: on a cluster the paths must be
reachable from every node). Order is preserved, so a URL that appears twice ends as its last copy, as locally.

Failures: a task whose worker dies is retried (TASK_RETRIES), an embedding actor that dies is restarted and
its batch resubmitted (ACTOR_RESTARTS); nothing is lost and nothing lands twice, since rows reach the writer
only once Ray hands them over and the writer upserts by article identity.

Ray is imported only here (`pip install news-archive[ray]`).
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path

import numpy as np

from . import shards
from .ingest import LoadOptions, LoadReport, LoadStopped, prepare_queries, write_prepared
from .models import ArchiveError, Rejection
from .prepare import Prepared, Preparer, TokenizerSpec, prepare_item
from .sources import RECORD_MAX_CHARS, parse_raw, read_raw, source_files

TASK_RETRIES = 3  # a read or prepare task whose worker dies runs again, up to this many times
ACTOR_RESTARTS = 3  # an embedding actor that dies is restarted, and its batch retried, up to this many times
SHARD_ARTICLES = 2048  # rows per Parquet shard written with --parquet-out
MAX_BODY_CHARS = 2_000_000  # as read_sources: bodies are capped at parse time, raw records at 4x that


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray on this machine's cores
    parquet_out: str | None = None  # write shards here instead of into the archive
    device: str = "auto"  # auto: the cluster's GPUs when it has any; cpu; cuda (fails without GPUs)
    actors: int | None = None  # embedding actors; None: one per GPU, else one per 4 CPUs
    articles_per_batch: int | None = None  # per embedding call; None: 512 on GPUs, 64 on CPUs
    # Granularity: Ray hands a task whole blocks, so small blocks let one big file fan out over many prepare
    # tasks and many embedding calls; records travel from the readers in rows of `records_per_row`.
    block_bytes: int = 1 << 20
    records_per_row: int = 16


@dataclass
class ShardsWritten:
    """What `--parquet-out` produced (the archive itself is untouched)."""

    paths: list[str] = field(default_factory=list)
    articles: int = 0
    chunks: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "shards": self.paths,
            "articles": self.articles,
            "chunks": self.chunks,
            "rejected": [r.to_dict() for r in self.rejected],
            "seconds": round(self.seconds, 2),
        }


@dataclass
class _Plan:
    actors: int
    gpus: int  # per actor: 0 or 1
    device: str
    threads: int | None  # torch threads per CPU actor
    batch: int


def load_ray(arc, paths: Iterable[str], opts: LoadOptions, ray_opts: RayOptions) -> LoadReport | ShardsWritten:
    """Load `paths` through Ray Data into the archive (or, with `parquet_out`, into Parquet shards)."""
    started = time.monotonic()
    ray = import_ray()
    shards.pyarrow()
    if ray_opts.parquet_out and opts.on_error == "stop":
        raise ArchiveError("--on-error stop needs a load into the archive; --parquet-out keeps rejections instead")
    arc.refuse_during_switch()  # as Archive.load: never load into a half-switched model
    files = input_files(paths, opts)  # (absolute path to open, path as given, for origins)
    encoder = arc.encoder
    spec = encoder.tokenizer_spec()
    if spec is None:
        raise ArchiveError(f"{encoder.path}: no tokenizer.json, which Ray workers need to chunk for this model")
    with ray_session(ray, ray_opts.address), data_context(ray_opts.block_bytes):
        plan = _plan(ray.cluster_resources(), ray_opts, encoder)
        known = None if ray_opts.parquet_out else str(Path(arc.db_path).resolve())
        tables = _pipeline(files, opts, spec, known, plan, encoder, ray_opts)
        if ray_opts.parquet_out:
            out = _write_shards(tables, Path(ray_opts.parquet_out), encoder.fingerprint, opts.progress)
        else:
            out = _write_archive(arc, tables, opts)
    out.seconds = time.monotonic() - started
    if isinstance(out, LoadReport) and out.rejected and opts.on_error == "stop":
        raise LoadStopped(f"stopped at {out.rejected[-1]} (everything before it was loaded)")
    return out


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ArchiveError("--engine ray needs Ray Data: pip install news-archive[ray]") from e
    return ray


def input_files(paths: Iterable[str], opts: LoadOptions) -> list[tuple[str, str]]:
    """Each input file as (absolute path, for workers elsewhere; path as given, for record origins), checked
    as a local load checks them."""
    paths = list(paths)
    if "-" in paths:
        raise ArchiveError("--engine ray reads files on its workers, not stdin; save the input to a file first")
    read_raw(paths, opts.field_map)  # raises SourceError / ArchiveError for missing paths or a bad field map
    return [(os.path.abspath(f), f) for f in source_files(paths)]


@contextmanager
def data_context(block_bytes: int):
    """Ray Data settings for this load, restored afterwards (the caller's session may run other datasets)."""
    import ray.data as rd

    ctx = rd.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.target_max_block_size)
    ctx.enable_progress_bars = False  # the CLI draws its own bar
    ctx.execution_options.preserve_order = True  # a URL given twice ends as its last copy, as locally
    ctx.target_max_block_size = block_bytes
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.target_max_block_size = saved


@contextmanager
def ray_session(ray, address: str | None):
    """Connect to `address`, or start a quiet local Ray on all cores (shut down again afterwards)."""
    if ray.is_initialized():  # the caller's own session (a test, a notebook): use it as it is
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report
    kwargs = {} if address else {"num_cpus": os.cpu_count()}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _plan(resources: dict, ray_opts: RayOptions, encoder) -> _Plan:
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if ray_opts.device == "cuda" and not gpus:
        raise ArchiveError("--device cuda, but the Ray cluster has no GPU")
    use_gpu = gpus > 0 and ray_opts.device != "cpu" and encoder.backend == "torch"
    actors = ray_opts.actors or (gpus if use_gpu else max(1, cpus // 4))
    return _Plan(
        actors=actors,
        gpus=1 if use_gpu else 0,
        device="cuda" if use_gpu else "cpu",
        threads=None if use_gpu else max(1, cpus // actors),
        batch=ray_opts.articles_per_batch or (512 if use_gpu else 64),
    )


def _pipeline(
    files: list[tuple[str, str]],
    opts: LoadOptions,
    spec: TokenizerSpec,
    known: str | None,
    plan: _Plan,
    encoder,
    ray_opts,
):
    """Shard-schema pyarrow tables, embedded, in input order, as the cluster produces them."""
    import ray.data as rd

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    dim = encoder.dimensions
    items = [{"path": path, "shown": shown} for path, shown in files]
    ds = rd.from_items(items, override_num_blocks=max(1, len(files)))
    with warnings.catch_warnings():  # Ray >= 2.5x deprecates retry arguments here, but still honours them
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        # Different num_cpus keeps Ray from fusing reading and preparing into one task per file.
        ds = ds.map_batches(
            read_files,
            batch_size=1,
            num_cpus=0.25,
            max_retries=TASK_RETRIES,
            fn_kwargs={"encoding": opts.encoding, "records_per_row": ray_opts.records_per_row},
        )
        ds = ds.map_batches(
            prepare_rows,
            batch_size=None,
            num_cpus=1,
            max_retries=TASK_RETRIES,
            fn_kwargs={"spec": spec, "db_path": known, "field_map": opts.field_map, "dimensions": dim},
        )
        ds = ds.map_batches(
            EmbedActor,
            batch_size=plan.batch,
            batch_format="pyarrow",
            compute=rd.ActorPoolStrategy(size=plan.actors),
            num_cpus=1,
            num_gpus=plan.gpus,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=ACTOR_RESTARTS,
            fn_constructor_kwargs={
                "model_path": str(encoder.path),
                "backend": encoder.backend,
                "device": plan.device,
                "fingerprint": encoder.fingerprint,
                "threads": plan.threads,
            },
        )
    return ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2)


# ---- the stages (module-level, so Ray pickles them by reference) ---------------------------------------


def read_files(batch: dict, encoding: str, records_per_row: int) -> Iterator[dict]:
    """A read task: each file's raw records (or rejections), `records_per_row` pickled to a row. Origins name
    the file as the user gave it, as in a local load."""
    for path, shown in zip(map(str, batch["path"]), map(str, batch["shown"])):
        raws = read_raw([path], encoding=encoding, max_record_chars=max(RECORD_MAX_CHARS, 4 * MAX_BODY_CHARS))
        while task := list(islice(raws, records_per_row)):
            for raw in task:
                if raw.origin.startswith(path):
                    raw.origin = shown + raw.origin[len(path) :]
            yield {"raw": np.array([pickle.dumps(task)], dtype=object)}


def prepare_rows(batch: dict, spec: TokenizerSpec, db_path: str | None, field_map: dict | None, dimensions: int):
    """A prepare task: parse, clean, chunk and sign each record (as a local worker process does)."""
    preparer = _preparer(spec, db_path)
    items = []
    for blob in batch["raw"]:
        for raw in pickle.loads(blob):
            item = raw if isinstance(raw, Rejection) else parse_raw(raw, field_map, MAX_BODY_CHARS)
            items.append(prepare_item(preparer, item))
    return shards.to_table(items, dimensions)


@lru_cache(maxsize=4)
def _preparer(spec: TokenizerSpec, db_path: str | None) -> Preparer:
    """One tokenizer per worker process, not one per batch."""
    return Preparer(spec.chunker(), db_path)


class EmbedActor:
    """Holds one encoder for its lifetime and fills in the vectors of the rows it is given."""

    def __init__(self, model_path: str, backend: str, device: str, fingerprint: str, threads: int | None):
        from .embed import Encoder

        self.encoder = Encoder(model_path, backend=backend, device=device)
        if self.encoder.fingerprint != fingerprint:  # a node with another model at the same path
            raise ArchiveError(f"{model_path} on this node is model {self.encoder.fingerprint}, not {fingerprint}")
        if threads and backend == "torch" and device == "cpu":
            import torch

            torch.set_num_threads(threads)  # Ray sets one thread per reserved CPU; the actor owns its share

    def __call__(self, table):
        chunks = table.column("chunks").combine_chunks()
        texts = chunks.flatten().field("embed_text").to_pylist()
        vectors = self.encoder.encode(texts) if texts else np.zeros((0, self.encoder.dimensions), np.float32)
        counts = chunks.value_lengths().fill_null(0).to_numpy()
        ends = np.cumsum(counts)
        known = table["known_unchanged"].to_pylist()
        skip = [r is not None or bool(k) for r, k in zip(table["rejection"].to_pylist(), known)]
        per_row = [None if s else vectors[e - n : e] for s, n, e in zip(skip, counts, ends)]
        column = shards.vectors_array(per_row, self.encoder.dimensions)
        return table.set_column(
            table.schema.get_field_index("vectors"), shards.vectors_field(self.encoder.dimensions), column
        )


# ---- the driver's side ---------------------------------------------------------------------------------


def _write_archive(arc, tables: Iterable, opts: LoadOptions) -> LoadReport:
    rejected: list[Rejection] = []

    def batches() -> Iterator[list[Prepared]]:
        for table in tables:
            items = shards.from_table(table)
            if opts.on_error == "stop":
                first = next((i for i, x in enumerate(items) if isinstance(x, Rejection)), None)
                if first is not None:
                    rejected.append(items[first])
                    yield items[:first]
                    return
            rejected.extend(x for x in items if isinstance(x, Rejection))
            yield [x for x in items if isinstance(x, Prepared)]

    report = write_prepared(arc, batches(), opts.progress)
    report.rejected = rejected + report.rejected
    if report.chunks_embedded:
        prepare_queries(arc.encoder)  # as a local load: the server's query encoder, made once per machine
    return report


def _write_shards(tables: Iterable, out: Path, fingerprint: str, progress=None) -> ShardsWritten:
    """Shards of about SHARD_ARTICLES rows each, named by run so that reruns never overwrite each other."""
    import pyarrow as pa

    out.mkdir(parents=True, exist_ok=True)
    run = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    result, pending = ShardsWritten(), []

    def flush() -> None:
        path = out / f"{run}-{len(result.paths):05d}.parquet"
        shards.write_table(path, pa.concat_tables(pending), fingerprint)
        result.paths.append(str(path))
        pending.clear()

    for table in tables:
        reasons = table["rejection"].to_pylist()
        result.rejected += [Rejection(o, r) for o, r in zip(table["origin"].to_pylist(), reasons) if r is not None]
        chunks = int(table["chunks"].combine_chunks().value_lengths().fill_null(0).to_numpy().sum())
        result.articles, result.chunks = result.articles + reasons.count(None), result.chunks + chunks
        pending.append(table)
        if progress:
            progress(reasons.count(None), result.chunks)
        if sum(t.num_rows for t in pending) >= SHARD_ARTICLES:
            flush()
    if pending:
        flush()
    return result
