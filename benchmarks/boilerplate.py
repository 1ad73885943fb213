"""Boilerplate left in bodies: lines repeating across many articles of one outlet, before and after clean_text.

    python -m benchmarks.boilerplate            # the whole NewsArticles sample (3,824 rows), ~1 minute
    python -m benchmarks.boilerplate --show 8   # also list the 8 most repeated lines per outlet, after cleaning

The sample's bodies are flattened to one line each, so a "line" here is a maximal run of words whose every
5-word window repeats in many articles of one outlet (at least 8, and 2% of its articles) and is specific to
that outlet (at least 10x as frequent there as in the other outlets, which drops common English phrases).
Share bars, newsletter pitches, "Read more" and "Sign up" lines and credits all have that shape; so do a few
recurring phrases of an outlet's house style, which the listing makes visible. URLs and digits are masked
so "Permalink http://dw.com/p/2Wx5C" repeats like the rest of its share bar. The baseline is the raw text.
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from collections import Counter, defaultdict
from urllib.parse import urlparse

from archive.clean import clean_text
from archive.sample import fetch_news_articles

K = 5  # words per window: short enough for "- - - - - -", long enough to skip most common phrases
MIN_ARTICLES = 8
MIN_SHARE = 0.02
SPECIFICITY = 10.0
_TOKEN = re.compile(r"\S+")
_URL = re.compile(r"^\W*(?:https?://|www\.)\S*$|\S+\.(?:com|org|net|co\.uk|ie)/\S*")
_DIGIT = re.compile(r"\d")


def outlet_of(url: str) -> str:
    host = urlparse(url).netloc.lower()
    return host[4:] if host.startswith("www.") else host


def _norm(token: str) -> str:
    return "<url>" if _URL.search(token) else _DIGIT.sub("0", token)


def _windows(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + K]) for i in range(len(words) - K + 1)}


def repeated_windows(docs: dict[str, list[list[str]]]) -> dict[str, set[tuple[str, ...]]]:
    """Per outlet, the K-word windows that repeat in many of its articles and rarely elsewhere."""
    per_outlet = {o: Counter(w for words in ds for w in _windows(words)) for o, ds in docs.items()}
    overall = sum(per_outlet.values(), Counter())
    total = sum(len(ds) for ds in docs.values())
    found = {}
    for outlet, counts in per_outlet.items():
        n, others = len(docs[outlet]), total - len(docs[outlet])
        floor = max(MIN_ARTICLES, MIN_SHARE * n)
        found[outlet] = {
            w for w, c in counts.items() if c >= floor and c / n >= SPECIFICITY * (overall[w] - c + 1) / max(others, 1)
        }
    return found


def repeated_lines(words: list[str], windows: set[tuple[str, ...]]) -> list[str]:
    """Maximal runs of words covered by repeated windows, as text."""
    covered = [False] * len(words)
    for i in range(len(words) - K + 1):
        if tuple(words[i : i + K]) in windows:
            covered[i : i + K] = [True] * K
    lines, run = [], []
    for word, hit in zip(words, covered):
        if hit:
            run.append(word)
        elif run:
            lines.append(" ".join(run))
            run = []
    if run:
        lines.append(" ".join(run))
    return lines


def measure(bodies: dict[str, list[str]]) -> dict[str, dict]:
    """Per outlet: articles, articles with a repeated line, repeated words, and the lines with their counts."""
    docs = {o: [[_norm(t) for t in _TOKEN.findall(b)] for b in bs] for o, bs in bodies.items()}
    windows = repeated_windows(docs)
    report = {}
    for outlet, ds in docs.items():
        lines = [repeated_lines(words, windows[outlet]) for words in ds]
        report[outlet] = {
            "articles": len(ds),
            "with_lines": sum(bool(ls) for ls in lines),
            "words": sum(len(line.split()) for ls in lines for line in ls),
            "lines": Counter(line for ls in lines for line in set(ls)),
        }
    return report


def load_bodies() -> dict[str, list[str]]:
    """Distinct non-empty bodies of the sample per outlet (an exact duplicate would repeat every line)."""
    bodies, seen = defaultdict(list), set()
    with open(fetch_news_articles(), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            body = row["text"]
            if body.strip() and body not in seen:
                seen.add(body)
                bodies[outlet_of(row["article_source_link"])].append(body)
    return dict(bodies)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=0, help="list the N most repeated lines per outlet after cleaning")
    args = parser.parse_args(argv)
    raw = load_bodies()
    started = time.perf_counter()
    cleaned = {o: [clean_text(b) for b in bs] for o, bs in raw.items()}
    clean_s = time.perf_counter() - started
    before, after = measure(raw), measure(cleaned)
    _print_table(before, after)
    print(f"\nclean_text over {sum(map(len, raw.values())):,} bodies: {clean_s:.2f} s")
    for outlet in sorted(after) if args.show else []:
        print(f"\n{outlet}: most repeated lines after cleaning (articles, line)")
        for line, n in after[outlet]["lines"].most_common(args.show):
            print(f"  {n:4d}  {line[:150]}")
    return {"before": before, "after": after}


def _print_table(before: dict, after: dict) -> None:
    cols = ("articles with repeated lines", "distinct repeated lines", "repeated words")
    print(f"{'outlet':26s}{'articles':>9s}" + "".join(f"{c:>30s}" for c in cols))
    print(f"{'':35s}" + f"{'before -> after':>30s}" * len(cols))
    outlets = sorted(before)
    for outlet in [*outlets, "all"]:
        names = outlets if outlet == "all" else [outlet]
        pairs = [
            tuple(sum(r[o][key] if key != "lines" else len(r[o]["lines"]) for o in names) for r in (before, after))
            for key in ("with_lines", "lines", "words")
        ]
        articles = sum(before[o]["articles"] for o in names)
        print(f"{outlet:26s}{articles:9d}" + "".join(f"{b:>20d} -> {a:6d}" for b, a in pairs))


if __name__ == "__main__":
    main()
