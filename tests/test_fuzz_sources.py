"""Bad input, systematically: hypothesis over every reader and the cleaner, and bad files into a real archive.

tests/test_sources.py has the small random-bytes property; this file generates *structured* garbage that gets
past the first parsing step (random JSON values and records, CSV with any dialect and broken quoting, HTML
soup, huge fields, text in odd encodings, stdin) so that the normaliser and the record bookkeeping see it too.
Every input must give only Article or Rejection records, never raise, and every Rejection must name its file
(and, for line-based formats, a line that exists). Loading bad files into an existing archive must leave every
stored article, chunk and index entry as it was. Each property tries a fifth of its inputs in the fast suite
and all of them as its `_full` twin, marked slow (`fuzz` below).
How many inputs each property tried: `pytest tests/test_fuzz_sources.py --hypothesis-show-statistics`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive import Archive, streams
from archive import index as ix
from archive.clean import clean_text, clean_title
from archive.models import Article, Rejection
from archive.sources import FIELDS, INT_MAX_DIGITS, read_sources

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
FAST_SHARE = 5  # the fast suite tries a fifth of each property's inputs (fresh ones each run: database=None)


def fuzz(examples: int, **strategies):
    """@given(**strategies) as two tests: `examples // FAST_SHARE` inputs in the fast suite, and all `examples`
    as its twin `<name>_full`, marked slow, which the full suite (CI) runs too."""

    def both(prop):
        full = settings(FUZZ, max_examples=examples)(given(**strategies)(prop))
        vars(sys.modules[prop.__module__])[f"{prop.__name__}_full"] = pytest.mark.slow(full)
        return settings(FUZZ, max_examples=max(8, examples // FAST_SHARE))(given(**strategies)(prop))

    return both


ALIASES = [a for aliases in FIELDS.values() for a in aliases]

nasty_text = st.one_of(
    st.text(max_size=200),
    st.text(
        alphabet=st.sampled_from(
            list("\"',;|\t\n\r\x00\\<>&{}[]:#") + ["\u2028", "\ufeff", "\ud800", "\u202e", "é", "\x85"]
        ),
        max_size=80,
    ),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "NaN",
            "-1",
            "1e309",
            "0x10",
            "<script>alert(1)</script>",
            "javascript:alert(1)",
            "http://",
            "https://[::1",
            "https://exa mple.com/x",
            "9" * 400,
            "2017-02-30",
            "31/31/2017",
            "1488412800000",
            "Robert'); DROP TABLE articles;--",
        ]
    ),
)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), nasty_text
)
json_value = st.recursive(
    json_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(nasty_text, c, max_size=4), max_leaves=12
)
record = st.dictionaries(
    st.one_of(st.sampled_from(ALIASES + [a.upper() for a in ALIASES] + [" Title ", "body "]), nasty_text),
    json_value,
    max_size=8,
)


def lines_of(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + data.count(b"\r") + 2


def check(got: list, path: str, line_max: int | None = None) -> list:
    """Only Articles and Rejections; each names `path` (and a line that exists, when it names a line)."""
    for item in got:
        assert isinstance(item, (Article, Rejection)), item
        assert item.origin == path or item.origin[len(path) : len(path) + 1] in (":", "@"), (item.origin, path)
        rest = item.origin[len(path) + 1 :]
        if rest:  # a line that exists, or a WARC record's byte offset
            assert rest.isdigit() and int(rest) <= (line_max or 10**9), item
            assert int(rest) >= 1 or item.origin[len(path)] == "@", item
        if isinstance(item, Rejection):
            assert item.reason and "Traceback" not in item.reason
            assert not item.reason.startswith("could not read:"), item  # a parser bug caught by the last resort
        else:
            assert item.title and item.body and item.body == item.body.strip()
            assert item.url is None or re.match(r"https?://", item.url)
    return got


def read(path: Path, **kw) -> list:
    return list(read_sources([str(path)], **kw))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --- JSON and JSON Lines ---------------------------------------------------------------------------------


@fuzz(60, lines=st.lists(st.one_of(record.map(json.dumps), json_value.map(json.dumps), nasty_text), max_size=8))
def test_jsonl_of_random_records_and_garbage(folder, lines):
    path = folder / "f.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    got = check(read(path), str(path), lines_of(path))
    assert len(got) <= lines_of(path)


def test_jsonl_records_with_raw_unicode_line_separators_stay_whole(folder):
    """JSON allows U+2028/U+2029/U+0085 raw inside strings; they must not split a JSON Lines record."""
    path = folder / "seps.jsonl"
    body = "First paragraph.\u2028Second\u2029paragraph.\x85Third, after a NEL."
    path.write_text(
        json.dumps({"title": "T", "body": body}, ensure_ascii=False)
        + "\n"
        + json.dumps({"title": "U", "body": "Line two."})
        + "\n",
        encoding="utf-8",
    )
    got = read(path)
    assert [type(g).__name__ for g in got] == ["Article", "Article"]
    assert [g.origin for g in got] == [f"{path}:1", f"{path}:2"] and "Third" in got[0].body


@fuzz(
    60,
    value=st.one_of(st.lists(record, max_size=6), st.lists(json_value, max_size=6), record, json_value),
    cut=st.integers(min_value=0, max_value=400),
    indent=st.sampled_from([None, 0, 2]),
)
def test_json_arrays_and_objects_whole_or_truncated(folder, value, cut, indent):
    text = json.dumps(value, indent=indent)
    path = folder / "f.json"
    path.write_text(text[: len(text) - cut] if cut < len(text) else text, encoding="utf-8", errors="surrogatepass")
    check(read(path), str(path), lines_of(path))


@fuzz(60, depth=st.integers(min_value=50, max_value=200_000), opener=st.sampled_from(["[", '{"a":', '[{"body":']))
def test_deeply_nested_json(folder, depth, opener):
    for name in ("deep.json", "deep.jsonl"):
        path = folder / name
        path.write_text(opener * depth)
        check(read(path), str(path), lines_of(path))


BAD_TAIL = '{"title": "Bad", "body": "A body about the harbour.", "v": '
deep_or_long = st.one_of(
    st.integers(300, 3000).map(lambda d: BAD_TAIL + "[" * d + "1" + "]" * d + "}"),
    st.integers(300, 3000).map(lambda d: BAD_TAIL + '{"a": ' * d + "1" + "}" * d + "}"),
    st.integers(INT_MAX_DIGITS + 1, 9000).map(lambda n: BAD_TAIL + "-" + "9" * n + "}"),
)


@fuzz(60, bad=st.lists(deep_or_long, min_size=1, max_size=3), fmt=st.sampled_from(["jsonl", "json", "stdin"]))
def test_deep_values_and_long_numbers_cost_only_their_record(folder, bad, fmt):
    """Issue 13 item 2: a value nested hundreds of levels deep, or an integer of more than 4,300 digits, is
    rejected alone: the records after it still load, whatever the format."""
    goods = [json.dumps({"title": f"Good {i}", "body": "The harbour reopened on Monday."}) for i in range(len(bad) + 1)]
    lines = [line for pair in zip(goods, bad) for line in pair] + [goods[-1]]
    if fmt == "stdin":
        got, origin, first = list(read_sources(["-"], stdin=io.StringIO("\n".join(lines)))), "<stdin>", 1
    else:
        path = folder / f"bad.{fmt}"
        path.write_text("[\n" + ",\n".join(lines) + "\n]" if fmt == "json" else "\n".join(lines))
        got, origin, first = read(path), str(path), 2 if fmt == "json" else 1
    check(got, origin, len(lines) + 2)
    assert [a.title for a in got if isinstance(a, Article)] == [f"Good {i}" for i in range(len(goods))]
    assert [r.origin for r in got if isinstance(r, Rejection)] == [
        f"{origin}:{first + 2 * i + 1}" for i in range(len(bad))
    ]


@contextmanager
def chunk_size(n: int):
    saved = streams.CHUNK
    streams.CHUNK = n
    try:
        yield
    finally:
        streams.CHUNK = saved


line_end = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def any_format(draw):
    """Text in one of the line-based formats, with mixed line endings, and its extension."""
    ext = draw(st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ""]))
    if ext == ".json":
        text = json.dumps(
            draw(st.lists(st.one_of(record, json_value), max_size=6)), indent=draw(st.sampled_from([None, 1]))
        )
        text = text.replace("\n", draw(line_end))
    elif ext in (".csv", ".tsv"):
        buf = io.StringIO()
        rows = draw(st.lists(st.lists(nasty_text, min_size=1, max_size=4), min_size=1, max_size=6))
        csv.writer(buf, delimiter=ext == ".tsv" and "\t" or ",", lineterminator=draw(line_end)).writerows(rows)
        text = buf.getvalue()
    else:
        parts = draw(st.lists(st.tuples(st.one_of(record.map(json.dumps), nasty_text), line_end), max_size=8))
        text = "".join(a + b for a, b in parts)
    return text[: len(text) - draw(st.integers(0, 20))], ext


@fuzz(60, doc=any_format(), chunk=st.integers(1, 40), bom=st.booleans())
def test_reading_gives_the_same_records_at_any_chunk_size(folder, doc, chunk, bom):
    """The streaming readers cut the input into chunks anywhere (inside a \\r\\n, a UTF-8 sequence, a JSON
    number, a quoted CSV field): the records, origins and reasons must not depend on where."""
    text, ext = doc
    path = folder / f"chunks{ext}"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "replace"))
    whole = check(read(path), str(path), lines_of(path))
    with chunk_size(chunk):
        assert read(path) == whole


# --- CSV ------------------------------------------------------------------------------------------------


@fuzz(
    60,
    header=st.lists(st.one_of(st.sampled_from(ALIASES), nasty_text), min_size=1, max_size=6),
    rows=st.lists(st.lists(nasty_text, max_size=7), max_size=6),
    delimiter=st.sampled_from([",", "\t", ";", "|"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    ext=st.sampled_from([".csv", ".tsv"]),
    cut=st.integers(min_value=0, max_value=60),
)
def test_csv_any_dialect_ragged_rows_and_truncation(folder, header, rows, delimiter, quoting, ext, cut):
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, quoting=quoting)
    writer.writerow(header)
    writer.writerows(rows)
    text = buf.getvalue()
    path = folder / f"f{ext}"
    path.write_text(text[: max(1, len(text) - cut)], encoding="utf-8", errors="surrogatepass")
    check(read(path), str(path), lines_of(path))


@fuzz(60, text=st.text(alphabet=st.sampled_from(list('"a,b\n\r;\t|x ') + ["\x00"]), max_size=300))
def test_csv_quote_soup(folder, text):
    path = folder / "soup.csv"
    path.write_text("title,body\n" + text, encoding="utf-8")
    check(read(path), str(path), lines_of(path))


# --- HTML, text, stdin, sniffing --------------------------------------------------------------------------

TAGS = [
    "html",
    "head",
    "title",
    "body",
    "article",
    "p",
    "div",
    "h1",
    "script",
    "style",
    "meta",
    "a",
    "img",
    "br",
    "table",
    "td",
    "iframe",
    "noscript",
    "svg",
    "math",
    "template",
    "!--",
    "![CDATA[",
]


@st.composite
def html_soup(draw):
    parts = []
    for _ in range(draw(st.integers(0, 25))):
        tag = draw(st.sampled_from(TAGS))
        attrs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(
                        ["content", "name", "property", "href", "onerror", "src", "charset", "lang", "class"]
                    ),
                    nasty_text,
                ),
                max_size=3,
            )
        )
        attr = "".join(f' {k}="{v}"' for k, v in attrs)
        parts.append(draw(st.sampled_from([f"<{tag}{attr}>", f"</{tag}>", f"<{tag}{attr}/>"])))
        parts.append(draw(nasty_text))
    return "".join(parts)


@fuzz(40, html=html_soup(), ext=st.sampled_from([".html", ".htm", ""]))
def test_html_soup(folder, html, ext):
    path = folder / f"page{ext}"
    path.write_text(("<" if not ext else "") + html, encoding="utf-8", errors="surrogatepass")
    check(read(path), str(path), None)


@fuzz(60, text=st.one_of(nasty_text, st.text(max_size=2000)), ext=st.sampled_from([".txt", ".md", ".bin", ".ndjson"]))
def test_text_markdown_and_unknown_extensions(folder, text, ext):
    path = folder / f"note{ext}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check(read(path), str(path), lines_of(path))


@fuzz(60, lines=st.lists(st.one_of(record.map(json.dumps), nasty_text), max_size=8))
def test_stdin(lines):
    text = "\n".join(lines).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    got = list(read_sources(["-"], stdin=io.StringIO(text)))
    check(got, "<stdin>", len(io.StringIO(text).readlines()) + 1)


# --- encodings and huge fields -------------------------------------------------------------------------

CODECS = [
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "latin-1",
    "cp1252",
    "shift_jis",
    "koi8-r",
    "gb18030",
    "mac_roman",
]


@fuzz(
    60,
    rec=record,
    body=st.text(min_size=1, max_size=200),
    written=st.sampled_from(CODECS),
    read_as=st.sampled_from(CODECS + ["UTF8", "no-such-codec", "rot13", "base64", "hex", "idna"]),
    ext=st.sampled_from([".jsonl", ".csv", ".txt", ".json"]),
)
def test_odd_encodings(folder, rec, body, written, read_as, ext):
    rec = {**rec, "body": body}
    if ext == ".csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([list(map(str, rec)), list(map(str, rec.values()))])
        text = buf.getvalue()
    else:
        text = json.dumps(rec, ensure_ascii=False) if ext != ".txt" else f"{rec.get('title', 'T')}\n{body}"
    path = folder / f"enc{ext}"
    path.write_bytes(text.encode(written, errors="replace"))
    check(read(path, encoding=read_as), str(path), lines_of(path))


@fuzz(
    12,
    field=st.sampled_from(["body", "title", "url", "outlet", "published", "byline", "weird key"]),
    size=st.sampled_from([10_001, 200_000, 2_000_001]),
    ext=st.sampled_from([".jsonl", ".csv", ".json"]),
)
def test_huge_fields(folder, field, size, ext):
    rec = {"title": "A title", "body": "A short body about the harbour.", field: "x " * (size // 2) + "y"}
    path = folder / f"huge{ext}"
    if ext == ".csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([list(rec), list(rec.values())])
        path.write_text(buf.getvalue())
    else:
        path.write_text(json.dumps([rec] if ext == ".json" else rec))
    got = check(read(path, max_body_chars=100_000), str(path), lines_of(path))
    (item,) = got
    if field == "body" and size > 100_000:
        assert isinstance(item, Rejection) and "body too long" in item.reason


@fuzz(
    150,
    data=st.binary(max_size=600),
    ext=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".html", ".txt", ".md", ""]),
    prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"[", b"{", b"<", b"title,body\n"]),
)
def test_random_bytes_with_format_prefixes(folder, data, ext, prefix):
    path = folder / f"bytes{ext}"
    path.write_bytes(prefix + data)
    check(read(path), str(path), lines_of(path))


@lru_cache(maxsize=2)
def small_warc(gz: bool) -> bytes:
    """A real crawl in miniature: warcinfo, two article pages, an image, each with its request."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record("small.warc", {"software": "tests"}))
    pages = [
        (
            "https://e.com/a",
            "text/html",
            b"<html><head><title>Harbour reopens</title></head><body><article><p>"
            + b"The harbour reopened on Monday after two weeks of repairs to the pier. " * 8
            + b"</p></article></body></html>",
        ),
        ("https://e.com/b.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256))),
        ("https://e.com/c", "text/html; charset=utf-8", "<p>Caf\u00e9 owners agreed on a new lease. </p>".encode() * 9),
    ]
    for url, ctype, body in pages:
        request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "e.com")], is_http_request=True)
        w.write_record(w.create_warc_record(url, "request", http_headers=request))
        response = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=response))
    return buf.getvalue()


@fuzz(
    80,
    gz=st.booleans(),
    cut=st.integers(0, 4000),
    flips=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 255)), max_size=4),
    junk=st.binary(max_size=200),
)
def test_warc_cut_corrupted_or_followed_by_junk(folder, gz, cut, flips, junk):
    """A damaged WARC costs at most its own rest: never an exception, never a parser-bug rejection."""
    data = bytearray(small_warc(gz))
    for pos, byte in flips:
        if pos < len(data):
            data[pos] = byte
    path = folder / ("w.warc.gz" if gz else "w.warc")
    path.write_bytes(bytes(data[: max(0, len(data) - cut)]) + junk)
    records = read_sources([str(path)])
    got = check(list(records), str(path), len(data) + len(junk))
    assert sum(isinstance(g, Rejection) and g.origin == str(path) for g in got) <= 1
    assert all(isinstance(n, int) and n > 0 for n in records.skipped.values())
    if not flips and not cut and not junk:
        assert [type(g).__name__ for g in got] == ["Article", "Article"]
        assert records.skipped == {"WARC warcinfo record": 1, "WARC request record": 3, "WARC response not HTML": 1}


# --- the cleaner -----------------------------------------------------------------------------------------


@fuzz(
    300,
    text=st.one_of(
        nasty_text,
        st.text(max_size=3000),
        st.lists(
            st.sampled_from(
                [
                    '"?',
                    '"\ufffd',
                    'n"t',
                    "Share this",
                    "\n\n",
                    "  ",
                    "\r\n",
                    "Photo: AP",
                    "(CNN)",
                    "\u00a0",
                    "Advertisement",
                    "word",
                    ". ",
                ]
            ),
            max_size=40,
        ).map("".join),
    ),
)
def test_cleaner_total_and_stable(text):
    body, title = clean_text(text), clean_title(text)
    assert isinstance(body, str) and isinstance(title, str)
    assert body == body.strip() and "\n\n\n" not in body and "\r" not in body and "\x00" not in body
    assert "\n" not in title and title == title.strip()
    assert clean_title(title) == title
    assert len(body) <= len(text) * 2 + 10


# --- bad files into an existing archive change nothing -------------------------------------------------


def snapshot(db_path: Path, index_dir: Path) -> dict:
    arc = Archive(db_path, index_dir)
    try:
        articles = arc.db.execute("select id, identity, content_hash, updated_at, body from articles order by id")
        chunks = arc.db.execute("select id, article_id, content_hash, vector from chunks order by id")
        index, _ = ix.load(index_dir)
        return {"articles": articles.fetchall(), "chunks": chunks.fetchall(), "index": sorted(index.ids().tolist())}
    finally:
        arc.close()


@pytest.mark.slow
def test_loading_bad_files_into_an_archive_changes_nothing_stored(sample_archive, tmp_path):
    db_path, index_dir = tmp_path / "archive.db", tmp_path / "indexes"
    shutil.copy(sample_archive.db_path, db_path)
    shutil.copytree(sample_archive.index_dir, index_dir, ignore=shutil.ignore_patterns(".lock"))
    before = snapshot(db_path, index_dir)
    stored_url = sample_archive.story_urls["debbie"][0]
    bad = tmp_path / "bad"
    bad.mkdir()
    # Records that name stored articles but are not articles: they must not touch what is stored.
    (bad / "collide.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"url": stored_url, "title": "Replaced?", "body": ""}),
                json.dumps({"url": stored_url, "title": "Replaced?", "body": "Share this with"}),  # boilerplate only
                json.dumps({"url": stored_url, "title": "Replaced?", "body": "x" * 2_000_001}),
                json.dumps([{"url": stored_url, "body": "an array, not an object"}]),
                '{"url": "' + stored_url + '", "body": "unterminated',
            ]
        )
        + "\n"
    )
    (bad / "array.json").write_text('[{"url": "' + stored_url + '", "body": ""}, {"url": 1,')
    (bad / "ragged.csv").write_text(f'url,title,body\n{stored_url},x\n"{stored_url}","t","unterminated')
    (bad / "empty.csv").write_text("\n\n")
    (bad / "latin1.jsonl").write_bytes(
        json.dumps({"url": stored_url, "body": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    )
    (bad / "utf16.jsonl").write_bytes(json.dumps({"url": stored_url, "body": "x"}).encode("utf-16"))
    (bad / "deep.json").write_text("[" * 100_000)
    (bad / "binary.html").write_bytes(bytes(range(256)) * 8)
    (bad / "blank.txt").write_text("   \n\t\n")
    (bad / "nobody.html").write_text("<html><head><title>T</title></head><body><script>x()</script></body></html>")
    arc = Archive(db_path, index_dir)
    try:
        report = arc.load([str(bad)])
    finally:
        arc.close()
    assert (report.added, report.updated, report.unchanged) == (0, 0, 0)
    assert len(report.rejected) >= 13 and all(r.origin.startswith(str(bad)) for r in report.rejected)
    after = snapshot(db_path, index_dir)
    assert after == before


@fuzz(40, cut=st.integers(min_value=1, max_value=80))
def test_a_csv_cut_inside_its_last_quoted_field_never_yields_that_row(folder, cut):
    """A half-written file must not load its last row as if whole (it could overwrite a stored article)."""
    body = 'The harbour reopened on Monday, the port authority said, after "two weeks" of repairs to the pier.'
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC).writerows(
        [["url", "title", "body"], ["https://e.com/1", "One", body], ["https://e.com/2", "Two", body]]
    )
    text = buf.getvalue()
    path = folder / "cut.csv"
    path.write_text(text[: len(text) - cut])
    got = check(read(path), str(path), lines_of(path))
    try:  # a cut just after a closing quote leaves a well-formed (shorter) file: nothing can tell
        list(csv.reader(io.StringIO(text[: len(text) - cut], newline=""), strict=True))
        well_formed = True
    except csv.Error:
        well_formed = False
    for item in got:
        if isinstance(item, Article) and not (well_formed and item.url == "https://e.com/2"):
            assert item.body == body, item
