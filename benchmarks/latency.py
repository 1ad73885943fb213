"""Query latency: p50/p95 of semantic and related queries through Datasette's JSON API, and the first answer.

    python -m benchmarks.latency                          # 10k and 100k chunks
    python -m benchmarks.latency --sizes 10000,100000,1000000
    python -m benchmarks.latency --startup                # one-off `archive search` and `archive serve` startup
    python -m benchmarks.latency --model mpnet --sizes 10000   # an archive of another model's vectors
    python -m benchmarks.latency --model mpnet --encoder-only  # its query encoder alone: fp32 and int8 ONNX

Each archive is synthesised from the real corpus: NewsArticles titles and text (cycled, made unique), four
chunks an article, chunk vectors mixed from real sentence vectors (see benchmarks/ann.py), recorded as
embedded by the onnx backend so the query encoder is torch-free (with `--model`, that model's vectors, recorded as
embedded by torch the way `archive load --model mpnet` makes them: queries run on its fp32 ONNX export, no torch).
Queries are real article titles. Requests
go through Datasette in-process (`datasette.client`, the full ASGI stack, no sockets), warm; the library
call (`Archive.search` / `related`) is timed beside it as the baseline. "first answer" starts
`archive serve` and polls /<db>/-/semantic.json until it answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from archive import Archive, registry, store, terms
from archive.embed import Encoder, cache_dir
from archive.sample import news_rows

from . import record
from .ann import real_vectors, synthesise

PER_ARTICLE = 4


def corpus_rows() -> list[dict]:
    return [r for r in news_rows() if r["text"].strip() and r["title"].strip()]


def model_vectors(model: str | None, n: int = 300) -> np.ndarray:
    """n real sentence vectors of a model (its fp32 ONNX query export, cached): the base synthesised chunks mix."""
    if model is None:
        return real_vectors(n)
    enc = Encoder(model, backend="torch")
    path = cache_dir() / "bench" / f"sentences-{enc.fingerprint}-{n}.npy"
    if not path.exists():
        sentences = [s for r in corpus_rows()[:400] for s in r["text"].split(". ")[:2] if 60 < len(s) < 400][:n]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, enc.encode_queries(sentences))  # no torch: the export made at load
    return np.load(path)


def make_archive(
    path: Path,
    index_dir: Path,
    n_chunks: int,
    rows: list[dict],
    base: np.ndarray,
    backend: str = "onnx",
    model: str | None = None,
) -> None:
    db = store.open_db(str(path), create=True)
    enc = Encoder(model, backend=backend)
    store.set_meta(db, model_path=str(enc.path), **enc.describe())
    n_articles = n_chunks // PER_ARTICLE
    vecs = synthesise(base, n_articles * PER_ARTICLE, seed=n_chunks)
    outlets = ["BBC", "CNN", "Al Jazeera", "TASS", "DW", "RTE", "ABC News", "HuffPost", "China Daily"]
    cid = 1
    for start in range(0, n_articles, 10_000):
        arts, chunks = [], []
        for aid in range(start + 1, min(start + 10_000, n_articles) + 1):
            row = rows[aid % len(rows)]
            body = f"{row['text'][:800]} [{aid}]"
            h = hashlib.sha1(body.encode()).hexdigest()
            day = 1 + aid % 28
            arts.append((aid, f"synth:{aid}", f"https://example.org/{aid}", outlets[aid % 9], row["title"],
                         f"2017-03-{day:02d}", "en", body, h, h))  # fmt: skip
            step = len(body) // PER_ARTICLE
            for seq in range(PER_ARTICLE):
                text = body[seq * step : (seq + 1) * step]
                chunks.append(
                    (cid, aid, seq, seq * step, (seq + 1) * step, text, h[:8] + str(seq), vecs[cid - 1].tobytes())
                )
                cid += 1
        db.conn.executemany(
            "insert into articles (id, identity, url, outlet, title, published, language, body, content_hash,"
            " body_hash) values (?,?,?,?,?,?,?,?,?,?)", arts,
        )  # fmt: skip
        db.conn.executemany(
            'insert into chunks (id, article_id, seq, start, "end", text, content_hash, vector)'
            " values (?,?,?,?,?,?,?,?)",
            chunks,
        )
        db.conn.commit()
    store.set_meta(db, generation="1", next_chunk_id=str(cid))
    terms.backfill(db)  # the keyword signatures a load writes (related coverage reads them)
    db.conn.close()
    arc = Archive(path, index_dir)
    arc.rebuild_index()
    arc.close()


def pct(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 95) * 1000)


def measure(path: Path, index_dir: Path, queries: list[str], article_ids: list[int]) -> dict:
    os.environ["NEWS_ARCHIVE_INDEX_DIR"] = str(index_dir)
    from datasette.app import Datasette

    arc = Archive(path, index_dir)
    arc.search(queries[0], mode="semantic")  # warm: model, index
    out = {}

    def timed(fn, items):
        times = []
        for item in items:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
        return pct(times)

    out["semantic lib"] = timed(lambda q: arc.search(q, mode="semantic"), queries)
    out["hybrid lib"] = timed(lambda q: arc.search(q, mode="hybrid"), queries)
    out["related lib"] = timed(lambda a: arc.related(a), article_ids)
    ds = Datasette([str(path)])
    name = path.stem

    async def http():
        async def get(url):
            r = await ds.client.get(url)
            assert r.status_code == 200, (url, r.status_code, r.text[:300])

        await get(f"/{name}/-/semantic.json?mode=semantic&q=warm")
        res = {}
        for label, urls in (
            ("semantic http", [f"/{name}/-/semantic.json?mode=semantic&q={urllib.parse.quote(q)}" for q in queries]),
            ("hybrid http", [f"/{name}/-/semantic.json?mode=hybrid&q={urllib.parse.quote(q)}" for q in queries]),
            ("related http", [f"/{name}/articles/{a}/-/related.json" for a in article_ids]),
        ):
            times = []
            for u in urls:
                t = time.perf_counter()
                await get(u)
                times.append(time.perf_counter() - t)
            res[label] = pct(times)
        return res

    out.update(asyncio.run(http()))
    arc.close()
    return out


def first_answer_s(path: Path, index_dir: Path, timeout: float = 120) -> float:
    return serve_start(path, index_dir, timeout)[0]


def serve_start(path: Path, index_dir: Path, timeout: float = 120) -> tuple[float, float]:
    """Seconds from `archive serve` to the first semantic JSON answer, and the server's RSS (MB) after it has
    answered a semantic and a related query."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "archive.cli", "serve", "--db", str(path), "--index-dir", str(index_dir),
           "-p", str(port)]  # fmt: skip
    if (Path(sys.executable).parent / "archive").exists():
        cmd = [str(Path(sys.executable).parent / "archive"), *cmd[3:]]
    url = f"http://127.0.0.1:{port}/{path.stem}/-/semantic.json?mode=semantic&q=flooding"
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    if r.status == 200:
                        took = time.perf_counter() - started
                        break
            except OSError:
                time.sleep(0.05)
        else:
            return float("nan"), float("nan")
        related = url.split("/-/")[0] + "/articles/1/-/related.json"
        with urllib.request.urlopen(related, timeout=60) as r:
            r.read()
        return took, _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def archive_cmd() -> list[str]:
    """This interpreter's `archive` script (what a user runs after `pip install .`), else `python -m archive.cli`."""
    script = Path(sys.executable).parent / "archive"
    return [str(script)] if script.exists() else [sys.executable, "-m", "archive.cli"]


def one_off_search_s(path: Path, index_dir: Path, query: str = "flooding after the cyclone") -> float:
    """Wall seconds of a whole `archive search` process, start to exit (it must succeed)."""
    cmd = [*archive_cmd(), "search", query, "--db", str(path), "--index-dir", str(index_dir), "-k", "5"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0 or "1." not in proc.stdout:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    return took


def import_profile(path: Path, index_dir: Path, top: int = 12) -> tuple[list[tuple[str, float]], bool]:
    """`python -X importtime` of a one-off search: the top-level packages by cumulative import seconds, and
    whether torch was imported at all (it must not be)."""
    code = "import sys; from archive.cli import cli; cli(sys.argv[1:])"
    cmd = [sys.executable, "-X", "importtime", "-c", code, "search", "flooding", "--db", str(path),
           "--index-dir", str(index_dir), "-k", "5"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    totals: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith(" ") and not name.startswith("  "):  # imported by the program itself, not a module
            top_name = name.strip().split(".")[0]
            totals[top_name] = totals.get(top_name, 0.0) + int(cumulative.split(":")[-1]) / 1e6
    torch = any(line.rstrip().endswith(" torch") for line in proc.stderr.splitlines())
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top], torch


def startup(runs: int = 3) -> dict:
    """The plain-install targets: first semantic answer after `archive serve` starts, and a one-off `archive
    search`, on a torch-embedded 10,000-chunk archive whose ONNX query encoder the load made."""
    rows = corpus_rows()
    with tempfile.TemporaryDirectory() as tmp:
        path, index_dir = Path(tmp) / "startup.db", Path(tmp) / "idx"
        make_archive(path, index_dir, 10_000, rows, real_vectors(300), backend="torch")
        Encoder().prepare_queries()  # what `archive load` does after embedding with torch
        one_off = [one_off_search_s(path, index_dir) for _ in range(runs)]
        first = [serve_start(path, index_dir)[0] for _ in range(runs)]
        imports, torch = import_profile(path, index_dir)
    out = {"python": sys.executable, "one-off search s": one_off, "first answer s": first, "torch imported": torch}
    print(f"interpreter {sys.executable}")
    print("one-off `archive search` (s):      " + "  ".join(f"{t:.2f}" for t in one_off))
    print("first answer after `archive serve` (s): " + "  ".join(f"{t:.2f}" for t in first))
    print(f"torch imported by a search: {torch}; imports by cumulative s (-X importtime):")
    print("  " + ", ".join(f"{name} {s:.2f}" for name, s in imports))
    return out


def query_encoder(model: str | None, n: int) -> dict:
    """The query encoder alone, one query at a time, warm: the fp32 ONNX export (what a torch-embedded archive's
    queries run on) and the int8 one, p50/p95 ms over n real queries (NewsArticles subtitles), and the int8
    vectors' cosine to the fp32 ones."""
    queries = [r["subtitle"].strip() for r in corpus_rows() if len(r["subtitle"].strip()) > 40][:n]
    fp32, int8 = Encoder(model, backend="torch"), Encoder(model, backend="onnx")
    fp32.prepare_queries()  # made at load; a no-op when cached
    out, vecs = {"model": fp32.name, "queries": len(queries)}, {}
    for label, enc in (("fp32", fp32), ("int8", int8)):
        enc.encode_queries(queries[:2])  # warm: session, tokenizer
        times, cpu, got = [], [], []
        for q in queries:
            t, c = time.perf_counter(), time.process_time()
            got.append(enc.encode_queries([q])[0])
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        vecs[label] = np.vstack(got)
        out[f"{label} p50 ms"], out[f"{label} p95 ms"] = pct(times)
        out[f"{label} cpu p50 ms"], out[f"{label} cpu p95 ms"] = pct(cpu)  # all threads: what a query costs
    cos = (vecs["fp32"] * vecs["int8"]).sum(axis=1)
    out |= {"int8 cosine to fp32 min": float(cos.min()), "int8 cosine to fp32 mean": float(cos.mean())}
    print(f"query encoder alone, {out['model']}, {len(queries)} real queries one at a time (ms):")
    for label in ("fp32", "int8"):
        print(f"  {label}: wall p50 {out[label + ' p50 ms']:.1f}  p95 {out[label + ' p95 ms']:.1f};  "
              f"CPU p50 {out[label + ' cpu p50 ms']:.1f}  p95 {out[label + ' cpu p95 ms']:.1f}")  # fmt: skip
    print(f"  int8 vectors' cosine to fp32: min {cos.min():.4f}, mean {cos.mean():.4f}")
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--startup", action="store_true", help="Only the startup targets (one-off search, serve)")
    parser.add_argument("--runs", type=int, default=3, help="With --startup: runs of each")
    parser.add_argument("--model", help="A model name (mpnet) or folder: its vectors and its query encoder")
    parser.add_argument("--encoder-only", action="store_true", help="Only the query encoder (fp32, int8), --queries")
    args = parser.parse_args(argv)
    if args.startup:
        return [startup(args.runs)]
    model = registry.resolve(args.model) if args.model and args.model != registry.DEFAULT else None
    if args.encoder_only:
        out = query_encoder(model, args.queries)
        print(f"record: {record.save('latency', out)}")
        return [out]
    rows, base = corpus_rows(), model_vectors(model)
    queries = [r["title"] for r in rows[-args.queries :]]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            path, index_dir = Path(tmp) / f"synth{n}.db", Path(tmp) / f"idx{n}"
            t = time.perf_counter()
            make_archive(path, index_dir, n, rows, base, *(("torch", model) if model else ()))
            build = time.perf_counter() - t
            ids = list(np.linspace(1, n // PER_ARTICLE, args.queries).astype(int))
            m = measure(path, index_dir, queries, [int(i) for i in ids])
            first, rss = serve_start(path, index_dir)
            m["first answer"] = (first, None)
            m["server RSS"] = (rss, None)
            kind = Archive(path, index_dir).stats()["index"]["type"]
            results.append({"chunks": n, "index": kind, "build_s": build, **m})
        if model is None:  # a torch-embedded archive's server answers through the fp32 ONNX query encoder
            path, index_dir = Path(tmp) / "torch.db", Path(tmp) / "idx-torch"
            make_archive(path, index_dir, 10_000, rows, base, backend="torch")
            Encoder().prepare_queries()  # what `archive load` does after embedding with torch
            first, _ = serve_start(path, index_dir)
            print(f"first answer, torch-embedded archive of 10,000 chunks: {first:.2f} s")
    print(f"model: {Encoder(model).name}")
    print(f"query latency, warm, {args.queries} queries each (ms); first answer from `archive serve` start (s);")
    print("server RSS after a semantic and a related query (MB)")
    print(f"{'chunks':>9} {'index':6}" + "".join(f"{k:>22}" for k in results[0] if " " in k))
    for r in results:
        cells = []
        for k, v in r.items():
            if " " in k:
                unit = " MB" if k == "server RSS" else " s"
                cells.append(f"{v[0]:>10.2f}{unit}" if v[1] is None else f"p50 {v[0]:6.1f} p95 {v[1]:6.1f}")
        print(f"{r['chunks']:>9,} {r['index']:6}" + "".join(f"{c:>22}" for c in cells))
    print(f"record: {record.save('latency', {'model': Encoder(model).name, 'results': results})}")
    return results


if __name__ == "__main__":
    main()
