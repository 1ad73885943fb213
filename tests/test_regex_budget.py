"""Time budget for every regex in clean.py and chunk.py, and for the public functions that use them.

A body is cleaned and chunked while the writer holds the database lock, so one pathological input must not
stall a load: each pattern gets 2 MB adversarial inputs (long runs of one character, near misses of its rule)
and must finish within BUDGET_S of CPU time (other processes on a shared machine do not count). The budget is
generous: a linear pass over 2 MB takes milliseconds to a few hundred ms, a quadratic pattern minutes to hours.
Inputs grow 20 kB -> 200 kB -> 2 MB and a case stops early once it is already slower than linear growth allows,
so a regression fails in seconds, not hours; a case over budget at full size is timed once more (noise).

    python tests/test_regex_budget.py      # prints the slowest input of each pattern and function
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable

import pytest

from archive import chunk, clean

SIZE = 2_000_000
BUDGET_S = 1.0  # the limit for each pattern
# The public functions also do Python work per sentence ("A. " * 666k is 666k sentences), so they are linear with
# a larger constant: ~0.8 s here for sentence_spans, more on a slower CI machine. A quadratic one still takes hours.
FUNCTION_BUDGET_S = 3.0
STEPS = (SIZE // 100, SIZE // 10, SIZE)
FLOOR_S = 0.05  # below this a small step says nothing (timer noise, a busy shared CPU)


def _patterns() -> dict[str, re.Pattern]:
    """Every compiled pattern of clean and chunk: module level, in module-level lists of tuples, and the rules."""
    found = {}
    for mod in (clean, chunk):
        for k, v in vars(mod).items():
            if isinstance(v, re.Pattern):
                found[f"{mod.__name__}.{k}"] = v
            elif isinstance(v, list) and k != "_RULES":
                for i, item in enumerate(v):
                    if isinstance(item, tuple) and item and isinstance(item[0], re.Pattern):
                        found[f"{mod.__name__}.{k}[{i}]"] = item[0]
    for i, (name, _, rx) in enumerate(clean._RULES):
        found[f"rule {i:02d} {name}"] = rx
    return found


PATTERNS = _patterns()

# Runs of one thing, and the characters the patterns key on: every pattern gets these.
GENERIC = [
    "A", "a", "7", " ", "\n", ".", "-", "/ ", '"?', "aA", "A A ", "A. ", "\n \n", "(", "<<", "\ufdd0",
]  # fmt: skip

# Near misses, keyed by a part of the names of the patterns they aim at (every function gets them all): a
# pattern's start with no valid end, so every backtracking path gets tried.
NEAR_MISSES = {
    "photo credit": [
        "x / y A", "Ab Cd Ef Gh / ", "A. B. C. D. / ", "Anne / AFPx", "Ab'c-d Ef / Getty", "aB / ", "(Photo: ",
        "(Photos credit: a", "(Image:(", "Photos provided to China ",
    ],
    "app promo": ["<< app", "<< app >", "<< Google Play ", "<<app"],
    "image c": ["Image copyright ", "Image copyright a ", "Image copyright Image caption", "Image copyright a/b"],
    "media playback": ["Media playback is not supported on "],
    "share": [
        "Share this ", "Share this with", "Send Facebook Twitter Google+ Whatsapp Tumblr ", "Newsvine Permalink ",
    ],
    "bbc promo": [
        "How to get into ", "How to get into abc - ", "How to get into abc - defgh", "Run by the BBC and partners ",
        "Run by the BBC and partners For more ideas, information and inspiration, visit ",
    ],
    "huffpost promo": [
        "We'r", "Every week, HuffPost Must Reads features a behind-the-scenes", "The truth is stranger than fiction. ",
        "HuffPost Lifestyle is a daily newsletter that will make you happier and healthier ",
        "Start here, with the latest stories and news in progressive ", "How will Trump's first 100 days impact you?",
    ],
    "trailer": [
        "Learn more ", " Learn more\n", "Source: ", "Source:-A", "Source: Aaa news agenc", "Source: Al Jazeera, ",
    ],
    "print edition": ["(China Daily ", "(China Daily page", "( China Daily USA page "],
    "gallery": ["3 View galler", "1 ", "1 View"],
    "audio player": ["Getting your Trinity Audio player ready."],
    "contact credit": [
        "Contact the writer at ", "Contact the writers through a", "a.b", "a@chinadaily", "a@chinadaily.com.cn and ",
    ],
    "agency credit": [
        "abc/def (AFP, ", "abc/def (", "jbh/rt (AFP/Reuters", "ab/cd-(with dpa, a", "ab/cd (AFP, a, b, c, d",
    ],
    "separator": ["- - ", "- - - - - -a", ". - -", ".-", "-   ", "-\n", "a ---- b", "a.---- b", "a -----b"],
    "_LINE": ["\nread more: a", "\nshare ", "\nRelated - ", "\nSign up!", "\nDownload the app ", "\nget app store "],
    "_TRAILING": [" \n", "\n ", "  x"],
    "_SENTENCE_END": [".)", '."', "a.\n", " \n \n", ". \n", "…"],
    "_DASH": ['encourage-"?', 'a-"? ', "-\"?"],
    "_CONTRACTION": ['don"t', 'n"', 'n"ta'],
    "PASSES": [
        '"\ufffd', 'O"\ufffd', '"\ufffd ', "\ufdd0a", "a\ufdd0", " \ufdd0", "\ufdd0 ", "\ufdd0a" + "b" * 300,
        '\ufdd0a"', '\ufdd0a" ', "\ufdd0.",
    ],
    "_CONTROL": ["\x00", "\u200b", "\ufdd1", "\xa0", "\t"],
}  # fmt: skip

FUNCTIONS: dict[str, Callable[[str], object]] = {
    "clean_text": clean.clean_text,
    "clean_title": clean.clean_title,
    "sentence_spans": chunk.sentence_spans,
}
# Near misses of the whole mojibake path, which the functions run in one go.
ALL_INPUTS = GENERIC + [u for units in NEAR_MISSES.values() for u in units] + ['a"?', '"a"?', '("a ', '"?"']


def _inputs(name: str) -> list[str]:
    return GENERIC + [u for key, units in NEAR_MISSES.items() if key in name for u in units]


def _fill(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _cpu_seconds(fn: Callable[[str], object], text: str) -> float:
    # Garbage collection over a million fresh tuples adds ~0.4 s of noise that says nothing about the algorithm.
    gc.disable()
    try:
        started = time.process_time()
        fn(text)
        return time.process_time() - started
    finally:
        gc.enable()


def _time(fn: Callable[[str], object], unit: str, budget: float) -> tuple[float, int]:
    """CPU seconds for the largest size reached and that size; stops early when growth is already super-linear."""
    for size in STEPS:
        text = _fill(unit, size)
        elapsed = _cpu_seconds(fn, text)
        if size < SIZE and elapsed > max(FLOOR_S, 2 * budget * size / SIZE):
            return elapsed, size
    if elapsed >= budget:
        elapsed = min(elapsed, _cpu_seconds(fn, text))
    return elapsed, size


def _over_budget(fn: Callable[[str], object], units: list[str], budget: float = BUDGET_S) -> list[str]:
    slow = []
    for unit in units:
        elapsed, size = _time(fn, unit, budget)
        if size < SIZE or elapsed >= budget:
            slow.append(f"{unit!r}: {elapsed:.2f} s at {size:,} chars")
    return slow


def _sub(rx: re.Pattern) -> Callable[[str], object]:
    return lambda text: rx.sub(" ", text)


@pytest.mark.slow  # 2 MB adversarial inputs for each of ~60 patterns: about a minute in all
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_regex_is_linear(name: str) -> None:
    assert not _over_budget(_sub(PATTERNS[name]), _inputs(name)), name


@pytest.mark.slow  # each walks 2 MB inputs through the whole cleaner: ~20 s apiece, so outside the fast suite
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_public_function_is_linear(name: str) -> None:
    assert not _over_budget(FUNCTIONS[name], ALL_INPUTS, FUNCTION_BUDGET_S), name


def test_the_budget_catches_a_quadratic_pattern() -> None:
    quadratic = re.compile(r"(?:[A-Z]\w+ ){1,3}/ AFP")  # the shape of the old photo-credit rule
    assert _over_budget(_sub(quadratic), ["A"])


def test_every_pattern_and_near_miss_is_covered() -> None:
    """New patterns are picked up without editing this file; a near miss aimed at no pattern is a typo."""
    assert sum(k.startswith("archive.clean.") for k in PATTERNS) >= 20
    assert "archive.chunk._SENTENCE_END" in PATTERNS
    assert sum(k.startswith("rule ") for k in PATTERNS) == len(clean.BOILERPLATE)
    assert all(any(key in name for name in PATTERNS) for key in NEAR_MISSES)


def main() -> None:
    cases = [(n, _sub(rx), _inputs(n), BUDGET_S) for n, rx in sorted(PATTERNS.items())]
    cases += [(n, fn, ALL_INPUTS, FUNCTION_BUDGET_S) for n, fn in sorted(FUNCTIONS.items())]
    for name, fn, units, budget in cases:
        elapsed, size, unit = max((_time(fn, u, budget) + (u,) for u in units), key=lambda t: t[0] * SIZE / t[1])
        flag = "" if size == SIZE and elapsed < budget else "  OVER BUDGET"
        print(f"{name:45s} {elapsed:7.3f} s at {size:>9,} chars  worst input {unit[:40]!r}{flag}", flush=True)


if __name__ == "__main__":
    main()
