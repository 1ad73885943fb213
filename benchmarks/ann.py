"""ANN: recall@10 against exact search, latency and memory of each index type at 100k and 1M vectors.

    python -m benchmarks.ann                       # 100k and 1M
    python -m benchmarks.ann --sizes 100000        # quicker
    python -m benchmarks.ann --scale 2000000       # streaming build at scale, JSON record in benchmarks/results/

The vectors are synthesised from real ones: sentences of NewsArticles embedded with the bundled model (onnx
backend, cached), then mixed pairwise with a little noise, so the neighbourhood structure is that of real
news embeddings. Queries are held-out real sentence vectors. Baseline: exact (flat) search, same run.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from archive import index as ix
from archive.embed import Encoder, cache_dir
from archive.sample import fetch_news_articles


def real_vectors(n: int = 3000) -> np.ndarray:
    """n sentence vectors from NewsArticles bodies (cached: encoding them takes a minute)."""
    enc = Encoder(backend="onnx")
    path = cache_dir() / "bench" / f"sentences-{enc.fingerprint}-{n}.npy"
    if path.exists():
        return np.load(path)
    sentences: list[str] = []
    with open(fetch_news_articles(), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            sentences += [s for s in re.split(r"(?<=[.!?])\s+", row["text"]) if 60 < len(s) < 400][:3]
            if len(sentences) >= n:
                break
    vecs = enc.encode(sentences[:n])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def synthesise(base: np.ndarray, n: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        w = rng.uniform(0.5, 1.0, (m, 1)).astype(np.float32)
        v = w * base[rng.integers(0, len(base), m)] + (1 - w) * base[rng.integers(0, len(base), m)]
        v += rng.normal(0, noise, v.shape).astype(np.float32)
        out[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def latency_ms(
    index: ix.ChunkIndex, queries: np.ndarray, k: int = 10, exact=None, cpu: list | None = None
) -> tuple[float, float, np.ndarray]:
    """p50 and p95 wall ms per query and the ids found; `cpu` collects each query's thread CPU ms (what a
    query costs on an idle core, whatever else the machine is running)."""
    times, found = [], []
    for q in queries:
        t, c = time.perf_counter(), time.thread_time()
        _, ids = index.search(q, k, exact=exact)
        times.append((time.perf_counter() - t) * 1000)
        if cpu is not None:
            cpu.append((time.thread_time() - c) * 1000)
        found.append(ids[0])
    return float(np.percentile(times, 50)), float(np.percentile(times, 95)), np.array(found)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def memory_bytes(index: ix.ChunkIndex, n: int, dim: int) -> int:
    if index.kind == "flat":
        return n * (4 * dim + 8)
    ivf = faiss.extract_index_ivf(index.index)
    return n * (ivf.code_size + 8) + ivf.nlist * dim * 4


def run_size(n: int, base: np.ndarray, queries: np.ndarray, nprobes: list[int]) -> list[dict]:
    dim = base.shape[1]
    vecs, ids = synthesise(base, n), np.arange(1, n + 1, dtype=np.int64)
    rows = []
    t = time.perf_counter()
    flat = ix.build(dim, ids, vecs, "flat")
    flat_build = time.perf_counter() - t
    p50, p95, exact = latency_ms(flat, queries)
    flat_mem = memory_bytes(flat, n, dim)
    rows.append(dict(n=n, kind="flat", nprobe="-", build=flat_build, p50=p50, p95=p95, recall=1.0, mem=flat_mem))
    del flat
    for kind in ("ivf", "ivf-sq8", "ivf-pq"):
        t = time.perf_counter()
        index = ix.build(dim, ids, vecs, kind)
        build = time.perf_counter() - t
        default = index.nprobe
        for nprobe in sorted(set(nprobes) | {default}):
            index.nprobe = nprobe
            p50, p95, found = latency_ms(index, queries, exact=lambda i: vecs[i - 1])  # re-scores lossy kinds
            mark = "*" if nprobe == default else ""
            rows.append(
                dict(n=n, kind=kind, nprobe=f"{nprobe}{mark}", build=build, p50=p50, p95=p95,
                     recall=recall(found, exact), mem=memory_bytes(index, n, dim))
            )  # fmt: skip
        del index
    for r in rows:
        r["speedup"] = rows[0]["p50"] / r["p50"]
        r["mem_ratio"] = r["mem"] / flat_mem
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'vectors':>9} {'index':8} {'nprobe':>6} {'build s':>8} {'p50 ms':>7} {'p95 ms':>7} {'x flat':>6}"
    print(head + f" {'recall@10':>9} {'memory MB':>9} {'x flat':>6}")
    for r in rows:
        print(
            f"{r['n']:>9,} {r['kind']:8} {r['nprobe']:>6} {r['build']:8.1f} {r['p50']:7.2f} {r['p95']:7.2f} "
            f"{r['speedup']:6.1f} {r['recall']:9.3f} {r['mem'] / 2**20:9.0f} {r['mem_ratio']:6.2f}"
        )


# ---- at scale: a streaming build, re-scored from a memory-mapped file of the true vectors ---------------

BATCH = 100_000
TARGET = 10_000_000


def write_truth(path: Path, base: np.ndarray, n: int) -> None:
    """n synthesised unit vectors as a float32 .npy, written batch by batch (never all in memory)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, base.shape[1])})
        for start in range(0, n, BATCH):
            f.write(synthesise(base, min(BATCH, n - start), seed=1000 + start).tobytes())


def file_batches(path: Path, n: int, dim: int):
    """`batches` for build_streaming: (ids, vectors) read from the file by plain reads, as from SQLite."""
    offset = np.load(path, mmap_mode="r").offset

    def batches():
        with open(path, "rb") as f:
            for start in range(0, n, BATCH):
                f.seek(offset + start * dim * 4)
                m = min(BATCH, n - start)
                vecs = np.fromfile(f, np.float32, m * dim).reshape(m, dim)
                yield np.arange(start + 1, start + m + 1, dtype=np.int64), vecs

    return batches


def exact_top(batches, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k ids per query by brute force over every batch (the baseline)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for ids, vecs in batches():
        s = np.hstack([best_s, queries @ vecs.T])
        i = np.hstack([best_i, np.broadcast_to(ids, (len(queries), len(ids)))])
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i  # in no order: recall compares sets


def rss_mb(field: str = "VmRSS") -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Restart the process's peak-RSS count (VmHWM), so it measures the build alone (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def scale_kind(kind: str, n: int, dim: int, batches, truth: np.ndarray, queries, exact_ids, nprobes) -> list[dict]:
    """Build one kind by streaming, save it, and measure recall@10 and latency per nprobe (re-scored)."""
    marks: list[float] = []

    def timed():  # the first pass samples for training, the second adds: time each
        marks.append(time.perf_counter())
        return batches()

    rss_before = rss_mb()
    reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    index = ix.build_streaming(dim, timed, n, kind)
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = rss_mb("VmHWM")
    train = (marks[1] - marks[0]) if len(marks) > 1 else 0.0
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        t = time.perf_counter()
        manifest = ix.save(index, Path(tmp), model_fingerprint="bench", db_generation=1)
        save_s = time.perf_counter() - t
    rows, default = [], index.nprobe
    for nprobe in sorted(set(nprobes) | {default}):
        index.nprobe = nprobe
        cpu: list[float] = []
        p50, p95, found = latency_ms(index, queries, exact=lambda ids: truth[ids - 1], cpu=cpu)
        raw = recall(index.search(queries, 10)[1], exact_ids)
        rows.append(
            dict(n=n, kind=kind, nprobe=nprobe, default_nprobe=nprobe == default, build_s=round(build, 1),
                 train_s=round(train, 1), add_s=round(build - train, 1), save_s=round(save_s, 1),
                 rss_before_mb=round(rss_before), peak_rss_mb=round(peak), index_bytes=manifest.size,
                 code_bytes=ix.faiss.extract_index_ivf(index.index).code_size, nlist=ix.ivf_lists(n),
                 recall_at_10=round(recall(found, exact_ids), 4), recall_at_10_raw=round(raw, 4),
                 rescore_depth=ix.rescore_depth(10), p50_ms=round(p50, 2), p95_ms=round(p95, 2),
                 build_cpu_s=round(build_cpu, 1), p50_cpu_ms=round(float(np.percentile(cpu, 50)), 2),
                 p95_cpu_ms=round(float(np.percentile(cpu, 95)), 2))
        )  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def extrapolate(row: dict, dim: int, target: int = TARGET) -> dict:
    """The row's kind at `target` vectors, from measured rates: codes and ids grow with n; training k-means
    over nlist*64 points against nlist centroids grows with nlist^2 ~ n; adding assigns each vector against
    nlist centroids (~ n^1.5); a query scans nprobe lists of n/nlist vectors (~ sqrt n)."""
    r, n = target / row["n"], row["n"]
    nlist = ix.ivf_lists(target)
    index_bytes = target * (row["code_bytes"] + 8) + nlist * dim * 4
    sample_bytes = nlist * ix.TRAIN_PER_LIST * dim * 4
    return dict(
        n=target, kind=row["kind"], nprobe=row["nprobe"], nlist=nlist, index_bytes=index_bytes,
        build_s=round(row["train_s"] * r + row["add_s"] * r**1.5),
        build_cpu_s=round(row["build_cpu_s"] * r**1.5),  # an upper bound: training grows only ~ n
        p95_cpu_ms=round(row["p95_cpu_ms"] * r**0.5, 1),
        peak_rss_mb=round(row["rss_before_mb"] + (index_bytes + sample_bytes + BATCH * dim * 4) / 2**20),
        p95_ms=round(row["p95_ms"] * r**0.5, 1), measured_at=n,
    )  # fmt: skip


def run_scale(n: int, kinds: list[str], nprobes: list[int], queries: np.ndarray, base: np.ndarray, keep: bool):
    dim = base.shape[1]
    path = cache_dir() / "bench" / f"scale-{n}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not path.exists():
        write_truth(path, base, n)
    batches = file_batches(path, n, dim)
    exact_ids = exact_top(batches, queries)
    prep = time.perf_counter() - t
    truth = np.load(path, mmap_mode="r")  # the re-scoring source here; an archive reads SQLite instead
    rows = []
    for kind in kinds:
        rows += scale_kind(kind, n, dim, batches, truth, queries, exact_ids, nprobes)
    del truth
    if not keep:
        path.unlink()
    return rows, prep


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    return dict(cpu=cpu, cores=os.cpu_count(), faiss_threads=ix.faiss.omp_get_max_threads(),
                mem_gb=round(mem / 2**20, 1), platform=platform.platform(), load_avg=os.getloadavg())  # fmt: skip


def commit() -> str:
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=Path(__file__).parent)
    head = run(["git", "rev-parse", "HEAD"]).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "--", "archive/index.py", "benchmarks/ann.py"]).stdout.strip()
    return head + ("+dirty" if dirty else "")


def scale_main(args, queries: np.ndarray, base: np.ndarray) -> dict:
    kinds = args.kinds.split(",")
    rows, prep = run_scale(args.scale, kinds, [int(p) for p in args.nprobe.split(",")], queries, base, args.keep)
    chosen = [r for r in rows if r["default_nprobe"]]
    record = dict(
        benchmark="ann-scale", date=datetime.now(timezone.utc).isoformat(timespec="seconds"), commit=commit(),
        command="python -m benchmarks.ann " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        machine=machine(), versions=dict(python=platform.python_version(), faiss=ix.faiss.__version__,
                                         numpy=np.__version__),
        setup=dict(vectors=args.scale, dim=base.shape[1], queries=len(queries), k=10, batch=BATCH, prep_s=round(prep),
                   rescore_source="memory-mapped float32 .npy of the true vectors (an archive reads SQLite)",
                   vectors_from="NewsArticles sentences (bundled model, onnx), mixed pairwise + noise 0.02"),
        rows=rows, extrapolated=[extrapolate(r, base.shape[1]) for r in chosen],
    )  # fmt: skip
    out = Path(args.out or Path(__file__).parent / "results" / f"ann-scale-{args.scale}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print_scale(record)
    print(f"record: {out}")
    return record


def print_scale(record: dict) -> None:
    print(f"{'vectors':>11} {'index':7} {'nprobe':>6} {'build s':>8} {'peak RSS MB':>11} {'index MB':>9} "
          f"{'recall@10':>9} {'(raw)':>6} {'p50 ms':>7} {'p95 ms':>7}")  # fmt: skip
    for r in record["rows"]:
        print(
            f"{r['n']:>11,} {r['kind']:7} {r['nprobe']:>5}{'*' if r['default_nprobe'] else ' '} {r['build_s']:8.0f} "
            f"{r['peak_rss_mb']:11,} {r['index_bytes'] / 2**20:9.0f} {r['recall_at_10']:9.3f} "
            f"{r['recall_at_10_raw']:6.3f} {r['p50_ms']:7.2f} {r['p95_ms']:7.2f}"
        )
    for e in record["extrapolated"]:
        print(
            f"{e['n']:>11,} {e['kind']:7} {e['nprobe']:>5}~ {e['build_s']:8.0f} {e['peak_rss_mb']:11,} "
            f"{e['index_bytes'] / 2**20:9.0f} {'-':>9} {'-':>6} {'-':>7} {e['p95_ms']:7.1f}  (extrapolated)"
        )


def main(argv: list[str] | None = None) -> list[dict] | dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--nprobe", default="8,16,32,64", help="IVF nprobe values to try (* marks the default)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--scale", type=int, help="one streaming build of this many vectors per --kinds")
    parser.add_argument("--kinds", default="ivf-pq,ivf", help="with --scale: the index types to build")
    parser.add_argument("--out", help="with --scale: the JSON record (default benchmarks/results/ann-scale-N.json)")
    parser.add_argument("--keep", action="store_true", help="with --scale: keep the vector file in the cache")
    args = parser.parse_args(argv)
    args.argv = argv
    real = real_vectors()
    rng = np.random.default_rng(1)
    held = rng.permutation(len(real))
    queries, base = real[held[: args.queries]], real[held[args.queries :]]
    if args.scale:
        return scale_main(args, queries, base)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        rows += run_size(n, base, queries, [int(p) for p in args.nprobe.split(",")])
    print(f"ANN over synthesised news vectors ({faiss.omp_get_max_threads()} threads), one query at a time, k=10")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
