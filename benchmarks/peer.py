"""Peer: txtai against ours on the full NewsArticles sample, the same model folder, the same CPU, one run.

    python -m benchmarks.peer                          # all 3,824 articles (14,248 chunks), 200 queries: long
    python -m benchmarks.peer --limit 50 --queries 20  # a quick check of the whole path

Inputs: our chunker's chunks of every article with a body (title prefix, <= the model's 256 tokens), the same
texts for every system. Systems:
  txtai        `Embeddings(path=<bundled model folder>, content=False, backend="faiss", gpu=False)`: its own
               transformers mean pooling on torch fp32, a FAISS `IDMap,Flat` inner-product index
  ours torch   `Encoder(backend="torch")` (sentence-transformers, torch fp32) + `ChunkIndex` (IDMap2 over a flat
               inner-product index, what an archive uses below 50k chunks): the headline, torch against torch
  ours onnx    `Encoder(backend="onnx")`: the same transformer exported to ONNX, int8 per-channel weights, on
               onnxruntime; a separate row, not like for like
  ours torch, query path   the torch index queried through `encode_queries`, as an archive serves them (the fp32
               ONNX export of the same weights)
txtai's own default above 5,000 rows is an IVF index probing ~1/16 of its lists; it is set to the flat index here
so both sides search exactly and the top-10 overlap checks the vectors, not an approximation.

Build = embed and index every chunk, in slices (`--slice` chunks; txtai: `index` then `upsert`), the systems
taking turns slice by slice in rotating order, so load from other processes falls on all alike. Query = embed one
query and fetch its top 10, warm; query i runs on every system, the order rotating. Figures from one run: on a
shared machine the ratios count, not the seconds. Writes a record under benchmarks/results/ (see report.py).
"""

from __future__ import annotations

import argparse
import os
import random
import time

import numpy as np

from archive import index as ix
from archive.chunk import Chunker
from archive.embed import Encoder, default_model_path
from archive.sample import news_rows

from . import record

K = 10


class Ours:
    def __init__(self, backend: str, query_path: bool = False):
        self.enc = Encoder(backend=backend)
        self.query_path = query_path
        self.index = ix.ChunkIndex(self.enc.dimensions)

    def add(self, ids: np.ndarray, texts: list[str]) -> None:
        self.index.add(ids, self.enc.encode(texts))

    def query_vectors(self, texts: list[str]) -> np.ndarray:
        return self.enc.encode_queries(texts) if self.query_path else self.enc.encode(texts)

    def search(self, q: str) -> list[int]:
        return [int(i) for i in self.index.search(self.query_vectors([q]), K)[1][0]]


class Txtai:
    def __init__(self):
        from txtai import Embeddings

        faiss = {"components": "IDMap,Flat"}  # exact, like ours (its default past 5,000 rows is IVF)
        self.emb = Embeddings(path=str(default_model_path()), content=False, backend="faiss", faiss=faiss, gpu=False)
        self.built = False

    def add(self, ids: np.ndarray, texts: list[str]) -> None:
        docs = [(int(i), t, None) for i, t in zip(ids, texts, strict=True)]
        self.emb.upsert(docs) if self.built else self.emb.index(docs)
        self.built = True

    def query_vectors(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.emb.batchtransform(texts), dtype=np.float32)

    def search(self, q: str) -> list[int]:
        return [int(i) for i, _ in self.emb.search(q, K)]


def chunk_texts(rows: list[dict], encoder: Encoder) -> list[str]:
    """Every chunk of every article with a body, as `archive load` embeds it."""
    chunker = Chunker(encoder)
    return [c.embed_text for r in rows if r["text"].strip() for c in chunker.chunk(r["title"], r["text"])]


def query_strings(rows: list[dict], n: int, seed: int = 0) -> list[str]:
    """Real query-like strings from the whole sample: headlines, and the opening words of a subtitle or body."""
    rows = [r for r in rows if r["title"].strip()]
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    out = []
    for i, r in enumerate(picked):
        lead = (r["subtitle"].strip() or r["text"]).split()[:12]
        out.append(r["title"].strip() if i % 2 == 0 or not lead else " ".join(lead))
    return out


def rotated(names: list[str], i: int) -> list[str]:
    return names[i % len(names) :] + names[: i % len(names)]


def build(systems: dict, texts: list[str], size: int) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds each builder spent adding every text, slices interleaved in rotating order."""
    builders = [n for n in systems if n in BUILDERS]
    wall, cpu = dict.fromkeys(builders, 0.0), dict.fromkeys(builders, 0.0)
    for k, start in enumerate(range(0, len(texts), size)):
        ids = np.arange(start + 1, min(start + size, len(texts)) + 1)
        for name in rotated(builders, k):
            t, c = time.perf_counter(), time.process_time()
            systems[name].add(ids, texts[start : start + size])
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
        so_far = ", ".join(f"{n} {wall[n]:.0f} s" for n in builders)
        print(f"  built {ids[-1]:,}/{len(texts):,} chunks: {so_far}", flush=True)
    return {n: (wall[n], cpu[n]) for n in builders}


def query(systems: dict, queries: list[str]) -> tuple[dict[str, list[float]], dict[str, list[list[int]]]]:
    names, ms, hits = list(systems), {n: [] for n in systems}, {n: [] for n in systems}
    for i, q in enumerate(queries):
        for name in rotated(names, i):
            t = time.perf_counter()
            hits[name].append(systems[name].search(q))
            ms[name].append((time.perf_counter() - t) * 1000)
    return ms, hits


def overlap(a: list[list[int]], b: list[list[int]]) -> float:
    return float(np.mean([len(set(x) & set(y)) / K for x, y in zip(a, b, strict=True)]))


BUILDERS = ("txtai", "ours torch", "ours onnx")
QUERY_PATH = "ours torch, query path"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N articles (default: all)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--slice", type=int, default=1024, help="chunks per interleaved build slice")
    args = parser.parse_args(argv)
    rows = news_rows()
    articles = rows[: args.limit] if args.limit > 0 else rows
    systems = {"txtai": Txtai(), "ours torch": Ours("torch"), "ours onnx": Ours("onnx")}
    texts, queries = chunk_texts(articles, systems["ours torch"].enc), query_strings(rows, args.queries)
    systems["ours torch"].enc.prepare_queries()  # the fp32 export an archive queries through (cached once)
    for name in BUILDERS:  # load the models outside the timing
        systems[name].query_vectors(["warm up"] + texts[:4])
    load0 = os.getloadavg()
    print(f"peer: {len(articles):,} articles, {len(texts):,} chunks, {len(queries)} queries, load {load0[0]:.1f}")
    built = build(systems, texts, args.slice)
    systems[QUERY_PATH] = Ours("torch", query_path=True)
    systems[QUERY_PATH].index = systems["ours torch"].index
    for s in systems.values():
        s.search("warm up")
    ms, hits = query(systems, queries)
    result = _figures(args, articles, texts, queries, built, ms, hits, systems, load0)
    _print(result)
    print(f"record: {record.save('peer', result, argv)}")
    return result


def _figures(args, articles, texts, queries, built, ms, hits, systems, load0) -> dict:
    cos = np.sum(systems["txtai"].query_vectors(queries) * systems["ours torch"].query_vectors(queries), axis=1)
    rows = []
    for name in systems:
        wall, cpu = built.get(name, (None, None))
        rows.append(
            {
                "system": name,
                "build_s": round(wall, 1) if wall else None,
                "build_cpu_s": round(cpu, 1) if cpu else None,
                "chunks_per_s": round(len(texts) / wall, 2) if wall else None,
                "query_p50_ms": round(float(np.percentile(ms[name], 50)), 2),
                "query_p95_ms": round(float(np.percentile(ms[name], 95)), 2),
                "top10_overlap_txtai": round(overlap(hits[name], hits["txtai"]), 4),
                "top10_overlap_ours_torch": round(overlap(hits[name], hits["ours torch"]), 4),
            }
        )
    by = {r["system"]: r for r in rows}
    return {
        "articles": len(articles),
        "chunks": len(texts),
        "queries": len(queries),
        "slice": args.slice,
        "torch_threads": _torch_threads(),
        "load_avg_start": round(load0[0], 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "build_txtai_over_ours_torch": round(by["txtai"]["build_s"] / by["ours torch"]["build_s"], 3),
        "query_p50_txtai_over_ours_torch": round(by["txtai"]["query_p50_ms"] / by["ours torch"]["query_p50_ms"], 3),
        "query_cosine_txtai_vs_ours_torch_mean": round(float(cos.mean()), 6),
        "query_cosine_txtai_vs_ours_torch_min": round(float(cos.min()), 6),
        "rows": rows,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _print(r: dict) -> None:
    print(f"peer: {r['articles']:,} articles, {r['chunks']:,} chunks, {r['queries']} queries, same model folder")
    print(f"{'system':24}{'build s':>9}{'cpu s':>9}{'chunks/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'top10 txtai':>13}")
    for x in r["rows"]:
        build = f"{x['build_s']:9.1f}{x['build_cpu_s']:9.1f}{x['chunks_per_s']:10.2f}" if x["build_s"] else " " * 28
        print(
            f"{x['system']:24}{build}{x['query_p50_ms']:9.1f}{x['query_p95_ms']:9.1f}{x['top10_overlap_txtai']:13.3f}"
        )
    print(
        f"txtai/ours torch: build {r['build_txtai_over_ours_torch']:.2f}x, query p50 "
        f"{r['query_p50_txtai_over_ours_torch']:.2f}x; query vectors cosine txtai vs ours torch: mean "
        f"{r['query_cosine_txtai_vs_ours_torch_mean']:.6f}, min {r['query_cosine_txtai_vs_ours_torch_min']:.6f}"
    )


if __name__ == "__main__":
    main()
