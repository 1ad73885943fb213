"""read_sources / normalise: every format, every kind of bad input, and the whole real NewsArticles.csv."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive.models import ArchiveError, Article, Rejection, SourceError
from archive.sources import normalise, parse_date, read_sources

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


def test_news_articles_csv(news_csv: Path) -> None:
    got = items(news_csv)
    assert len(got) == 3824
    rejected = [r for r in got if isinstance(r, Rejection)]
    articles = [a for a in got if isinstance(a, Article)]
    assert len(rejected) == 36 and {r.reason for r in rejected} == {"no body text"}
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


def test_untitled_rows_get_a_derived_title(news_csv: Path) -> None:
    import csv

    csv.field_size_limit(1 << 30)
    with open(news_csv, newline="", encoding="utf-8") as f:
        untitled = {r["article_id"] for r in csv.DictReader(f) if not r["title"].strip() and r["text"].strip()}
    assert len(untitled) > 50
    derived = [a for a in items(news_csv) if isinstance(a, Article) and a.external_id in untitled]
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


@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".html", ".txt", ".json", ".bin"])
def test_random_bytes_never_raise(tmp_path_factory: pytest.TempPathFactory, ext: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
