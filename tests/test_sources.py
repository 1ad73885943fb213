"""read_sources / normalise: every format, every kind of bad input, and the whole real NewsArticles.csv."""

from __future__ import annotations

import bz2
import csv
import gzip
import html
import io
import json
import lzma
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import distinct_rows, sample_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive import streams
from archive.clean import clean_text, clean_title
from archive.models import ArchiveError, Article, Rejection, SourceError
from archive.sources import FIELD_LIMITS, Raw, derive_title, normalise, parse_date, parse_raw, read_raw, read_sources

BODY = "The council approved the budget on Monday. Critics said it cut too deep."


def items(*paths: Path | str, **kw) -> list[Article | Rejection]:
    return list(read_sources([str(p) for p in paths], **kw))


def only(*paths: Path | str, **kw) -> Article | Rejection:
    (item,) = items(*paths, **kw)
    return item


def jsonl(path: Path, *records: object) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


# --- the real corpus -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def news_read(news_csv: Path) -> tuple[list[Article | Rejection], list[int]]:
    """The whole NewsArticles.csv read once for the tests of it (a read is ~2 CPU-s), with the length of each
    sample the CSV dialect sniffer was given during the read."""
    samples: list[int] = []
    real_sniff = csv.Sniffer.sniff

    def sniff(self, sample: str, delimiters: str | None = None):
        samples.append(len(sample))
        return real_sniff(self, sample, delimiters)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv.Sniffer, "sniff", sniff)
        got = items(news_csv)
    return got, samples


def test_news_articles_csv(news_csv: Path, news_read) -> None:
    got, _ = news_read
    assert len(got) == 3824
    rejected = [r for r in got if isinstance(r, Rejection)]
    articles = [a for a in got if isinstance(a, Article)]
    assert len(rejected) == 37 and {r.reason for r in rejected} == {"no body text"}  # 36 empty, one "- -"
    assert all(a.published and len(a.published) >= 10 for a in articles)
    assert len({a.outlet for a in articles}) == 9 and "bbc.co.uk" in {a.outlet for a in articles}
    assert all(a.title and a.url and a.external_id for a in articles)
    assert not any('"?' in a.body for a in articles)
    first = articles[0]
    assert first.origin == f"{news_csv}:2" and first.external_id == "1" and first.published == "2017-02-07"
    assert "DeVos' highly contentious" in first.body
    lines = news_csv.read_text(encoding="utf-8").split("\n")
    for a in articles[::400]:  # origins name the physical line where the row starts
        assert lines[int(a.origin.rsplit(":", 1)[1]) - 1].startswith(f"{a.external_id},")


def test_untitled_rows_get_a_derived_title(news_csv: Path, news_read) -> None:
    untitled = {r["article_id"] for r in sample_rows(news_csv) if not r["title"].strip() and r["text"].strip()}
    assert len(untitled) > 50
    derived = [a for a in news_read[0] if isinstance(a, Article) and a.external_id in untitled]
    assert len(derived) == len(untitled)
    assert all(0 < len(a.title) <= 120 and a.body.startswith(a.title.rstrip("\u2026")) for a in derived)


# --- formats ---------------------------------------------------------------------------------------------


def test_jsonl_and_origins(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "a.jsonl", {"title": "One", "body": BODY}, "", {"headline": "Two", "text": BODY})
    one, two = items(f)
    assert (one.title, one.origin) == ("One", f"{f}:1")
    assert (two.title, two.origin) == ("Two", f"{f}:3")


def test_malformed_json_line_names_its_line(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "f.jsonl", *[{"title": f"T{i}", "body": BODY} for i in range(6)], '{"title": "x" "body": 1}')
    got = items(f)
    assert all(isinstance(a, Article) for a in got[:6])
    assert got[6] == Rejection(f"{f}:7", "invalid JSON: Expecting ',' delimiter (column 15)")


def test_json_value_not_an_object(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "f.jsonl", [1, 2], "null", {"body": BODY})
    a, b, c = items(f)
    assert a == Rejection(f"{f}:1", "expected a JSON object, got an array")
    assert b == Rejection(f"{f}:2", "expected a JSON object, got null")
    assert isinstance(c, Article)


def test_json_array_lines(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text(json.dumps([{"title": "A", "body": BODY}, {"title": "B", "body": BODY}, "x"], indent=2))
    a, b, c = items(f)
    assert (a.origin, b.origin) == (f"{f}:2", f"{f}:6")
    assert c == Rejection(f"{f}:10", "expected a JSON object, got a string")


def test_json_single_object_and_json_lines_in_json(tmp_path: Path) -> None:
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"title": "Solo", "body": BODY}, indent=1))
    assert only(single).origin == str(single)
    lines = jsonl(tmp_path / "many.json", {"title": "A", "body": BODY}, {"title": "B", "body": BODY})
    assert [a.origin for a in items(lines)] == [f"{lines}:1", f"{lines}:2"]


def test_broken_json_array(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text(f'[\n {{"title": "A", "body": "{BODY}"}},\n {{"title": oops}}\n]')
    a, b = items(f)
    assert isinstance(a, Article) and b.origin == f"{f}:3" and b.reason.startswith("invalid JSON")


def test_csv_multiline_fields_keep_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text(f'title,text,extra_col\n"A","line one\nline two\n\nline four",x\nB,"{BODY}",\n')
    a, b = items(f)
    assert a.origin == f"{f}:2" and a.body == "line one\nline two\n\nline four" and a.extra == {"extra_col": "x"}
    assert b.origin == f"{f}:6" and b.extra == {}


def test_csv_wrong_field_count(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text(f"title,text\nA,{BODY.replace(',', '')}\nB,x,y\n")
    a, b = items(f)
    assert isinstance(a, Article)
    assert b == Rejection(f"{f}:3", "expected 2 fields (as in the header), got 3")


@pytest.mark.parametrize(("name", "sep"), [("a.tsv", "\t"), ("b.csv", ";"), ("c.csv", "|")])
def test_csv_dialects(tmp_path: Path, name: str, sep: str) -> None:
    f = tmp_path / name
    f.write_text(f"headline{sep}story{sep}link\nHello, world{sep}{BODY}{sep}https://www.example.com/a\n")
    a = only(f)
    assert (a.title, a.body, a.outlet) == ("Hello, world", BODY, "example.com")


def test_text_and_markdown(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(f"\n\nA plain title\n\n{BODY}\n")
    (tmp_path / "b.md").write_text(f"# A markdown title\n\n{BODY}\n\nSecond paragraph.\n")
    a, b = items(tmp_path)
    assert (a.title, a.body, a.origin) == ("A plain title", BODY, str(tmp_path / "a.txt"))
    assert (b.title, b.body) == ("A markdown title", f"{BODY}\n\nSecond paragraph.")


HTML = """<!DOCTYPE html>
<html lang="en"><head>
<title>Floods close the valley road | The Daily Example</title>
<meta name="author" content="Jane Reporter">
<meta property="article:published_time" content="2017-02-07T10:30:00+00:00">
<meta property="og:site_name" content="The Daily Example">
<meta name="description" content="Heavy rain cut off three villages.">
<link rel="canonical" href="https://www.dailyexample.com/news/floods-valley-road">
</head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/sport">Sport section link</a></li>
<li><a href="/weather">Weather navigation</a></li></ul></nav>
<article>
<h1>Floods close the valley road</h1>
<p>Heavy rain overnight flooded the valley road, cutting off three villages in the north of the county.
Engineers said the water was more than a metre deep near the old bridge.</p>
<p>The county council said the road would stay closed until Thursday at the earliest, and that a
diversion through the hill pass had been signposted for drivers heading to the coast.</p>
<p>Residents described the worst flooding in twenty years, with several homes evacuated and a school
closed for the day while the fire service pumped water from the ground floor.</p>
</article>
<footer><p>Copyright 2017 The Daily Example. All rights reserved. Privacy policy and cookie settings.</p></footer>
</body></html>"""


def test_html_article(tmp_path: Path) -> None:
    f = tmp_path / "story.html"
    f.write_text(HTML)
    a = only(f)
    assert isinstance(a, Article), a
    assert a.title.startswith("Floods close the valley road")
    assert a.body.startswith("Heavy rain overnight flooded the valley road")
    assert "the fire service pumped water" in a.body
    assert "navigation" not in a.body and "Sport section" not in a.body and "Privacy policy" not in a.body
    assert a.published == "2017-02-07" and a.byline == "Jane Reporter" and a.origin == str(f)
    assert a.url == "https://www.dailyexample.com/news/floods-valley-road" and a.outlet == "The Daily Example"


def test_malformed_html_that_trips_the_date_finder_still_reads(tmp_path: Path) -> None:
    """htmldate asserts on "<iframe><html>" (found by tests/test_fuzz_sources.py); the text comes out anyway."""
    f = tmp_path / "odd.html"
    f.write_text("<iframe><html>" + HTML)
    a = only(f)
    assert isinstance(a, Article), a
    assert "the fire service pumped water" in a.body
    g = tmp_path / "bare.html"
    g.write_text("<iframe><html>")
    assert isinstance(only(g), Rejection) and not only(g).reason.startswith("could not read")


def test_unknown_extension_sniffed(tmp_path: Path) -> None:
    (tmp_path / "a.data").write_text(json.dumps([{"title": "A", "body": BODY}]))
    (tmp_path / "b.data").write_text(json.dumps({"title": "B", "body": BODY}) + "\n")
    (tmp_path / "c.data").write_text("just some words\n")
    a, b, c = items(tmp_path / "a.data", tmp_path / "b.data", tmp_path / "c.data")
    assert (a.title, b.title) == ("A", "B")
    assert isinstance(c, Rejection) and c.reason.startswith("unknown format")


# --- bad input -------------------------------------------------------------------------------------------


def test_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "latin.jsonl"
    f.write_bytes(b'{"title": "Caf\xe9", "body": "x"}\n')
    assert only(f) == Rejection(str(f), "not valid UTF-8 (byte 0xe9 at offset 14); re-encode it or pass --encoding")
    assert only(f, encoding="latin-1").title == "Caf\u00e9"


def test_empty_file_and_bom(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"body": BODY}).encode())
    got = items(tmp_path)
    assert got[0] == Rejection(str(tmp_path / "blank.jsonl"), "empty file")
    assert isinstance(got[1], Article)
    assert got[2] == Rejection(str(tmp_path / "empty.csv"), "empty file")


def test_nul_bytes(tmp_path: Path) -> None:
    f = tmp_path / "nul.csv"
    f.write_bytes(b"title,text\nNul\x00 title,Body with a\x00 NUL.\n")
    a = only(f)
    assert (a.title, a.body) == ("Nul title", "Body with a NUL.")


def test_huge_body_parses_then_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    f.write_text("title,text\nBig," + "x" * 10_000_000 + "\nSmall," + BODY.replace(",", "") + "\n")
    big, small = items(f)
    assert big == Rejection(f"{f}:2", "body too long: 10,000,000 characters (limit 2,000,000)")
    assert isinstance(small, Article) and small.origin == f"{f}:3"


def test_missing_path_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.jsonl: no such file or directory"):
        read_sources([str(tmp_path / "nope.jsonl")])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.pdf").write_text("x")
    with pytest.raises(SourceError, match=r"d: no article files found \(looked for \.jsonl, .*\.md\)"):
        read_sources([str(tmp_path / "d")])


def test_directory_recursion_sorted_hidden_skipped(tmp_path: Path) -> None:
    for rel in ["b/2.jsonl", "a/z/1.jsonl", "a/0.JSONL", ".hidden/x.jsonl", "a/.h.jsonl", "c/skip.pdf"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"title": rel, "body": BODY}) + "\n")
    assert [a.title for a in items(tmp_path)] == ["a/0.JSONL", "a/z/1.jsonl", "b/2.jsonl"]


def test_stdin() -> None:
    stream = io.StringIO(json.dumps({"title": "In", "body": BODY}) + "\n\nnot json\n")
    a, b = items("-", stdin=stream)
    assert (a.title, a.origin) == ("In", "<stdin>:1")
    assert b.origin == "<stdin>:3" and b.reason.startswith("invalid JSON")


def test_field_map(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "a.jsonl", {"hed": "Mapped", "story_text": BODY, "text": "decoy body"})
    a = only(f, field_map={"title": "hed", "body": "story_text"})
    assert (a.title, a.body, a.extra) == ("Mapped", BODY, {"text": "decoy body"})
    with pytest.raises(ArchiveError, match="unknown field"):
        read_sources([str(f)], {"colour": "x"})


# --- normalise -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "attr", "expected"),
    [
        ("Title", "T", "title", "T"),
        ("headline", "T", "title", "T"),
        ("content", BODY, "body", BODY),
        ("Article", BODY, "body", BODY),
        ("story", BODY, "body", BODY),
        ("link", "https://a.org/x", "url", "https://a.org/x"),
        ("article_source_link", "http://www.a.org/x", "outlet", "a.org"),
        ("source_link", " https://a.org/x ", "url", "https://a.org/x"),
        ("Publish Date", "2017/2/7", "published", "2017-02-07"),
        ("pubdate", "2017-02-07", "published", "2017-02-07"),
        ("published_at", "2017-02-07T10:00:00Z", "published", "2017-02-07T10:00:00+00:00"),
        ("datetime", "2017-02-07 10:00", "published", "2017-02-07T10:00:00"),
        ("source", "BBC", "outlet", "BBC"),
        ("publisher", "BBC", "outlet", "BBC"),
        ("sitename", "BBC", "outlet", "BBC"),
        ("site", "BBC", "outlet", "BBC"),
        ("description", "Sub", "subtitle", "Sub"),
        ("summary", "Sub", "subtitle", "Sub"),
        ("dek", "Sub", "subtitle", "Sub"),
        ("author", "Ann", "byline", "Ann"),
        ("authors", ["Ann", "Bob"], "byline", "Ann, Bob"),
        ("byline", "Ann", "byline", "Ann"),
        ("id", 42, "external_id", "42"),
        ("guid", "g-1", "external_id", "g-1"),
        ("article_id", 7.0, "external_id", "7"),
        ("lang", "en", "language", "en"),
        ("language", "de", "language", "de"),
    ],
)
def test_aliases(column: str, value: object, attr: str, expected: str) -> None:
    fields = {"text": BODY, column: value} if column.lower() not in ("content", "article", "story") else {column: value}
    a = normalise(fields, "o")
    assert isinstance(a, Article) and getattr(a, attr) == expected


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2017-02-07", "2017-02-07"),
        ("2017/2/7", "2017-02-07"),
        ("  2017/03/20 0:00", "2017-03-20T00:00:00"),
        ("2017-02-07T10:00:00+01:00", "2017-02-07T10:00:00+01:00"),
        ("2017-02-07T10:00:00.123Z", "2017-02-07T10:00:00+00:00"),
        ("Tue, 07 Feb 2017 10:00:00 GMT", "2017-02-07T10:00:00+00:00"),
        ("Feb 7, 2017", "2017-02-07"),
        ("7 February 2017", "2017-02-07"),
        ("1486461600", "2017-02-07T10:00:00+00:00"),
        ("1486461600000", "2017-02-07T10:00:00+00:00"),
        ("yesterday", None),
        ("Feb 7", None),
        ("2017", None),
        ("1066-10-14", None),
        ("3000-01-01", None),
        ("", None),
    ],
)
def test_dates(raw: str, iso: str | None) -> None:
    assert parse_date(raw) == iso


def test_year_first_dates_read_without_dateutil_as_dateutil_reads_them(monkeypatch) -> None:
    """The fast path for "2017/3/24"-like dates agrees with the dateutil route, impossible dates included."""
    from itertools import product

    from archive import sources

    grid = product(
        ("2017", "2016", "1799", "2100", "2101"),
        "-/.",
        ("2", "02", "12", "13", "0"),
        ("7", "29", "31", "32"),
        ("", "T10:00", " 0:00", " 23:59:59", "T10:00:05.123", " 24:00", " 12:60"),
    )
    dates = [f"{y}{sep}{m}{sep}{d}{t}" for y, sep, m, d, t in grid]
    fast = [parse_date(v) for v in dates]
    monkeypatch.setattr(sources, "_year_first", lambda value: None)
    assert fast == [parse_date(v) for v in dates]
    assert fast.count(None) > 500 and "2016-02-29" in fast and "2017-12-31T23:59:59" in fast


def test_unparseable_date_kept_raw() -> None:
    a = normalise({"text": BODY, "date": "sometime in spring"}, "o")
    assert a.published is None and a.extra == {"published_raw": "sometime in spring"}


def test_bad_url_goes_to_extra() -> None:
    a = normalise({"text": BODY, "url": "javascript:alert(1)", "source": "X"}, "o")
    assert a.url is None and a.extra == {"url_raw": "javascript:alert(1)"} and a.outlet == "X"


def test_values_and_extra() -> None:
    a = normalise({"text": BODY, "title": None, "Topic": "politics", "empty": "", "n": 3, "tags": ["a", "b"]}, "o")
    assert a.extra == {"Topic": "politics", "n": 3, "tags": ["a", "b"]}
    assert a.title == "The council approved the budget on Monday."


def test_no_body_and_long_first_sentence() -> None:
    assert normalise({"title": "T", "text": "  \n "}, "f:3") == Rejection("f:3", "no body text")
    assert normalise({"title": "T", "text": "Share this with"}, "f:4") == Rejection("f:4", "no body text")
    long = normalise({"text": "word " * 100}, "o")
    assert len(long.title) <= 120 and long.title.endswith("word\u2026")


# --- nothing raises --------------------------------------------------------------------------------------


@pytest.mark.parametrize("examples", [10, pytest.param(50, marks=pytest.mark.slow)])  # the full count in CI
@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".html", ".txt", ".json", ".bin"])
def test_random_bytes_never_raise(tmp_path_factory: pytest.TempPathFactory, ext: str, examples: int) -> None:
    folder = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(st.binary(max_size=400), st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass"))))
    def check(data: bytes) -> None:
        path = folder / f"x{ext}"
        path.write_bytes(data)
        got = items(path)
        assert all(isinstance(i, (Article, Rejection)) for i in got)

    check()


def test_reasons_are_counted_not_raised(tmp_path: Path) -> None:
    jsonl(tmp_path / "m.jsonl", {"body": BODY}, "{", "[]", {"title": "no body"})
    reasons = Counter(type(i).__name__ for i in items(tmp_path))
    assert reasons == {"Article": 1, "Rejection": 3}


# --- reading apart from parsing (Raw records for worker processes) ---------------------------------------


def mixed_folder(folder: Path, news_csv: Path) -> Path:
    """One file of each kind, from real NewsArticles rows."""
    rows = distinct_rows(news_csv, 6, 1500, titled=True)
    folder.mkdir()
    jsonl(folder / "a.jsonl", *[{"title": r["title"], "body": r["text"]} for r in rows[:2]], "[1]", "{bad")
    (folder / "b.json").write_text(json.dumps([{"headline": rows[2]["title"], "text": rows[2]["text"]}], indent=1))
    with open(folder / "c.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["title", "text"], [rows[3]["title"], rows[3]["text"]], ["short"]])
    (folder / "d.txt").write_text(f"{rows[4]['title']}\n\n{rows[4]['text']}\n")
    (folder / "e.html").write_text(HTML)
    (folder / "f.csv").write_text("")
    return folder


def test_raw_records_pickle_and_parse_in_worker_processes(tmp_path: Path, news_csv: Path) -> None:
    folder = mixed_folder(tmp_path / "in", news_csv)
    raws = list(read_raw([str(folder)]))
    assert {r.kind for r in raws if isinstance(r, Raw)} == {"json", "fields", "text", "html"}
    todo = [r for r in raws if isinstance(r, Raw)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        parsed = iter(list(pool.map(parse_raw, todo, chunksize=2)))
    got = [r if isinstance(r, Rejection) else next(parsed) for r in raws]
    assert got == items(folder)  # read_sources is parse_raw over read_raw: the same records, origins, reasons
    assert sum(isinstance(g, Article) for g in got) == 6
    assert Rejection(str(folder / "f.csv"), "empty file") in got
    assert pickle.loads(pickle.dumps(raws)) == raws


def test_read_raw_checks_paths_and_field_map_up_front(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        read_raw([str(tmp_path / "missing.jsonl")])
    f = jsonl(tmp_path / "a.jsonl", {"body": BODY})
    with pytest.raises(ArchiveError, match="unknown field"):
        read_raw([str(f)], {"colour": "x"})


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (Raw("fields", {"body": BODY, "tags": nested(350)}, "f:9"), "a value is nested more than 64 levels deep"),
        (Raw("fields", {"body": BODY, "n": 10**5000}, "f:9"), "a number has more than 4,300 digits"),
        (Raw("json", '{"body": "x", "n": ' + "9" * 5000 + "}", "f:9"), "a number has more than 4,300 digits"),
        (Raw("json", "[" * 5000, "f:9"), "invalid JSON: nested too deeply"),
        (Raw("json", "9" * 5000, "f:9"), "expected a JSON object, got a number"),
        (Raw("fields", ["not", "a", "dict"], "f:9"), "expected a JSON object, got an array"),
        (Raw("text", 12345, "f:9"), "could not parse the record: TypeError"),
        (Raw("spreadsheet", {}, "f:9"), "could not parse the record: KeyError"),
    ],
)
def test_parse_raw_never_raises(raw: Raw, reason: str) -> None:
    got = parse_raw(raw)
    assert isinstance(got, Rejection) and got.origin == "f:9" and got.reason.startswith(reason), got


# --- deep values and long numbers cost only their record (issue 13 item 2) ------------------------------

DEEP = '{"title": "Deep", "body": "A body.", "tags": ' + "[" * 350 + '"x"' + "]" * 350 + "}"
LONG = '{"title": "Long", "body": "A body.", "id": ' + "7" * 5000 + "}"


def good(title: str) -> dict:
    return {"title": title, "body": BODY}


def test_deep_and_long_records_are_rejected_alone_in_json_lines_arrays_and_stdin(tmp_path: Path) -> None:
    lines = [json.dumps(good("A")), DEEP, json.dumps(good("B")), LONG, json.dumps(good("C"))]
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(lines) + "\n")
    arr = tmp_path / "b.json"
    arr.write_text("[\n" + ",\n".join(lines) + "\n]\n")
    for got, origin in [
        (items(f), str(f)),
        (items(arr), str(arr)),
        (items("-", stdin=io.StringIO("\n".join(lines))), "<stdin>"),
    ]:
        assert [a.title for a in got if isinstance(a, Article)] == ["A", "B", "C"]
        shift = 1 if origin == str(arr) else 0
        assert [r for r in got if isinstance(r, Rejection)] == [
            Rejection(f"{origin}:{2 + shift}", "a value is nested more than 64 levels deep"),
            Rejection(f"{origin}:{4 + shift}", "a number has more than 4,300 digits"),
        ]


def test_an_array_element_too_deep_to_decode_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text("[" + json.dumps(good("A")) + ",\n" + "[" * 5000 + "]" * 5000 + ",\n" + json.dumps(good("B")) + "]")
    a, deep, b = items(f)
    assert (a.title, b.title) == ("A", "B")
    assert deep == Rejection(f"{f}:2", "invalid JSON: nested too deeply")


# --- regular files only, field limits, a small sniff (issue 13 item 5) ---------------------------------

CHILD_READ = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))  # a reader that does read /dev/zero dies here
from archive.sources import read_sources
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
got = [[type(i).__name__, i.origin, getattr(i, "reason", "")] for i in read_sources(sys.argv[1:])]
print(json.dumps({"items": got, "grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def read_in_child(*paths: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD_READ, *map(str, paths)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout)


def test_a_symlink_to_dev_zero_and_a_named_pipe_are_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "x.txt").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "y.jsonl")  # opening it for reading would wait for a writer forever
    jsonl(tmp_path / "z.jsonl", good("After"))
    got = read_in_child(tmp_path)
    assert got["items"] == [
        [
            "Rejection",
            str(tmp_path / "x.txt"),
            "not a regular file (a symlink to /dev/zero, a character device); only regular files are read",
        ],
        ["Rejection", str(tmp_path / "y.jsonl"), "not a regular file (a named pipe); only regular files are read"],
        ["Article", f"{tmp_path / 'z.jsonl'}:1", ""],
    ]
    assert got["grew_mb"] < 20
    assert read_in_child(tmp_path / "x.txt")["items"][0][0] == "Rejection"  # named directly, too


@pytest.mark.parametrize(("name", "limit"), sorted(FIELD_LIMITS.items()))
def test_field_length_limits(name: str, limit: int) -> None:
    value = "https://e.com/" + "a" * limit if name == "url" else "x" * (limit + 1)
    got = normalise({"body": BODY, name: value}, "f:1")
    assert got == Rejection("f:1", f"{name} too long: {len(value):,} characters (limit {limit:,})")
    assert isinstance(normalise({"body": BODY, name: value[:limit]}, "f:1"), Article)


def test_a_huge_date_string_is_rejected_without_parsing_it(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "a.jsonl", {"body": BODY, "date": "7 February 2017 " * 125_000 + "x"}, good("After"))
    huge, after = items(f)
    assert huge == Rejection(f"{f}:1", "published too long: 2,000,001 characters (limit 200)")
    assert after.title == "After"


def test_csv_dialect_is_sniffed_on_about_4_kb(news_read) -> None:
    got, samples = news_read
    assert samples and max(samples) <= 4096
    assert len(got) == 3824 and sum(isinstance(a, Article) for a in got) > 3750


# --- streaming, compressed files, WARC (issue 14 item 3) --------------------------------------------------


def test_compressed_files_read_like_plain_ones(tmp_path: Path, news_csv: Path) -> None:
    plain = mixed_folder(tmp_path / "plain", news_csv)
    packed = tmp_path / "packed"
    packed.mkdir()
    openers = {".jsonl": gzip.open, ".json": lzma.open, ".csv": bz2.open, ".txt": gzip.open, ".html": bz2.open}
    suffixes = {gzip.open: ".gz", lzma.open: ".xz", bz2.open: ".bz2"}
    for p in sorted(plain.iterdir()):
        opener = openers[p.suffix]
        with opener(packed / (p.name + suffixes[opener]), "wb") as f:
            f.write(p.read_bytes())
    (packed / "notes.pdf.gz").write_bytes(gzip.compress(b"%PDF"))
    want = [(type(i), i.origin.replace(str(plain), ""), getattr(i, "title", i)) for i in items(plain)]
    got = [
        (type(i), re.sub(r"\.(gz|bz2|xz)\b", "", i.origin.replace(str(packed), "")), getattr(i, "title", i))
        for i in items(packed)
    ]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert [g[2] for g in got if g[0] is Article] == [w[2] for w in want if w[0] is Article]


def test_a_truncated_gzip_keeps_the_records_before_the_damage(tmp_path: Path, news_csv: Path) -> None:
    rows = distinct_rows(news_csv, 300, 1000)
    data = gzip.compress("".join(json.dumps({"title": r["title"], "text": r["text"]}) + "\n" for r in rows).encode())
    f = tmp_path / "a.jsonl.gz"
    f.write_bytes(data[: len(data) * 2 // 3])
    jsonl(tmp_path / "b.jsonl", good("Next file"))
    *records, broken, after = items(tmp_path)
    assert after.title == "Next file"
    assert broken.origin == str(f) and broken.reason.startswith("corrupt or truncated compressed data after")
    assert broken.reason.endswith("; rest of the file skipped")
    assert 100 < len(records) < 300
    assert [r.origin for r in records] == [f"{f}:{i}" for i in range(1, len(records) + 1)]
    for r, row in zip(records, rows):  # each intact line read whole and right
        assert r.body == clean_text(row["text"]) if isinstance(r, Article) else r.reason == "no body text"


def test_a_json_array_streams_across_chunks_with_its_line_numbers(tmp_path: Path, monkeypatch) -> None:
    records = [{"id": 10**i, "title": f"T{i}", "body": f"{BODY} \u00e9\u2028{i}", "n": -1.5e-7 * i} for i in range(60)]
    f = tmp_path / "a.json"
    text = json.dumps(records, indent=2, ensure_ascii=False)
    f.write_text(text)
    whole = items(f)
    starts = [m.start() for m in re.finditer(r"^  \{", text, re.M)]
    assert [a.origin for a in whole] == [f"{f}:{text.count(chr(10), 0, s) + 1}" for s in starts]
    assert [a.external_id for a in whole] == [str(10**i) for i in range(60)]
    for size in (1, 7, 64, 500):
        monkeypatch.setattr(streams, "CHUNK", size)
        assert items(f) == whole


@pytest.mark.slow
def test_reading_a_200_mb_json_lines_file_keeps_memory_flat(tmp_path: Path) -> None:
    from benchmarks.stream_rss import make_jsonl, measure

    path = tmp_path / "big.jsonl"
    rows = make_jsonl(path, 200 * 2**20, row_chars=20_000)
    got = measure(path)
    assert got["records"] == rows and got["articles"] == rows // 1000
    size_mb = path.stat().st_size / 2**20
    assert got["peak_mb"] - got["baseline_mb"] < min(60, size_mb / 10), (got, size_mb)


def warc_page(row: dict, url: str | None, date: str | None, charset: str = "utf-8") -> bytes:
    """A news page in the shape of a real one, from a NewsArticles row."""
    sentences = re.split(r"(?<=\.) ", row["text"])
    third = max(1, len(sentences) // 3)
    paras = "".join(
        f"<p>{html.escape(' '.join(sentences[i : i + third]))}</p>\n" for i in range(0, len(sentences), third)
    )
    head = [
        f"<title>{html.escape(row['title'])} | Example News</title>",
        f'<meta property="og:title" content="{html.escape(row["title"])}">',
        '<meta property="og:site_name" content="Example News">',
    ]
    if url:
        head.append(f'<link rel="canonical" href="{url}">')
    if date:
        head.append(f'<meta property="article:published_time" content="{date}">')
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='{charset}'>{''.join(head)}</head><body>"
        f"<nav><a href='/'>Home</a> <a href='/world'>World</a></nav><article><h1>{html.escape(row['title'])}</h1>"
        f"{paras}</article><footer>Copyright Example News. Privacy and cookies.</footer></body></html>"
    )
    return page.encode(charset)


WARC_DATE = "2017-03-01T10:00:00Z"


def write_warc(path: Path, rows: list[dict], gz: bool) -> int:
    """A crawl of four articles and three pages that are not (an image, JSON, a 404); returns the offset of
    the last record, an article."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = [
        (rows[0]["article_source_link"], warc_page(rows[0], rows[0]["article_source_link"], "2017-02-07"), "text/html"),
        ("https://news.example.com/story-2", warc_page(rows[1], None, None), "text/html; charset=utf-8"),
        ("https://news.example.com/photo.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg"),
        ("https://news.example.com/api/story", json.dumps(good("JSON")).encode(), "application/json"),
        ("https://news.example.com/gone", b"<html><body><p>Not found</p></body></html>", "text/html"),
        (rows[2]["article_source_link"], warc_page(rows[2], None, None, "iso-8859-1"), "text/html; charset=iso-8859-1"),
        (rows[3]["article_source_link"], warc_page(rows[3], None, "2017-02-08"), "application/xhtml+xml"),
    ]
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gz)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "tests/test_sources.py"}))
        for url, body, ctype in pages:
            last = f.tell()
            status = "404 Not Found" if url.endswith("/gone") else "200 OK"
            request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "news.example.com")], is_http_request=True)
            w.write_record(w.create_warc_record(url, "request", http_headers=request))
            response = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
            record = w.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(body),
                http_headers=response,
                warc_headers_dict={"WARC-Date": WARC_DATE},
            )
            last = f.tell()
            w.write_record(record)
            if url.endswith("/gone"):
                w.write_record(
                    w.create_warc_record(
                        url,
                        "metadata",
                        payload=io.BytesIO(b"fetchTimeMs: 12"),
                        warc_content_type="application/warc-fields",
                    )
                )
    return last


@pytest.mark.parametrize("name", ["crawl.warc", "crawl.warc.gz"])
def test_warc_html_responses_become_articles(tmp_path: Path, news_csv: Path, name: str) -> None:
    rows = [r for r in distinct_rows(news_csv, 40, 1500, titled=True) if "\u00e9" not in r["text"]][:4]
    rows[2] = {**rows[2], "text": rows[2]["text"] + " Caf\u00e9 owners in the valley agreed."}
    f = tmp_path / name
    write_warc(f, rows, gz=name.endswith(".gz"))
    raws = list(read_raw([str(f)]))
    assert [r.meta for r in raws] == [
        {"url": u, "published": WARC_DATE}
        for u in (
            rows[0]["article_source_link"],
            "https://news.example.com/story-2",
            rows[2]["article_source_link"],
            rows[3]["article_source_link"],
        )
    ]
    assert all(re.fullmatch(re.escape(str(f)) + r"@\d+", r.origin) for r in raws)
    records = read_sources([str(f)])
    got = list(records)
    assert all(isinstance(a, Article) for a in got), got
    assert [a.title for a in got] == [r["title"] for r in rows]
    assert [a.url for a in got] == [r.meta["url"] for r in raws]  # canonical (first) or the fetched URL
    assert [a.published for a in got] == [
        "2017-02-07",
        "2017-03-01T10:00:00+00:00",
        "2017-03-01T10:00:00+00:00",
        "2017-02-08",
    ]
    assert all(a.outlet == "Example News" and "Privacy" not in a.body for a in got)
    assert "Caf\u00e9 owners" in got[2].body  # decoded with the charset the server named
    assert records.skipped == {
        "WARC warcinfo record": 1,
        "WARC request record": 7,
        "WARC response not HTML": 2,
        "WARC response not 2xx": 1,
        "WARC metadata record": 1,
    }


@pytest.mark.parametrize("name", ["crawl.warc", "crawl.warc.gz"])
def test_a_truncated_or_corrupt_warc_keeps_the_records_before_the_damage(
    tmp_path: Path, news_csv: Path, name: str
) -> None:
    rows = distinct_rows(news_csv, 4, 1500, titled=True)
    f = tmp_path / name
    last = write_warc(f, rows, gz=name.endswith(".gz"))
    data = f.read_bytes()
    f.write_bytes(data[: last + (len(data) - last) // 2])  # the last article cut in half
    got = items(f)
    assert [type(g).__name__ for g in got] == ["Article"] * 3 + ["Rejection"]
    assert got[-1].origin == str(f) and got[-1].reason.startswith("corrupt or truncated WARC at offset")
    assert got[-1].reason.endswith("rest of the file skipped")
    # Garbage between two records: the records before it are kept, and so is the next file.
    g = tmp_path / ("g" + name)
    g.write_bytes(
        data[:last] + (gzip.compress(b"garbage")[:12] if name.endswith(".gz") else b"garbage\r\n\r\n") + data[last:]
    )
    jsonl(tmp_path / "h.jsonl", good("Next file"))
    got = items(g, tmp_path / "h.jsonl")
    assert [type(x).__name__ for x in got] == ["Article"] * 3 + ["Rejection", "Article"]
    assert got[3].origin == str(g) and got[-1].title == "Next file"


# --- the title of a scraped text file (issue 13) -----------------------------------------------------------


def scraped(row: dict, title: str | None) -> str:
    """A scraped article saved as text, as the scraper wrote it: audio player, gallery, credits, app promo."""
    sentences = re.split(r"(?<=\.) ", row["text"])
    third = max(1, len(sentences) // 3)
    paras = [" ".join(sentences[i : i + third]) for i in range(0, len(sentences), third)]
    lines = [
        "Getting your Trinity Audio player ready...",
        *([title] if title else []),
        paras[0],
        "3 View gallery",
        "(Photo: Reuters)",
        *paras[1:2],
        "<< Download the Ynetnews app on the App Store or Google Play >>",
        *paras[2:],
    ]
    return "\n".join(lines) + "\n"


def test_a_scraped_text_file_gets_a_real_title_not_the_boilerplate(tmp_path: Path, news_csv: Path) -> None:
    row = distinct_rows(news_csv, 1, 2000, titled=True)[0]
    (tmp_path / "untitled.txt").write_text(scraped(row, None))
    (tmp_path / "titled.txt").write_text(scraped(row, row["title"]))
    titled, untitled = items(tmp_path)
    for a in (titled, untitled):
        assert isinstance(a, Article), a
        assert not any(junk in a.title + a.body for junk in ("Trinity", "View gallery", "(Photo", "App Store"))
        assert a.body.startswith(clean_title(row["text"][:60]))
    assert titled.title == clean_title(row["title"])
    assert untitled.title == derive_title(untitled.body) and row["text"].startswith(untitled.title.rstrip("\u2026"))
    boiler = normalise({"title": "Getting your Trinity Audio player ready...", "body": row["text"]}, "o")
    assert boiler.title == derive_title(boiler.body)
