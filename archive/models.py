"""Plain records that flow between the modules: articles in, rejections and results out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class ArchiveError(Exception):
    """A user-facing problem (bad path, bad option, mismatched model). Shells print it without a traceback."""


class SourceError(ArchiveError):
    """A source cannot be read at all (missing file, empty directory)."""


@dataclass
class Article:
    """One normalised article, ready to be chunked and stored.

    `origin` is "path:line" (or "path" for one-article files, "<stdin>:line" for stdin) for messages.
    `published` is ISO 8601 (date or datetime) or None.
    """

    title: str
    body: str
    origin: str
    url: str | None = None
    outlet: str | None = None
    published: str | None = None
    subtitle: str | None = None
    byline: str | None = None
    external_id: str | None = None
    language: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Rejection:
    """A record (or a whole file) that could not be loaded, and why."""

    origin: str
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"

    def to_dict(self) -> dict:
        return {"origin": self.origin, "reason": self.reason}


@dataclass
class Result:
    """One ranked article in a search or related-coverage answer (the `--json` / JSON API shape)."""

    id: int
    url: str | None
    title: str
    outlet: str | None
    published: str | None
    score: float
    passage: str
    same_story: bool | None = None  # related coverage only: on the article's story, or a related topic
    story_id: int | None = None  # the result's story (archive/stories.py), when stories are built
    chunk_id: int | None = None  # the chunk whose text is the passage (None when the passage is a keyword match)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("same_story", "story_id", "chunk_id"):  # absent rather than null where they do not apply
            if d[key] is None:
                d.pop(key)
        return d
