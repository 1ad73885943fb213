"""Readers that turn files (JSON Lines, JSON, CSV/TSV, HTML, text/markdown, WARC, stdin) into Article records.

Reading and parsing are split so that parsing can run in worker processes: `read_raw` walks the inputs and
yields one cheap, picklable `Raw` per record (or a `Rejection` for a file that cannot be read), and the pure
function `parse_raw` turns a Raw into an `Article` or a `Rejection`. `read_sources` is the two chained.

Paths are checked up front (SourceError for missing files and empty folders); after that bad input never
raises: it costs its own record, or the rest of its file when the file itself is broken. Every record keeps
its origin ("path:LINE", "path" for one-article files, "path@OFFSET" for a WARC record) for messages.

Inputs stream (the byte and text layer is streams.py): files are decoded in chunks, so no reader holds a whole
file, only one record at a time (at most RECORD_MAX_CHARS). `.gz`, `.bz2` and `.xz` files are read through
their decompressor; the format comes from the extension in front of the compression suffix (`x.jsonl.gz`).
WARC files (`.warc`, `.warc.gz`) give one record per HTML response; other records are counted in `skipped`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from itertools import chain
from typing import BinaryIO, TextIO
from urllib.parse import urlsplit

from dateutil import parser as date_parser

from .clean import clean_text, clean_title
from .models import ArchiveError, Article, Rejection, SourceError
from .streams import (
    CHUNK,
    COMPRESSION_SUFFIXES,
    INT_LIMIT,
    INT_MAX_DIGITS,
    JSON,
    NESTED,
    Broken,
    JsonWindow,
    LongNumber,
    Text,
    byte_chunks,
    decoded,
    decompressed,
    format_of,
    json_error,
    open_regular,
    read_all,
    split_lines,
)

__all__ = [
    "read_sources",
    "read_raw",
    "parse_raw",
    "source_files",
    "normalise",
    "parse_date",
    "Raw",
    "RawReader",
    "Records",
    "ARTICLE_EXTENSIONS",
    "COMPRESSION_SUFFIXES",
    "FIELDS",
    "FIELD_LIMITS",
]

Record = Article | Rejection

ARTICLE_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".html", ".htm", ".warc", ".txt", ".md")

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

# Longest raw value (characters) accepted per field: anything longer is not that field, and some cost dearly
# to parse (dateutil takes ~25 s over a 2 MB date string).
FIELD_LIMITS = {"title": 2_000, "outlet": 500, "byline": 2_000, "url": 8_192, "published": 200}

TITLE_MAX = 120  # a derived title's length
TITLE_LINE_MAX = 250  # a text file's first line longer than this is a paragraph, not a title
RECORD_MAX_CHARS = 32 * 2**20  # one record (a JSON Lines line, a CSV row, an HTML page) at most; keeps memory flat
MAX_DEPTH = 64  # nesting of a record's values

# --- records between reading and parsing ------------------------------------------------------------------


@dataclass
class Raw:
    """One undecoded record: cheap to make and to pickle, turned into an Article by `parse_raw`.

    kind: "fields" (payload: a dict of columns/keys), "json" (payload: the text of one JSON value, e.g. a JSON
    Lines line: decoding it is parsing work), "html" (a page's text) or "text" (a .txt/.md file's text).
    meta: e.g. {"url": ..., "published": ...} from a WARC record header, {"markdown": True} for .md files.
    """

    kind: str
    payload: object
    origin: str
    meta: dict = field(default_factory=dict)


class RawReader:
    """Iterator of Raw | Rejection over checked files; `skipped` counts records passed over on purpose.

    Skipped records are not errors (a WARC's request, metadata and non-HTML response records), so they are
    counted by kind, e.g. {"WARC request record": 12, "WARC response not HTML": 3}, rather than rejected.
    """

    def __init__(self, files: list[str], encoding: str, stdin: TextIO | None, max_record_chars: int) -> None:
        self.skipped: Counter[str] = Counter()
        self._items = _iterate(files, encoding, stdin, max_record_chars, self.skipped)

    def __iter__(self) -> RawReader:
        return self

    def __next__(self) -> Raw | Rejection:
        return next(self._items)


class Records:
    """What `read_sources` returns: an iterator of Article | Rejection, with the reader's `skipped` counts."""

    def __init__(self, raws: RawReader, field_map: dict[str, str] | None, max_body_chars: int) -> None:
        self._raws, self._field_map, self._max_body_chars = raws, field_map, max_body_chars

    @property
    def skipped(self) -> Counter[str]:
        return self._raws.skipped

    def __iter__(self) -> Records:
        return self

    def __next__(self) -> Record:
        item = next(self._raws)
        return item if isinstance(item, Rejection) else parse_raw(item, self._field_map, self._max_body_chars)


# --- entry points -----------------------------------------------------------------------------------------


def read_sources(
    paths: Iterable[str],
    field_map: dict[str, str] | None = None,
    *,
    encoding: str = "utf-8",
    max_body_chars: int = 2_000_000,
    stdin: TextIO | None = None,
) -> Records:
    """Check every path now, then lazily yield one Article or Rejection per record, in path order."""
    field_map = _check_field_map(field_map)
    raws = read_raw(paths, encoding=encoding, stdin=stdin, max_record_chars=max(RECORD_MAX_CHARS, 4 * max_body_chars))
    return Records(raws, field_map, max_body_chars)


def read_raw(
    paths: Iterable[str],
    field_map: dict[str, str] | None = None,
    *,
    encoding: str = "utf-8",
    stdin: TextIO | None = None,
    max_record_chars: int = RECORD_MAX_CHARS,
) -> RawReader:
    """Check every path (and the field map) now, then lazily yield one Raw per record, or a Rejection."""
    _check_field_map(field_map)  # parse_raw applies it; a bad one must fail here, before any work
    return RawReader(source_files(paths), encoding, stdin, max_record_chars)


def source_files(paths: Iterable[str]) -> list[str]:
    """The files read_raw reads for these paths, in its order ("-" is stdin); SourceError for a missing path
    or a folder without article files."""
    return [f for p in paths for f in _expand(p)]


def parse_raw(raw: Raw, field_map: dict[str, str] | None = None, max_body_chars: int = 2_000_000) -> Record:
    """Turn one Raw into an Article or a Rejection; never raises for bad data (pure, safe in a worker)."""
    field_map = _check_field_map(field_map)
    try:
        return _PARSERS[raw.kind](raw, field_map, max_body_chars)
    except Exception as e:  # noqa: BLE001 - RecursionError, ValueError, a parser bug: one record, not the load
        return Rejection(raw.origin, f"could not parse the record: {type(e).__name__}: {str(e)[:200]}")


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


def _is_article_file(name: str) -> bool:
    name = name.lower()
    inner = next((name[: -len(s)] for s in COMPRESSION_SUFFIXES if name.endswith(s)), name)
    return inner.endswith(ARTICLE_EXTENSIONS)


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
        found += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".") and _is_article_file(n)]
    if not found:
        exts = ", ".join(ARTICLE_EXTENSIONS)
        raise SourceError(f"{path}: no article files found (looked for {exts}), plain or .gz, .bz2, .xz")
    return found


def _iterate(
    files: list[str], encoding: str, stdin: TextIO | None, limit: int, skipped: Counter
) -> Iterator[Raw | Rejection]:
    for path in files:
        if path == "-":
            yield from _read_stdin(stdin if stdin is not None else sys.stdin, limit)
        else:
            yield from _read_file(path, encoding, limit, skipped)


# --- files ------------------------------------------------------------------------------------------------


def _read_stdin(stream: TextIO, limit: int) -> Iterator[Raw | Rejection]:
    try:
        yield from _jsonl(_stdin_lines(stream, limit), "<stdin>", limit)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # a closed or undecodable stream still must not raise
        yield Rejection("<stdin>", f"cannot read standard input: {e}")


def _stdin_lines(stream: TextIO, limit: int) -> Iterator[str | None]:
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith("\n"):
            yield line
            continue
        while line and not line.endswith("\n"):  # drop the rest of an over-long line, a piece at a time
            line = stream.readline(CHUNK)
        yield None


def _read_file(path: str, encoding: str, limit: int, skipped: Counter) -> Iterator[Raw | Rejection]:
    ext, compression = format_of(path)
    count = 0
    try:
        with open_regular(path) as f:
            # warcio reads .warc.gz itself, member by member, so that a corrupt member costs the file's rest only
            plain = compression is None or (ext == ".warc" and compression == ".gz")
            binary = f if plain else decompressed(f, compression)
            if ext == ".warc":
                reader = _read_warc(binary, path, limit, skipped)
            else:
                reader = _read_text_file(
                    Text(decoded(byte_chunks(binary, bool(compression)), encoding)), path, ext, limit
                )
            for item in reader:
                count += 1
                yield item
    except Broken as e:
        yield Rejection(path, f"{e}; rest of the file skipped" if count else str(e))
    except OSError as e:
        yield Rejection(path, f"cannot read: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - a reader bug on odd input must cost one file, not the load
        yield Rejection(path, f"could not read: {type(e).__name__}: {e}")


def _read_text_file(text: Text, path: str, ext: str, limit: int) -> Iterator[Raw | Rejection]:
    first = text.first_char()
    if not first:
        yield Rejection(path, "empty file")
        return
    reader = _reader_for(ext, first)
    if reader is None:
        yield Rejection(
            path,
            f"unknown format (expected one of {', '.join(ARTICLE_EXTENSIONS)}, or content starting with [, {{ or <)",
        )
        return
    yield from reader(text, path, limit)


def _reader_for(ext: str, first: str) -> Callable[[Text, str, int], Iterator[Raw | Rejection]] | None:
    by_ext = {
        ".jsonl": _read_jsonl,
        ".ndjson": _read_jsonl,
        ".json": _read_json,
        ".csv": _read_csv,
        ".tsv": _read_csv,
        ".html": _read_whole("html"),
        ".htm": _read_whole("html"),
        ".txt": _read_whole("text"),
        ".md": _read_whole("text", markdown=True),
    }
    if ext in by_ext:
        return by_ext[ext]
    return {"[": _read_json, "{": _read_jsonl, "<": _read_whole("html")}.get(first)


def _read_whole(kind: str, **meta: object) -> Callable[[Text, str, int], Iterator[Raw | Rejection]]:
    """A one-article file (HTML page, text, markdown): read whole, up to the record limit."""

    def read(text: Text, path: str, limit: int) -> Iterator[Raw | Rejection]:
        whole = read_all(text.take(), limit)
        if whole is None:
            yield Rejection(path, f"file too long: more than {limit:,} characters")
        else:
            yield Raw(kind, whole, path, dict(meta))

    return read


# --- JSON -------------------------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    kinds = [(bool, "a boolean"), ((int, float, LongNumber), "a number"), (str, "a string"), (list, "an array")]
    return next((name for t, name in kinds if isinstance(value, t)), "null" if value is None else type(value).__name__)


def _jsonl(lines: Iterable[str | None], path: str, limit: int) -> Iterator[Raw | Rejection]:
    for lineno, line in enumerate(lines, 1):
        if line is None:
            yield Rejection(f"{path}:{lineno}", f"record too long: more than {limit:,} characters")
            continue
        line = line.strip()
        if line:
            yield Raw("json", line, f"{path}:{lineno}")


def _read_jsonl(text: Text, path: str, limit: int) -> Iterator[Raw | Rejection]:
    # Only \n, \r\n and \r end a JSON Lines record: str.splitlines() would also split at U+2028, U+0085 and
    # friends, which JSON allows raw inside strings, breaking valid records and miscounting lines.
    return _jsonl(split_lines(text.take(), limit), path, limit)


def _read_json(text: Text, path: str, limit: int) -> Iterator[Raw | Rejection]:
    first = text.first_char()
    if first == "[":
        yield from _json_array(JsonWindow(text.take()), path, limit)
    elif first == "{":
        yield from _json_object_or_lines(JsonWindow(text.take()), path, limit)
    else:
        yield from _read_jsonl(text, path, limit)


def _json_object_or_lines(w: JsonWindow, path: str, limit: int) -> Iterator[Raw | Rejection]:
    """One object (origin: the file), or else several, one per line (the window still holds the start)."""
    got = w.decode(w.skip_ws(0), limit)
    if isinstance(got, tuple) and got[0] is not NESTED and w.rest_is_blank(got[1]):
        yield Raw("fields", got[0], path)
    else:
        yield from _jsonl(split_lines(chain([w.buf], w.chunks), limit), path, limit)


def _json_array(w: JsonWindow, path: str, limit: int) -> Iterator[Raw | Rejection]:
    """Decode the array element by element, streaming, so each record knows the line it starts on."""
    pos, index = w.skip_ws(0) + 1, 0  # past "["
    while True:
        pos = w.skip_ws(pos)
        if pos >= len(w.buf):
            yield Rejection(f"{path}:{w.line_at(pos)}", "invalid JSON: unterminated array")
            return
        if w.buf[pos] == "]" and index == 0:
            break
        pos = w.compact(pos)
        origin = f"{path}:{w.line_at(pos)}"
        got = w.decode(pos, limit)
        if isinstance(got, str):
            yield Rejection(origin, got + "; rest of the file skipped")
            return
        value, pos = got
        if value is NESTED:
            yield Rejection(origin, "invalid JSON: nested too deeply")
        elif isinstance(value, dict):
            yield Raw("fields", value, origin)
        else:
            yield Rejection(origin, f"expected a JSON object, got {_json_type(value)}")
        index += 1
        pos = w.skip_ws(pos)
        if w.buf[pos : pos + 1] == ",":
            pos += 1
        elif w.buf[pos : pos + 1] == "]":
            break
        else:
            yield Rejection(
                f"{path}:{w.line_at(pos)}",
                "invalid JSON: expected ',' or ']' after an array element; rest of the file skipped",
            )
            return
    if not w.rest_is_blank(pos + 1):
        yield Rejection(f"{path}:{w.line_at(pos + 1)}", "invalid JSON: extra data after the array (ignored)")


# --- CSV --------------------------------------------------------------------------------------------------

SNIFF_CHARS = 4096


def _sniff_dialect(sample: str, path: str) -> type[csv.Dialect] | csv.Dialect:
    fallback = csv.excel_tab if format_of(path)[0] == ".tsv" else csv.excel
    if "\n" in sample[1:]:  # whole lines only: a cut line would skew the sniffer's column counts
        sample = sample[: sample.rindex("\n") + 1]
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


class _RowLines:
    """Feeds physical lines to csv.reader, keeping those of the current row; refuses over-long rows."""

    def __init__(self, lines: Iterator[str | None], limit: int) -> None:
        self._lines, self._limit, self._next = lines, limit, None
        self.taken: list[str] = []
        self._size = 0

    def start_row(self) -> None:
        self.taken, self._size = [], 0

    def __iter__(self) -> _RowLines:
        return self

    def __next__(self) -> str:
        if self._next is None:
            line = next(self._lines)
        else:
            line, self._next = self._next, None
            if line == "":  # the end, seen by at_end()
                raise StopIteration
        if line is None or self._size + len(line) > self._limit:  # e.g. a stray quote swallowing the file
            raise csv.Error(f"a row longer than {self._limit:,} characters (an unterminated quote?)")
        self._size += len(line)
        self.taken.append(line)
        return line

    def at_end(self) -> bool:
        if self._next is None:
            self._next = next(self._lines, "")
        return self._next == ""


def _read_csv(text: Text, path: str, limit: int) -> Iterator[Raw | Rejection]:
    csv.field_size_limit(2**31 - 1)  # bodies of several MB are real; rows are capped by _RowLines
    dialect = _sniff_dialect(text.peek(SNIFF_CHARS), path)
    lines = _RowLines(split_lines(text.take(), limit), limit)
    reader = csv.reader(lines, dialect)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        lines.start_row()
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            yield Rejection(f"{path}:{start}", f"CSV error: {e}; rest of the file skipped")
            return
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if header is None:
            header = [h.strip() or f"column{i + 1}" for i, h in enumerate(row)]
            continue
        origin = f"{path}:{start}"
        if len(row) != len(header):
            yield Rejection(origin, f"expected {len(header)} fields (as in the header), got {len(row)}")
        elif lines.at_end() and _ends_inside_quotes(lines.taken, dialect):
            # the lenient reader returns a half-written last row as if whole: never let it overwrite an article
            yield Rejection(origin, "unterminated quoted field at the end of the file (truncated?)")
        else:
            yield Raw("fields", dict(zip(header, row)), origin)
    if header is None:
        yield Rejection(path, "no header row")


def _ends_inside_quotes(lines: list[str], dialect) -> bool:
    try:
        list(csv.reader(lines, dialect, strict=True))
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


# --- WARC -------------------------------------------------------------------------------------------------

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHARSET = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _read_warc(binary: BinaryIO, path: str, limit: int, skipped: Counter) -> Iterator[Raw | Rejection]:
    """Each HTML response record becomes a Raw("html"); other records are counted in `skipped`."""
    from warcio.archiveiterator import ArchiveIterator  # only WARC loads pay for the import

    records, offset = ArchiveIterator(binary), None
    while True:
        where = "at its start" if offset is None else f"after offset {offset:,}"
        try:
            record = next(records, None)
            if record is None:
                return
            offset = records.offset  # the record's start; get_record_offset() would read past its content
            where = f"at offset {offset:,}"
            item = _warc_item(record, f"{path}@{offset}", limit, skipped)
        except Exception as e:  # noqa: BLE001 - warcio raises many types on a corrupt or truncated file
            raise Broken(f"corrupt or truncated WARC {where} ({type(e).__name__}: {e})") from None
        if item is not None:
            yield item


def _warc_item(record, origin: str, limit: int, skipped: Counter) -> Raw | Rejection | None:
    if record.rec_type is None or not hasattr(record.raw_stream, "limit"):
        raise ValueError("unreadable record header")
    if record.rec_type != "response":
        skipped[f"WARC {record.rec_type} record"] += 1
        return None
    http = record.http_headers
    content_type = (http.get_header("Content-Type") if http else None) or ""
    if content_type.split(";")[0].strip().lower() not in _HTML_TYPES:
        skipped["WARC response not HTML"] += 1
        return None
    status = http.get_statuscode() or ""
    if not status.startswith("2"):
        skipped["WARC response not 2xx"] += 1
        return None
    data = record.content_stream().read(limit + 1)
    if len(data) > limit:
        return Rejection(origin, f"record too long: more than {limit:,} bytes")
    if record.raw_stream.limit > 0:
        raise ValueError(f"record cut short ({record.raw_stream.limit:,} bytes missing)")
    meta = {
        "url": record.rec_headers.get_header("WARC-Target-URI"),
        "published": record.rec_headers.get_header("WARC-Date"),
    }
    return Raw("html", _decode_html(data, content_type), origin, meta)


def _decode_html(data: bytes, content_type: str) -> str:
    """Text of a page: the charset from its HTTP header, else from its <meta>, else UTF-8."""
    found = _CHARSET.search(content_type.encode("latin-1", "replace")) or _CHARSET.search(data[:4096])
    codec = found.group(1).decode("ascii") if found else "utf-8"
    try:
        return data.decode(codec, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


# --- parsing ----------------------------------------------------------------------------------------------


def _parse_fields(raw: Raw, field_map: dict[str, str] | None, max_body_chars: int) -> Record:
    if not isinstance(raw.payload, dict):
        return Rejection(raw.origin, f"expected a JSON object, got {_json_type(raw.payload)}")
    return normalise(raw.payload, raw.origin, field_map, max_body_chars=max_body_chars)


def _parse_json(raw: Raw, field_map: dict[str, str] | None, max_body_chars: int) -> Record:
    try:
        value = JSON.decode(raw.payload)
    except json.JSONDecodeError as e:
        return Rejection(raw.origin, json_error(e))
    except RecursionError:
        return Rejection(raw.origin, "invalid JSON: nested too deeply")
    return _parse_fields(Raw("fields", value, raw.origin), field_map, max_body_chars)


# Dates from the page's markup and URL only: htmldate's extensive search takes any year in the text ("after
# the 2000 Florida recount" made 2000-01-01); no date is better than a wrong one, and a WARC has the crawl's.
_DATE_SEARCH = {"original_date": True, "extensive_search": False}


def _parse_html(raw: Raw, field_map: dict[str, str] | None, max_body_chars: int) -> Record:
    import trafilatura  # slow to import; only HTML loads pay for it

    def extract(with_metadata: bool):
        return trafilatura.bare_extraction(
            raw.payload,
            url=raw.meta.get("url"),
            with_metadata=with_metadata,
            include_comments=False,
            include_tables=False,
            date_extraction_params=_DATE_SEARCH,
        )

    try:
        doc = extract(True)
    except Exception:  # htmldate's date search asserts on some malformed trees, e.g. "<iframe><html>"
        try:
            doc = extract(False)
        except Exception as e:
            return Rejection(raw.origin, f"the HTML could not be parsed ({type(e).__name__})")
    if doc is None:
        return Rejection(raw.origin, "no article text found in the HTML")
    meta = doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)
    body = meta.get("text") or ""
    title = meta.get("title") or ""
    first, _, rest = body.partition("\n")
    if title and first.strip() == title.strip():  # trafilatura repeats the <h1> as the first line
        body = rest
    url = meta.get("url")
    fields = {
        "title": title,
        "body": body,
        "url": url if _url(url) else raw.meta.get("url"),  # the page's canonical URL, else the fetched one
        "published": meta.get("date") or raw.meta.get("published"),  # the page's date, else the crawl's
        "byline": meta.get("author"),
        "outlet": meta.get("sitename"),
        "subtitle": meta.get("description"),
        "language": meta.get("language"),
    }
    return normalise(fields, raw.origin, max_body_chars=max_body_chars)


_SENTENCE_END = re.compile(r"[.,:;][\"'\u201d\u2019)\]]*$")


def _looks_like_title(line: str) -> bool:
    """A headline line: short, and not ending like a sentence (a body's first paragraph does)."""
    if not line or len(line) > TITLE_LINE_MAX:
        return False
    return line.endswith("...") or not _SENTENCE_END.search(line)


def _parse_text(raw: Raw, field_map: dict[str, str] | None, max_body_chars: int) -> Record:
    """A text file: the title is its first line that survives cleaning, if that reads as a headline."""
    text = raw.payload
    if len(text) > max_body_chars + TITLE_LINE_MAX + 2:  # cheap test before the cleaner runs over it
        return Rejection(raw.origin, f"body too long: {len(text):,} characters (limit {max_body_chars:,})")
    cleaned = clean_text(text)  # scraper furniture before the headline ("Getting your Trinity Audio ...") goes
    first, _, rest = cleaned.partition("\n")
    if raw.meta.get("markdown"):
        first = first.lstrip("#").strip()
    fields = {"title": first, "body": rest} if _looks_like_title(first) else {"body": cleaned}
    return normalise(fields, raw.origin, max_body_chars=max_body_chars)


_PARSERS = {"fields": _parse_fields, "json": _parse_json, "html": _parse_html, "text": _parse_text}


# --- normalisation ----------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)  # the same few column names come again in every record
def _key(name: object) -> str:
    return _KEY_SEPARATORS.sub("_", str(name).strip().lower())


_KEY_SEPARATORS = re.compile(r"[\s\-]+")


def _check_values(fields: dict) -> str | None:
    """Why a record's values cannot be walked safely (too deep, an unconvertible number), or None.

    Iterative, so a record nested thousands of levels deep costs that record, never a RecursionError."""
    stack = [(v, 1) for v in fields.values() if v is not None and type(v) is not str]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                return f"a value is nested more than {MAX_DEPTH} levels deep"
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
        elif isinstance(value, LongNumber) or (isinstance(value, int) and abs(value) >= INT_LIMIT):
            return f"a number has more than {INT_MAX_DIGITS:,} digits"
    return None


def _scalar(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value).strip()
    return text or None


def _value(value: object) -> str | None:
    """A field's text: lists (nested too) are flattened, in order, and joined with commas."""
    if not isinstance(value, (list, tuple)):
        return _scalar(value)
    parts, stack = [], [iter(value)]
    while stack:  # iterative: depth is bounded by _check_values, but never by the call stack
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, (list, tuple)):
            stack.append(iter(item))
        elif (text := _scalar(item)) is not None:
            parts.append(text)
    return ", ".join(parts) or None


_END = object()


def _pick(fields: dict, field_map: dict[str, str] | None) -> tuple[dict[str, str], dict]:
    """Split a raw record into the text of our fields (first non-empty alias wins) and everything else."""
    by_key: dict[str, tuple[object, object, str]] = {}
    for k, v in fields.items():
        key = _key(k)
        if key not in by_key:
            text = _value(v)
            if text is not None:
                by_key[key] = (k, v, text)
    ours: dict[str, str] = {}
    for name, aliases in FIELDS.items():
        mapped = field_map.get(name) if field_map else None
        for cand in (_key(mapped), *aliases) if mapped else aliases:
            if cand in by_key:
                ours[name] = by_key.pop(cand)[2]
                break
    return ours, {orig: v for orig, v, _ in by_key.values()}


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


def _too_long(values: dict[str, str], max_body_chars: int) -> str | None:
    for name, limit in (("body", max_body_chars), *FIELD_LIMITS.items()):
        size = len(values.get(name) or "")
        if size > limit:
            return f"{name} too long: {size:,} characters (limit {limit:,})"
    return None


def _title(raw_title: str | None, body: str) -> str:
    """The record's own title, unless it is only scraper boilerplate; else one derived from the body."""
    title = clean_title(raw_title)
    if title and clean_text(title):
        return title
    return derive_title(body)


def normalise(
    fields: dict, origin: str, field_map: dict[str, str] | None = None, *, max_body_chars: int = 2_000_000
) -> Record:
    """Map a raw record (any column names) to an Article, or say why it cannot be one."""
    if field_map:
        field_map = _check_field_map(field_map)
    problem = _check_values(fields)
    if problem:
        return Rejection(origin, problem)
    raw, extra = _pick(fields, field_map)
    problem = _too_long(raw, max_body_chars)
    if problem:
        return Rejection(origin, problem)
    body = clean_text(raw.get("body") or "")
    if not body:
        return Rejection(origin, "no body text")

    url = _url(raw.get("url"))
    if raw.get("url") and not url:
        extra["url_raw"] = raw["url"]
    published = parse_date(raw.get("published"))
    if raw.get("published") and not published:
        extra["published_raw"] = raw["published"]

    return Article(
        title=_title(raw.get("title"), body),
        body=body,
        origin=origin,
        url=url,
        outlet=clean_title(raw.get("outlet")) or (_host(url) if url else None),
        published=published,
        subtitle=clean_title(raw.get("subtitle")) or None,
        byline=clean_title(raw.get("byline")) or None,
        external_id=raw.get("external_id"),
        language=raw.get("language"),
        extra=extra,
    )


# --- dates ------------------------------------------------------------------------------------------------

_EPOCH = re.compile(r"^\d{9,10}(?:\.\d+)?$|^\d{12,13}$")
# Two defaults that differ in every part: what the two parses agree on came from the text itself.
_DEFAULT_A = datetime(2000, 1, 1, 0, 0, 0)
_DEFAULT_B = datetime(2001, 2, 2, 1, 1, 1)
# Year first, no zone ("2017/3/24", "2017-03-24 10:00:05"): most feeds' dates, read without dateutil, whose two
# parses cost a sixth of reading a CSV. Anything else, or an impossible day, goes to dateutil as before.
_YMD = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?", re.ASCII)


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
    if (quick := _year_first(value)) is not None:
        return quick or None
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


def _year_first(value: str) -> str | None:
    """parse_date's answer for a zone-less year-first date ("" for one out of range); None: not that form."""
    m = _YMD.fullmatch(value)
    if not m:
        return None
    year, _, month, day, hour, minute, second = m.groups()
    try:
        dt = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:  # "2017/13/2": dateutil may still read it day-first
        return None
    if not 1800 <= dt.year <= 2100:
        return ""
    return dt.isoformat(timespec="seconds") if hour else dt.date().isoformat()
