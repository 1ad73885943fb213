"""The rules on query parameters, in one place for the library, the CLI and the Datasette plugin.

Each check returns the clean value or raises ArchiveError with a message fit for a user (the CLI prints it,
the plugin answers 400 with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .models import ArchiveError

MODES = ("hybrid", "semantic", "keyword")
DEFAULT_MODE = "hybrid"  # semantic and keyword fused by reciprocal rank: the best of both on the harness
DEFAULT_K = 10
MAX_K = 100  # results per request, in the CLI as in the plugin (a public server's cost bound)
MAX_QUERY_CHARS = 1000
MAX_WINDOW_DAYS = 36_500


@dataclass(frozen=True)
class RelatedWeights:
    """How related coverage scores a candidate (measured with `python -m benchmarks.quality --sweep`).

    keyword_weight: the hybrid score is (1 - w) x semantic + w x TF-IDF cosine; 0.5 won on Lee r and BBC P@10.
    semantic_score: "both" (soft chunk matching both ways averaged with the mean vectors' cosine), or the
    alternatives measured against it: "chamfer", "mean", "lead" (first chunks only)."""

    keyword_weight: float = 0.5
    semantic_score: str = "both"


DEFAULT_WEIGHTS = RelatedWeights()


def check_k(value: object) -> int:
    """k as a whole number from 1 to MAX_K (text from a form or a canned query is accepted)."""
    if value in (None, ""):
        return DEFAULT_K
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if type(value) is not int or not 1 <= value <= MAX_K:
        raise ArchiveError(f"k must be a whole number from 1 to {MAX_K}")
    return value


def check_mode(value: str | None) -> str:
    if not value:
        return DEFAULT_MODE
    if value not in MODES:
        raise ArchiveError(f"mode must be one of {', '.join(MODES)}")
    return value


def check_query(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ArchiveError("the query is empty")
    if len(value) > MAX_QUERY_CHARS:
        raise ArchiveError(f"the query is too long ({len(value):,} characters; at most {MAX_QUERY_CHARS:,})")
    return value.strip()


def check_window(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_WINDOW_DAYS:
        raise ArchiveError(f"window must be a number of days from 0 to {MAX_WINDOW_DAYS}")
    return value


def parse_date(value: str | None, name: str) -> str | None:
    """An ISO date (YYYY-MM-DD; a datetime's date part is taken), or None when empty."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        raise ArchiveError(f"{name}: {value[:40]!r} is not a date (use YYYY-MM-DD)") from None
