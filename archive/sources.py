"""Readers that turn files (JSON Lines, JSON, CSV/TSV, HTML, text/markdown, stdin) into Article records.

`read_sources` checks every path up front (raising SourceError for missing files and empty folders) and then
yields an `Article` or a `Rejection` per record; bad input inside a file never raises. Every record keeps
its origin ("path:LINE", or "path" for one-article files) so that messages point at the exact line.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import TextIO
from urllib.parse import urlsplit

from dateutil import parser as date_parser

from .clean import clean_text, clean_title
from .models import ArchiveError, Article, Rejection, SourceError

__all__ = ["read_sources", "normalise", "parse_date", "ARTICLE_EXTENSIONS", "FIELDS"]

Record = Article | Rejection

ARTICLE_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".html", ".htm", ".txt", ".md")

# Our field name -> accepted column names (compared after lower-casing, spaces/hyphens -> underscores).
FIELDS: dict[str, tuple[str, ...]] = {
    "title": ("title", "headline"),
    "body": ("body", "text", "content", "article", "story"),
    "url": ("url", "link", "article_source_link", "source_link"),
    "published": ("published", "date", "publish_date", "pubdate", "published_at", "datetime"),
    "outlet": ("outlet", "source", "publisher", "site", "sitename"),
    "subtitle": ("subtitle", "description", "summary", "dek"),
    "byline": ("byline", "author", "authors"),
    "external_id": ("external_id", "id", "article_id", "guid"),
    "language": ("language", "lang"),
}
_ALIAS_TO_FIELD = {alias: name for name, aliases in FIELDS.items() for alias in aliases}

TITLE_MAX = 120


# --- entry point -----------------------------------------------------------------------------------------


def read_sources(
    paths: Iterable[str],
    field_map: dict[str, str] | None = None,
    *,
    encoding: str = "utf-8",
    max_body_chars: int = 2_000_000,
    stdin: TextIO | None = None,
) -> Iterator[Record]:
    """Check every path now, then lazily yield one Article or Rejection per record, in path order."""
    field_map = _check_field_map(field_map)
    files = [f for p in paths for f in _expand(p)]
    opts = _Options(field_map, encoding, max_body_chars)
    return _iterate(files, opts, stdin)


class _Options:
    def __init__(self, field_map: dict[str, str] | None, encoding: str, max_body_chars: int) -> None:
        self.field_map = field_map
        self.encoding = encoding
        self.max_body_chars = max_body_chars

    def article(self, fields: dict, origin: str) -> Record:
        return normalise(fields, origin, self.field_map, max_body_chars=self.max_body_chars)


def _check_field_map(field_map: dict[str, str] | None) -> dict[str, str] | None:
    """Accept our names or their aliases as keys (body=..., text=..., author=...); reject anything else."""
    if not field_map:
        return None
    out = {}
    for key, column in field_map.items():
        name = _ALIAS_TO_FIELD.get(_key(key))
        if name is None:
            raise ArchiveError(f"unknown field {key!r} in the field map (known: {', '.join(FIELDS)})")
        out[name] = column
    return out


def _expand(path: str) -> list[str]:
    if path == "-":
        return ["-"]
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file or directory")
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, n)
            for n in sorted(names)
            if not n.startswith(".") and n.lower().endswith(ARTICLE_EXTENSIONS)
        ]
    if not found:
        exts = ", ".join(ARTICLE_EXTENSIONS)
        raise SourceError(f"{path}: no article files found (looked for {exts})")
    return found


def _iterate(files: list[str], opts: _Options, stdin: TextIO | None) -> Iterator[Record]:
    for path in files:
        if path == "-":
            yield from _read_stdin(stdin if stdin is not None else sys.stdin, opts)
        else:
            yield from _read_file(path, opts)


# --- files -----------------------------------------------------------------------------------------------


def _read_stdin(stream: TextIO, opts: _Options) -> Iterator[Record]:
    try:
        yield from _jsonl_lines(enumerate(stream, 1), "<stdin>", opts)
    except (OSError, UnicodeDecodeError) as e:  # a closed or undecodable stream still must not raise
        yield Rejection("<stdin>", f"cannot read standard input: {e}")


def _read_file(path: str, opts: _Options) -> Iterator[Record]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        yield Rejection(path, f"cannot read: {e.strerror or e}")
        return
    text = _decode(data, path, opts.encoding)
    if isinstance(text, Rejection):
        yield text
        return
    text = text.replace("\x00", "")  # csv and lxml choke on NULs; they are never meaningful in articles
    if not text.strip():
        yield Rejection(path, "empty file")
        return
    reader = _reader_for(path, text)
    if reader is None:
        yield Rejection(
            path,
            f"unknown format (expected one of {', '.join(ARTICLE_EXTENSIONS)}, or content starting with [, {{ or <)",
        )
        return
    try:
        yield from reader(text, path, opts)
    except Exception as e:  # noqa: BLE001 - a parser bug on odd input must cost one file, not the load
        yield Rejection(path, f"could not read: {type(e).__name__}: {e}")


def _decode(data: bytes, path: str, encoding: str) -> str | Rejection:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        name = "UTF-8" if codec == "utf-8-sig" else encoding
        byte = data[e.start]
        return Rejection(
            path, f"not valid {name} (byte 0x{byte:02x} at offset {e.start}); re-encode it or pass --encoding"
        )
    except LookupError:
        return Rejection(path, f"unknown encoding {encoding!r}")


def _reader_for(path: str, text: str):
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson"):
        return _read_jsonl
    if ext == ".json":
        return _read_json
    if ext in (".csv", ".tsv"):
        return _read_csv
    if ext in (".html", ".htm"):
        return _read_html
    if ext in (".txt", ".md"):
        return _read_text
    first = text.lstrip()[:1]
    return {"[": _read_json, "{": _read_jsonl, "<": _read_html}.get(first)


# --- JSON ------------------------------------------------------------------------------------------------


def _json_error(e: json.JSONDecodeError, with_line: bool = False) -> str:
    where = f"line {e.lineno} column {e.colno}" if with_line else f"column {e.colno}"
    return f"invalid JSON: {e.msg} ({where})"


def _object_or_rejection(value: object, origin: str, opts: _Options) -> Record:
    if not isinstance(value, dict):
        return Rejection(origin, f"expected a JSON object, got {_json_type(value)}")
    return opts.article(value, origin)


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def _jsonl_lines(lines: Iterable[tuple[int, str]], path: str, opts: _Options) -> Iterator[Record]:
    for lineno, line in lines:
        line = line.replace("\x00", "").strip()
        if not line:
            continue
        origin = f"{path}:{lineno}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            yield Rejection(origin, _json_error(e))
            continue
        except RecursionError:
            yield Rejection(origin, "invalid JSON: nested too deeply")
            continue
        yield _object_or_rejection(value, origin, opts)


def _read_jsonl(text: str, path: str, opts: _Options) -> Iterator[Record]:
    # Only \n, \r\n and \r end a JSON Lines record: str.splitlines() would also split at U+2028, U+0085 and
    # friends, which JSON allows raw inside strings, breaking valid records and miscounting lines.
    return _jsonl_lines(enumerate(re.split("\r\n|\r|\n", text), 1), path, opts)


def _read_json(text: str, path: str, opts: _Options) -> Iterator[Record]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _json_array(text, path, opts)
        return
    if stripped.startswith("{"):
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            yield from _read_jsonl(text, path, opts)  # several objects, one per line
            return
        yield _object_or_rejection(value, path, opts)
        return
    yield from _read_jsonl(text, path, opts)


_WS = re.compile(r"\s*")


def _json_array(text: str, path: str, opts: _Options) -> Iterator[Record]:
    """Decode the array element by element so each record knows the line it starts on."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    line_of = lambda pos: bisect.bisect_left(newlines, pos) + 1  # noqa: E731
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end() + 1  # past "["
    index = 0
    while True:
        pos = _WS.match(text, pos).end()
        if pos >= len(text):
            yield Rejection(f"{path}:{line_of(pos)}", "invalid JSON: unterminated array")
            return
        if text[pos] == "]" and index == 0:
            break
        origin = f"{path}:{line_of(pos)}"
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield Rejection(origin, _json_error(e, with_line=True) + "; rest of the file skipped")
            return
        except RecursionError:
            yield Rejection(origin, "invalid JSON: nested too deeply; rest of the file skipped")
            return
        yield _object_or_rejection(value, origin, opts)
        index += 1
        pos = _WS.match(text, pos).end()
        if text[pos : pos + 1] == ",":
            pos += 1
        elif text[pos : pos + 1] == "]":
            break
        else:
            yield Rejection(
                f"{path}:{line_of(pos)}",
                "invalid JSON: expected ',' or ']' after an array element; rest of the file skipped",
            )
            return
    if text[pos + 1 :].strip():
        yield Rejection(f"{path}:{line_of(pos + 1)}", "invalid JSON: extra data after the array (ignored)")


# --- CSV -------------------------------------------------------------------------------------------------


def _sniff_dialect(text: str, path: str) -> type[csv.Dialect] | csv.Dialect:
    fallback = csv.excel_tab if path.lower().endswith(".tsv") else csv.excel
    sample = text[:65536]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",\t;|")
    except csv.Error:
        return fallback
    # The sniffer guesses from a sample; trust it only if it splits the header like the fallback would or
    # finds more columns than it.
    header = sample.split("\n", 1)[0]
    try:
        ours = next(csv.reader([header], dialect), [])
        theirs = next(csv.reader([header], fallback), [])
    except csv.Error:  # e.g. a lone \r in the header: let the real reader report it with its line
        return fallback
    if len(ours) < max(2, len(theirs)):
        return fallback
    if not dialect.escapechar:  # the sniffer says doublequote=False when it sees no "" in the sample: RFC 4180
        dialect.doublequote = True  # escapes quotes by doubling, and without an escapechar nothing else can
    return dialect


def _read_csv(text: str, path: str, opts: _Options) -> Iterator[Record]:
    csv.field_size_limit(2**31 - 1)  # bodies of several MB are real; the normaliser enforces the limit
    dialect = _sniff_dialect(text, path)
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    header: list[str] | None = None
    last_line = 0
    physical_lines = io.StringIO(text, newline="").readlines()
    while True:
        start = last_line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            yield Rejection(f"{path}:{start}", f"CSV error: {e}; rest of the file skipped")
            return
        last_line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if header is None:
            header = [h.strip() or f"column{i + 1}" for i, h in enumerate(row)]
            continue
        origin = f"{path}:{start}"
        if len(row) != len(header):
            yield Rejection(origin, f"expected {len(header)} fields (as in the header), got {len(row)}")
            continue
        if last_line >= len(physical_lines) and _ends_inside_quotes(physical_lines[start - 1 :], dialect):
            # the lenient reader returns a half-written last row as if whole: never let it overwrite an article
            yield Rejection(origin, "unterminated quoted field at the end of the file (truncated?)")
            continue
        yield opts.article(dict(zip(header, row)), origin)
    if header is None:
        yield Rejection(path, "no header row")


def _ends_inside_quotes(lines: list[str], dialect) -> bool:
    try:
        list(csv.reader(lines, dialect, strict=True))
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


# --- HTML, text ------------------------------------------------------------------------------------------


def _read_html(text: str, path: str, opts: _Options) -> Iterator[Record]:
    import trafilatura  # slow to import; only HTML loads pay for it

    def extract(with_metadata: bool):
        return trafilatura.bare_extraction(
            text, with_metadata=with_metadata, include_comments=False, include_tables=False
        )

    try:
        doc = extract(True)
    except Exception:  # htmldate's date search asserts on some malformed trees, e.g. "<iframe><html>"
        try:
            doc = extract(False)
        except Exception as e:
            yield Rejection(path, f"the HTML could not be parsed ({type(e).__name__})")
            return
    if doc is None:
        yield Rejection(path, "no article text found in the HTML")
        return
    meta = doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)
    body = meta.get("text") or ""
    title = meta.get("title") or ""
    first, _, rest = body.partition("\n")
    if title and first.strip() == title.strip():  # trafilatura repeats the <h1> as the first line
        body = rest
    fields = {
        "title": title,
        "body": body,
        "url": meta.get("url"),
        "published": meta.get("date"),
        "byline": meta.get("author"),
        "outlet": meta.get("sitename"),
        "subtitle": meta.get("description"),
        "language": meta.get("language"),
    }
    yield normalise(fields, path, max_body_chars=opts.max_body_chars)


def _read_text(text: str, path: str, opts: _Options) -> Iterator[Record]:
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.strip())  # the file is not blank: checked earlier
    title = lines[i].strip()
    if path.lower().endswith(".md"):
        title = title.lstrip("#").strip()
    body = "\n".join(lines[i + 1 :])
    yield opts.article({"title": title, "body": body}, path)


# --- normalisation ---------------------------------------------------------------------------------------


def _key(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [s for s in (_value(v) for v in value) if s]
        return ", ".join(parts) or None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value).strip()
    return text or None


def _pick(fields: dict, field_map: dict[str, str] | None) -> tuple[dict[str, object], dict]:
    """Split a raw record into our fields (first non-empty alias wins) and everything else."""
    by_key = {}
    for k, v in fields.items():
        by_key.setdefault(_key(k), (k, v))
    used: set[str] = set()
    ours: dict[str, object] = {}
    for name, aliases in FIELDS.items():
        candidates = ([_key(field_map[name])] if field_map and name in field_map else []) + list(aliases)
        for cand in candidates:
            if cand in by_key and _value(by_key[cand][1]) is not None:
                ours[name] = by_key[cand][1]
                used.add(cand)
                break
    extra = {orig: v for key, (orig, v) in by_key.items() if key not in used and _value(v) is not None}
    return ours, extra


def _url(value: str | None) -> str | None:
    if not value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme.lower() in ("http", "https") and parts.hostname else None


def _host(url: str) -> str | None:
    host = urlsplit(url).hostname
    return host[4:] if host and host.startswith("www.") else host


def derive_title(body: str) -> str:
    """A title from the body's first sentence, at most TITLE_MAX chars, cut at a word boundary."""
    first = re.split(r"(?<=[.!?])\s+|\n", body.strip(), maxsplit=1)[0].strip()
    if len(first) <= TITLE_MAX:
        return first
    cut = first[: TITLE_MAX - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-\u2014") + "\u2026"


def normalise(
    fields: dict, origin: str, field_map: dict[str, str] | None = None, *, max_body_chars: int = 2_000_000
) -> Record:
    """Map a raw record (any column names) to an Article, or say why it cannot be one."""
    if field_map:
        field_map = _check_field_map(field_map)
    ours, extra = _pick(fields, field_map)
    raw_body = _value(ours.get("body")) or ""
    if len(raw_body) > max_body_chars:
        return Rejection(origin, f"body too long: {len(raw_body):,} characters (limit {max_body_chars:,})")
    body = clean_text(raw_body)
    if not body:
        return Rejection(origin, "no body text")
    title = clean_title(_value(ours.get("title"))) or derive_title(body)

    url_raw = _value(ours.get("url"))
    url = _url(url_raw)
    if url_raw and not url:
        extra["url_raw"] = url_raw
    published_raw = _value(ours.get("published"))
    published = parse_date(published_raw) if published_raw else None
    if published_raw and not published:
        extra["published_raw"] = published_raw

    return Article(
        title=title,
        body=body,
        origin=origin,
        url=url,
        outlet=clean_title(_value(ours.get("outlet"))) or (_host(url) if url else None),
        published=published,
        subtitle=clean_title(_value(ours.get("subtitle"))) or None,
        byline=clean_title(_value(ours.get("byline"))) or None,
        external_id=_value(ours.get("external_id")),
        language=_value(ours.get("language")),
        extra=extra,
    )


# --- dates -----------------------------------------------------------------------------------------------

_EPOCH = re.compile(r"^\d{9,10}(?:\.\d+)?$|^\d{12,13}$")
# Two defaults that differ in every part: what the two parses agree on came from the text itself.
_DEFAULT_A = datetime(2000, 1, 1, 0, 0, 0)
_DEFAULT_B = datetime(2001, 2, 2, 1, 1, 1)


def parse_date(value: str | None) -> str | None:
    """ISO 8601 from common date forms; None when the value is not a complete, plausible date."""
    if not value:
        return None
    value = value.strip()
    if _EPOCH.match(value):
        seconds = float(value) / (1000 if len(value) >= 12 else 1)
        try:
            dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
        return dt.isoformat(timespec="seconds") if 1800 <= dt.year <= 2100 else None
    try:
        a = date_parser.parse(value, default=_DEFAULT_A)
        b = date_parser.parse(value, default=_DEFAULT_B)
    except (ValueError, OverflowError, TypeError, LookupError):
        return None
    if (a.year, a.month, a.day) != (b.year, b.month, b.day) or not 1800 <= a.year <= 2100:
        return None
    if (a.hour, a.minute) != (b.hour, b.minute):
        return a.date().isoformat()
    return a.replace(microsecond=0).isoformat(timespec="seconds")
