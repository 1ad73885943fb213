"""Peer: txtai on the same chunks, the same model folder, the same machine and run, as ratios to ours.

    python -m benchmarks.peer                    # 64 real chunks, 40 queries
    python -m benchmarks.peer --chunks 256

Build = embed every chunk and index it (txtai: `Embeddings.index` with its default sentence-transformers
vectors and FAISS; ours: `Encoder` + `ChunkIndex`, onnx backend, and torch for reference). Query = embed one
query and fetch the top 10 ids, warm. Rounds alternate so machine load falls on all alike.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from archive import index as ix
from archive.embed import Encoder, default_model_path

from .encode import real_chunks


def ours(backend: str):
    enc = Encoder(backend=backend)

    def build(texts):
        index = ix.ChunkIndex(enc.dimensions)
        index.add(np.arange(1, len(texts) + 1), enc.encode(texts))
        return index

    def query(index, q):
        return index.search(enc.encode([q]), 10)[1][0]

    return build, query


def txtai():
    from txtai import Embeddings

    def build(texts):
        emb = Embeddings(path=str(default_model_path()), content=False, backend="faiss")
        emb.index([(i + 1, t, None) for i, t in enumerate(texts)])
        return emb

    def query(emb, q):
        return [i for i, _ in emb.search(q, 10)]

    return build, query


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    systems = {"txtai": txtai(), "ours onnx": ours("onnx"), "ours torch": ours("torch")}
    texts = real_chunks(args.chunks + args.queries, Encoder())
    texts, queries = texts[: args.chunks], [t[:200] for t in texts[args.chunks :]]
    built, build_s, query_ms = {}, {n: [] for n in systems}, {n: [] for n in systems}
    for build, query in systems.values():  # warm: load models outside the timing
        query(build(texts[:4]), "warm up")
    for _ in range(args.rounds):
        for name, (build, _) in systems.items():
            t = time.perf_counter()
            built[name] = build(texts)
            build_s[name].append(time.perf_counter() - t)
    for name, (_, query) in systems.items():
        for q in queries:
            t = time.perf_counter()
            query(built[name], q)
            query_ms[name].append((time.perf_counter() - t) * 1000)
    b = {n: float(np.median(v)) for n, v in build_s.items()}
    q50 = {n: float(np.percentile(v, 50)) for n, v in query_ms.items()}
    q95 = {n: float(np.percentile(v, 95)) for n, v in query_ms.items()}
    print(f"peer: {args.chunks} real chunks, {args.queries} queries, same model folder; ratio = txtai / ours")
    print(f"{'system':12}{'build s':>9}{'txtai/x':>9}{'query p50 ms':>14}{'p95 ms':>9}{'txtai/x':>9}")
    for n in systems:
        print(f"{n:12}{b[n]:9.1f}{b['txtai'] / b[n]:9.2f}{q50[n]:14.1f}{q95[n]:9.1f}{q50['txtai'] / q50[n]:9.2f}")
    return {"build_s": b, "query_p50_ms": q50, "query_p95_ms": q95}


if __name__ == "__main__":
    main()
