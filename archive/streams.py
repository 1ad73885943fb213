"""Byte and text streams for the readers in sources.py: regular files only, decompression, chunked decoding,
line splitting like newline="", and a sliding window for decoding JSON values out of a stream.

Nothing here holds a whole file: text comes in CHUNK-sized pieces, and a caller's `limit` bounds any one
record. A stream that fails part-way (corrupt compression, an undecodable byte) raises Broken, so that the
reader can keep what came before and say why it stopped.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import BinaryIO

CHUNK = 2**20  # bytes read at a time
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")
INT_MAX_DIGITS = 4300  # Python's own limit on int <-> str conversion


class Broken(Exception):
    """The file fails part-way (corrupt compression, undecodable bytes, a broken WARC): the rest is skipped."""


_FILE_KINDS = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
]


def _not_regular(path: str, mode: int) -> str | None:
    """Why a path is not a regular file (a symlink to /dev/zero named x.txt would never end), or None."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    link = f"a symlink to {os.path.realpath(path)}, " if os.path.islink(path) else ""
    return f"not a regular file ({link}{kind}); only regular files are read"


def open_regular(path: str) -> BinaryIO:
    """The file opened for reading, following symlinks; Broken for anything but a regular file."""
    problem = _not_regular(path, os.stat(path).st_mode)  # before opening: opening a device can have effects
    if problem:
        raise Broken(problem)
    # O_NONBLOCK: opening a named pipe must not wait for a writer (it is refused right after, by fstat)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    problem = _not_regular(path, os.fstat(fd).st_mode)
    if problem:
        os.close(fd)
        raise Broken(problem)
    return os.fdopen(fd, "rb")


_DECOMPRESS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    ".gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    ".bz2": lambda f: bz2.BZ2File(f),
    ".xz": lambda f: lzma.LZMAFile(f),
}
_CORRUPT = (OSError, EOFError, zlib.error, lzma.LZMAError)


def decompressed(binary: BinaryIO, suffix: str) -> BinaryIO:
    """The decompressing reader for a compression suffix (".gz", ".bz2", ".xz")."""
    return _DECOMPRESS[suffix](binary)


def format_of(path: str) -> tuple[str, str | None]:
    """The format's extension (in front of any compression suffix) and the compression suffix."""
    name = path.lower()
    suffix = next((s for s in COMPRESSION_SUFFIXES if name.endswith(s)), None)
    inner = name[: -len(suffix)] if suffix else name
    return os.path.splitext(inner)[1], suffix


def byte_chunks(binary: BinaryIO, compressed: bool) -> Iterator[bytes]:
    """CHUNK-sized pieces of a binary stream; Broken when decompression fails part-way."""
    # read1 hands over what each decompression step made, so a corrupt tail loses only what comes after it
    read, offset = (binary.read1 if compressed else binary.read), 0
    while True:
        try:
            data = read(CHUNK)
        except _CORRUPT as e:
            if not compressed:
                raise
            raise Broken(f"corrupt or truncated compressed data after {offset:,} decompressed bytes ({e})") from None
        if not data:
            return
        offset += len(data)
        yield data


def decoded(chunks: Iterator[bytes], encoding: str) -> Iterator[str]:
    """Text chunks (NULs removed) from byte chunks; raises Broken at the first undecodable byte."""
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    try:
        info = codecs.lookup("utf-8" if utf8 else encoding)
    except LookupError:
        info = None
    if info is None or not info._is_text_encoding:  # rot13, base64, hex ... are not text encodings
        raise Broken(f"unknown encoding {encoding!r}")
    decoder, offset, start = info.incrementaldecoder(), 0, True
    for data in chain(chunks, [b""]):
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            name = "UTF-8" if utf8 else encoding
            at = offset - pending + e.start
            reason = f"not valid {name} (byte 0x{e.object[e.start]:02x} at offset {at});"
            raise Broken(f"{reason} re-encode it or pass --encoding") from None
        except UnicodeError as e:
            raise Broken(f"not valid {encoding}: {e}") from None
        offset += len(data)
        if start and text:
            text, start = (text[1:] if utf8 and text[0] == "\ufeff" else text), False  # a UTF-8 BOM is not text
        if "\x00" in text:
            text = text.replace("\x00", "")  # csv and lxml choke on NULs; they are never meaningful in articles
        if text:
            yield text


class Text:
    """A file's decoded text, pulled chunk by chunk: peek at its start, then take all of it from the start."""

    PEEK_MAX = 2**20

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks, self.head = chunks, ""

    def peek(self, n: int) -> str:
        while len(self.head) < n and self._pull():
            pass
        return self.head[:n]

    def first_char(self) -> str:
        """The first non-blank character ("" for a blank file; looks at most PEEK_MAX characters ahead)."""
        while not self.head.strip() and len(self.head) < self.PEEK_MAX and self._pull():
            pass
        return self.head.lstrip()[:1]

    def take(self) -> Iterator[str]:
        head, self.head = self.head, ""
        return chain([head] if head else [], self._chunks)

    def _pull(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.head += chunk
        return True


def read_all(chunks: Iterable[str], limit: int) -> str | None:
    """The whole text, or None when it is longer than limit (reading stops there)."""
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return "".join(parts)


_LINE_END = re.compile("(\r\n|\r|\n)")


def split_lines(chunks: Iterable[str], limit: int) -> Iterator[str | None]:
    """Physical lines with their endings, split only at \\r\\n, \\r and \\n (like newline=""); None stands
    for a line longer than limit, which is dropped as it streams past."""
    pending: list[str] = []
    size, skipping, held = 0, False, ""
    for chunk in chunks:
        chunk, held = held + chunk, ""
        if chunk.endswith("\r"):  # may be half of a \r\n
            chunk, held = chunk[:-1], "\r"
        if "\r" in chunk:
            parts = _LINE_END.split(chunk)
            ends = parts[1::2]
            parts = parts[0::2]
        else:  # the usual case, and far quicker than the regex
            parts = chunk.split("\n")
            ends = ["\n"] * (len(parts) - 1)
        for piece, end in zip(parts, ends):
            line = piece + end
            if skipping:
                skipping = False
                continue
            if pending:
                line, pending, size = "".join(pending) + line, [], 0
            yield line if len(line) <= limit else None
        tail = parts[-1]
        if tail and not skipping:
            pending.append(tail)
            size += len(tail)
            if size > limit:
                yield None
                pending, size, skipping = [], 0, True
    rest = "".join(pending) + held
    if rest and not skipping:
        yield rest if len(rest) <= limit else None


class LongNumber(str):
    """An integer literal with more digits than Python converts: kept as text so its record can be rejected."""


def _parse_int(literal: str) -> int | str:
    return int(literal) if len(literal.lstrip("-")) <= INT_MAX_DIGITS else LongNumber(literal)


JSON = json.JSONDecoder(parse_int=_parse_int)
INT_LIMIT = 10**INT_MAX_DIGITS


def json_error(e: json.JSONDecodeError, where: str | None = None) -> str:
    return f"invalid JSON: {e.msg} ({where or f'column {e.colno}'})"


NESTED = object()  # a value too deep for the decoder, skipped over
_WS = re.compile(r"[ \t\n\r]*")
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonWindow:
    """A sliding window over a text stream for the JSON readers: refills on demand, drops what was read, and
    knows the line and column of any position in it."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self.chunks, self.buf, self.eof = chunks, "", False
        self._line, self._col0 = 1, 0  # line and column of buf[0]
        self._seen, self._seen_line = 0, 1  # newline count cache: line number at buf index _seen

    def more(self, want: int) -> bool:
        """Read at least `want` more characters (fewer at the end); False at the end of the stream."""
        parts = []
        while not self.eof and sum(map(len, parts)) < want:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.eof = True
            else:
                parts.append(chunk)
        self.buf += "".join(parts)
        return bool(parts)

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.buf, pos).end()
            if pos < len(self.buf) or not self.more(CHUNK):
                return pos

    def rest_is_blank(self, pos: int) -> bool:
        return self.skip_ws(pos) >= len(self.buf)

    def line_at(self, pos: int) -> int:
        if pos < self._seen:
            return self._line + self.buf.count("\n", 0, pos)
        self._seen_line += self.buf.count("\n", self._seen, pos)
        self._seen = pos
        return self._seen_line

    def col_at(self, pos: int) -> int:
        nl = self.buf.rfind("\n", 0, pos)
        return pos - nl if nl >= 0 else self._col0 + pos + 1

    def compact(self, pos: int) -> int:
        """Drop what is before pos once it is big; returns pos's new index."""
        if pos < CHUNK:
            return pos
        self._line, self._col0 = self.line_at(pos), self.col_at(pos) - 1
        self.buf, self._seen, self._seen_line = self.buf[pos:], 0, self._line
        return 0

    def decode(self, pos: int, limit: int) -> tuple[object, int] | str:
        """(value, end) of the JSON value at pos, reading more as needed; or why there is none."""
        while True:
            try:
                value, end = JSON.raw_decode(self.buf, pos)
                if end < len(self.buf) or self.eof:  # a number at the window's end may go on in the next chunk
                    return value, end
            except json.JSONDecodeError as e:
                if self.eof or not (e.pos >= len(self.buf) - 16 or e.msg.startswith("Unterminated string")):
                    return json_error(e, f"line {self.line_at(e.pos)} column {self.col_at(e.pos)}")
            except RecursionError:
                end = _skip_value(self.buf, pos)
                if end is not None:
                    return NESTED, end
                if self.eof:
                    return "invalid JSON: nested too deeply"
            if len(self.buf) - pos > limit:
                return f"record too long: more than {limit:,} characters"
            self.more(max(CHUNK, len(self.buf) - pos))


def _skip_value(text: str, pos: int) -> int | None:
    """End of the bracketed value at pos, found without recursion (for values too deep to decode)."""
    depth = 0
    for m in _BRACKETS.finditer(text, pos):
        token = m.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            depth -= 1
            if depth == 0:
                return m.end()
    return None
