"""An article's earlier versions (`article_versions`, written by `store.apply` when a reload changes it), and
the word diff from one version to the next, for the row page.

The diff is data, not markup: paragraphs of (op, text) segments that a template escapes like any other text.
Its cost is bounded, because an anonymous page view pays for it (difflib alone is cubic on repetitive text: 4 s
for 500 paragraphs of three kinds). It is a patience diff: common openings and endings are set aside, items
that occur once on each side anchor the rest, and the stretches between anchors are aligned the same way. Every
step spends its length from one WORK budget; a stretch left when it runs out, or too deep, or with no anchor
and too long for difflib, is shown as removed and added whole. Paragraphs first, then words within them.
"""

from __future__ import annotations

import difflib
import re
import sqlite3
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

WORK = 50_000  # items (paragraphs and words) a diff may align, over all its steps
DEPTH = 40  # nested anchor searches before a stretch is shown whole
SMALL = 400  # a stretch with no anchor goes to difflib when len(old) * len(new) is at most this
LISTED = 50  # earlier versions listed on the page (the count says how many there are)
SHOWN_PARAGRAPHS = 300  # paragraphs of diff on the page; the changes past them are counted, not shown
CONTEXT = 1  # unchanged paragraphs shown either side of a change
_TOKEN = re.compile(r"\w+|[^\w\s]|\s+")  # words, signs and the spaces between them

SHOWN = ("version", "title", "published", "source", "seen_at", "replaced_at", "content_hash")


@dataclass
class Paragraph:
    """One paragraph of the diff. kind: same (context), changed (segments of equal/delete/insert), gap (`skipped`
    unchanged paragraphs left out), more (`skipped` changed paragraphs past SHOWN_PARAGRAPHS, not shown)."""

    kind: str
    segments: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


@dataclass
class History:
    """An article's earlier versions (the newest LISTED of them, newest first), how many it has, and the diff
    from the newest of them to the current text."""

    count: int
    versions: list[dict]
    title_diff: list[tuple[str, str]]
    diff: list[Paragraph]


def history(conn: sqlite3.Connection, article_id: int) -> History | None:
    """The article's earlier versions and the diff to the previous one; None when it has none (or no table)."""
    if not conn.execute("select 1 from sqlite_master where type = 'table' and name = 'article_versions'").fetchone():
        return None
    sql = f"select {', '.join(SHOWN)} from article_versions where article_id = ? order by version desc limit ?"
    cur = conn.execute(sql, [article_id, LISTED])
    versions = [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
    current = conn.execute("select title, body from articles where id = ?", [article_id]).fetchone()
    if not versions or current is None:
        return None
    count = conn.execute("select count(*) from article_versions where article_id = ?", [article_id]).fetchone()[0]
    (body,) = conn.execute(
        "select body from article_versions where article_id = ? and version = ?", [article_id, versions[0]["version"]]
    ).fetchone()
    title = versions[0]["title"] or ""
    title_diff = words_diff(title, current[0] or "") if title != current[0] else []
    return History(count, versions, title_diff, diff(body, current[1]))


def diff(old: str | None, new: str | None, context: int = CONTEXT) -> list[Paragraph]:
    """Paragraph by paragraph, word by word within changed paragraphs; unchanged paragraphs beyond `context`
    of a change fold into gaps."""
    budget, out, more = [WORK], [], 0
    for op, a, b in align(_paragraphs(old), _paragraphs(new), budget):
        if op == "equal":
            out += [Paragraph("same", [("equal", p)]) for p in a]
            continue
        shown = min(max(len(a), len(b)), max(0, SHOWN_PARAGRAPHS - len(out)))
        more += max(len(a), len(b)) - shown
        for k in range(shown):  # paired paragraphs word by word, the rest removed or added whole
            if k < len(a) and k < len(b):
                out.append(Paragraph("changed", words_diff(a[k], b[k], budget)))
            else:
                out.append(Paragraph("changed", [("delete", a[k])] if k < len(a) else [("insert", b[k])]))
    return _fold(out, context) + ([Paragraph("more", skipped=more)] if more else [])


def words_diff(old: str, new: str, budget: list[int] | None = None) -> list[tuple[str, str]]:
    """(op, text) segments turning `old` into `new` word by word (op: equal, delete, insert)."""
    budget = budget or [WORK]
    if len(old) + len(new) > 4 * budget[0]:  # more words than the budget holds: not worth splitting into words
        budget[0] = min(budget[0], 0)
        return [("delete", old), ("insert", new)]
    out: list[tuple[str, str]] = []
    for op, a, b in align(_TOKEN.findall(old), _TOKEN.findall(new), budget):
        if op == "equal":
            out.append(("equal", "".join(a)))
            continue
        out += [("delete", "".join(a))] if a else []
        out += [("insert", "".join(b))] if b else []
    return out


def align(a: list[str], b: list[str], budget: list[int], depth: int = 0) -> list[tuple[str, list, list]]:
    """Blocks (op, old items, new items), op equal or change, that turn `a` into `b`; spends from `budget`."""
    head = _common_prefix(a, b)
    tail = _common_prefix(a[head:][::-1], b[head:][::-1])
    out = [("equal", a[:head], b[:head])] if head else []
    out += _middle(a[head : len(a) - tail], b[head : len(b) - tail], budget, depth)
    out += [("equal", a[len(a) - tail :], b[len(b) - tail :])] if tail else []
    return _merged(out)


def _middle(a: list[str], b: list[str], budget: list[int], depth: int) -> list[tuple[str, list, list]]:
    if not a or not b:
        return [("change", a, b)] if a or b else []
    if len(a) * len(b) <= SMALL:
        return _small(a, b)
    budget[0] -= len(a) + len(b)
    anchors = _anchors(a, b) if budget[0] >= 0 and depth < DEPTH else []
    if not anchors:
        return [("change", a, b)]
    out, i0, j0 = [], 0, 0
    for i, j in anchors:
        out += align(a[i0:i], b[j0:j], budget, depth + 1) + [("equal", [a[i]], [b[j]])]
        i0, j0 = i + 1, j + 1
    return out + align(a[i0:], b[j0:], budget, depth + 1)


def _anchors(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Items once in each side, the longest run of them in the same order on both (patience sorting)."""
    once_a, once_b = Counter(a), Counter(b)
    where_b = {x: j for j, x in enumerate(b) if once_b[x] == 1}
    pairs = [(i, where_b[x]) for i, x in enumerate(a) if once_a[x] == 1 and x in where_b]
    tops: list[int] = []  # the smallest j ending an increasing run of each length
    ends: list[int] = []  # ... and that pair's index in `pairs`
    back = [-1] * len(pairs)
    for k, (_, j) in enumerate(pairs):
        n = bisect_left(tops, j)
        back[k] = ends[n - 1] if n else -1
        tops[n : n + 1], ends[n : n + 1] = [j], [k]
    run, k = [], ends[-1] if ends else -1
    while k >= 0:
        run.append(pairs[k])
        k = back[k]
    return run[::-1]


def _small(a: list[str], b: list[str]) -> list[tuple[str, list, list]]:
    """difflib on a stretch small enough that its worst case costs nothing."""
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        out.append(("equal" if op == "equal" else "change", a[i1:i2], b[j1:j2]))
    return out


def _merged(blocks: list[tuple[str, list, list]]) -> list[tuple[str, list, list]]:
    """Neighbouring blocks of one kind as one (extended in place: linear however many there are)."""
    out: list[tuple[str, list, list]] = []
    for op, a, b in blocks:
        if out and out[-1][0] == op:
            out[-1][1].extend(a)
            out[-1][2].extend(b)
        else:
            out.append((op, list(a), list(b)))
    return out


def _paragraphs(text: str | None) -> list[str]:
    return [p for p in map(str.strip, (text or "").split("\n")) if p]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _fold(paragraphs: list[Paragraph], context: int) -> list[Paragraph]:
    """Keep changed paragraphs and `context` unchanged ones either side; each longer unchanged run is a gap."""
    changed = [i for i, p in enumerate(paragraphs) if p.kind == "changed"]
    keep = {j for i in changed for j in range(i - context, i + context + 1)}
    out: list[Paragraph] = []
    for i, p in enumerate(paragraphs):
        if i in keep or p.kind == "changed":
            out.append(p)
        elif out and out[-1].kind == "gap":
            out[-1].skipped += 1
        else:
            out.append(Paragraph("gap", skipped=1))
    return out
