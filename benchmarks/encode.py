"""Encoder backends: chunks/s of torch (fp32, the reference) against onnx (int8), and their agreement.

    python -m benchmarks.encode                 # 96 real chunks, 3 interleaved rounds
    python -m benchmarks.encode --chunks 256 --rounds 5

Chunks are real NewsArticles chunks as `archive load` makes them (title prefix, ~256 tokens). Both backends
run in this process, interleaved round by round, so machine load drifts over both alike; the ratio is the
figure. The first vector of each is timed in a fresh interpreter (import, load, one query).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time

import numpy as np

from archive.chunk import Chunker
from archive.embed import Encoder
from archive.sample import fetch_news_articles

FIRST_VECTOR = (
    "import sys, time; t = time.perf_counter(); from archive.embed import Encoder; "
    "Encoder(backend=sys.argv[1]).encode(['flooding in Queensland']); "
    "print(time.perf_counter() - t, 'torch' in sys.modules)"
)


def real_chunks(n: int, encoder: Encoder) -> list[str]:
    chunker, texts = Chunker(encoder), []
    with open(fetch_news_articles(), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["text"].strip():
                texts += [c.embed_text for c in chunker.chunk(row["title"], row["text"])][:2]
            if len(texts) >= n:
                return texts[:n]
    return texts


def first_vector_s(backend: str) -> tuple[float, bool]:
    out = subprocess.run([sys.executable, "-c", FIRST_VECTOR, backend], capture_output=True, text=True, check=True)
    seconds, torch_loaded = out.stdout.split()
    return float(seconds), torch_loaded == "True"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    encoders = {"torch": Encoder(), "onnx": Encoder(backend="onnx")}
    texts = real_chunks(args.chunks, encoders["torch"])
    tokens = np.mean(encoders["torch"].count_tokens(texts)) + 2
    for e in encoders.values():
        e.encode(texts[:4])  # load (and on first use export) outside the timing
    seconds = {name: [] for name in encoders}
    vectors = {}
    for _ in range(args.rounds):
        for name, e in encoders.items():
            t = time.perf_counter()
            vectors[name] = e.encode(texts)
            seconds[name].append(time.perf_counter() - t)
    cos = np.sum(vectors["torch"] * vectors["onnx"], axis=1)
    rate = {name: len(texts) / np.median(s) for name, s in seconds.items()}
    first = {name: first_vector_s(name) for name in encoders}
    print(f"encoder backends on {len(texts)} real chunks (mean {tokens:.0f} tokens), median of {args.rounds} rounds")
    print(f"{'backend':10}{'chunks/s':>10}{'x torch':>9}{'first vector s':>16}{'torch imported':>16}")
    for name in encoders:
        ratio, (first_s, torch_loaded) = rate[name] / rate["torch"], first[name]
        print(f"{name:10}{rate[name]:10.1f}{ratio:9.2f}{first_s:16.2f}{torch_loaded!s:>16}")
    print(f"cosine onnx-int8 vs torch-fp32: mean {cos.mean():.4f}, min {cos.min():.4f}")
    return {"rate": rate, "speedup": rate["onnx"] / rate["torch"], "cos_mean": float(cos.mean()), "first": first}


if __name__ == "__main__":
    main()
