"""ANN: recall@10 against exact search, latency and memory of each index type at 100k and 1M vectors.

    python -m benchmarks.ann                       # 100k and 1M
    python -m benchmarks.ann --sizes 100000        # quicker

The vectors are synthesised from real ones: sentences of NewsArticles embedded with the bundled model (onnx
backend, cached), then mixed pairwise with a little noise, so the neighbourhood structure is that of real
news embeddings. Queries are held-out real sentence vectors. Baseline: exact (flat) search, same run.
"""

from __future__ import annotations

import argparse
import csv
import re
import time

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
    csv.field_size_limit(1 << 30)
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


def latency_ms(index: ix.ChunkIndex, queries: np.ndarray, k: int = 10) -> tuple[float, float, np.ndarray]:
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q, k)
        times.append((time.perf_counter() - t) * 1000)
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
    for kind in ("ivf", "ivf-sq8"):
        t = time.perf_counter()
        index = ix.build(dim, ids, vecs, kind)
        build = time.perf_counter() - t
        default = index.nprobe
        for nprobe in sorted(set(nprobes) | {default}):
            index.nprobe = nprobe
            p50, p95, found = latency_ms(index, queries)
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


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--nprobe", default="8,16,32,64", help="IVF nprobe values to try (* marks the default)")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    real = real_vectors()
    rng = np.random.default_rng(1)
    held = rng.permutation(len(real))
    queries, base = real[held[: args.queries]], real[held[args.queries :]]
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        rows += run_size(n, base, queries, [int(p) for p in args.nprobe.split(",")])
    print(f"ANN over synthesised news vectors ({faiss.omp_get_max_threads()} threads), one query at a time, k=10")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
