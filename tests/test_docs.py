"""The README's command-line examples run, so the README cannot drift from the CLI.

Every `archive ...` line of README.md's ```bash blocks is parsed (comments dropped, `cat FILE | archive ...` fed
on stdin, `[--option value]` run both without and with it, `[words]` placeholders left out) and run through
click's CliRunner in a folder holding a small archive at the CLI's default paths. Commands that never embed run
on the hash-encoder sample; load, search and re-embedding need the archive's model, so they run on a small real
archive (slow). `serve` would block, so its arguments are only parsed.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import distinct_rows

from archive import Archive
from archive.cli import cli
from archive.embed import default_model_path

README = Path(__file__).resolve().parent.parent / "README.md"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
COMMAND_LINE = re.compile(r"^(cat \S+ \| )?archive ")


@dataclass
class Example:
    line: str  # as the README has it
    args: list[str]  # after `archive`
    stdin: str | None = None  # the file a `cat FILE |` feeds in
    optional: bool = False  # this variant includes the line's [--optional] parts

    @property
    def command(self) -> str:
        return self.args[0]

    @property
    def needs_model(self) -> bool:
        """Loading and searching embed text with the archive's model; so does re-embedding the archive."""
        return self.command in ("load", "search") or "--reembed" in self.args

    def __str__(self) -> str:
        """The line without its comment (a test id); the optional parts' variant says so."""
        return " ".join(re.sub(r"\s#\s.*$", "", self.line).split()) + (" +optional" if self.optional else "")


def parse(line: str) -> list[Example]:
    """One README line as one or two runnable examples (without and with its `[--optional]` parts)."""
    tokens = shlex.split(line, comments=True)
    stdin = None
    if tokens[0] == "cat":
        stdin, tokens = tokens[1], tokens[3:]
    required, optional, group = [], [], None
    for token in tokens[1:]:
        if token.startswith("["):
            group = []
        if group is not None:
            group.append(token.strip("[]"))
            if token.endswith("]"):
                if group[0].startswith("-"):  # an option the reader may add; "[datasette options]" is prose
                    optional += group
                    required.append(tuple(group))
                group = None
        else:
            required.append(token)
    plain = [t for t in required if isinstance(t, str)]
    full = [x for t in required for x in (t if isinstance(t, tuple) else (t,))]
    examples = [Example(line, plain, stdin)]
    return examples + ([Example(line, full, stdin, optional=True)] if optional else [])


def readme_examples() -> list[Example]:
    lines = [
        line.strip()
        for block in BASH_BLOCK.findall(README.read_text(encoding="utf-8"))
        for line in block.splitlines()
        if COMMAND_LINE.match(line.strip())
    ]
    return [example for line in lines for example in parse(line)]


EXAMPLES = readme_examples()


def articles() -> int:
    with sqlite3.connect("archive.db") as conn:
        return conn.execute("select count(*) from articles").fetchone()[0]


def invoke(example: Example, values: dict[str, str]) -> click.testing.Result:
    """Run an example; `values` replaces the README's stand-ins for the reader's own ids, URLs and folders."""
    args = [values.get(a, a) for a in example.args]
    stdin = Path(example.stdin).read_text(encoding="utf-8") if example.stdin else None
    return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)


def parse_only(example: Example) -> None:
    """Click's own parsing of the arguments (types, choices, unknown options), without running the command."""
    command = cli.get_command(click.Context(cli), example.command)
    assert command is not None, f"no such command: {example.command}"
    command.make_context(example.command, list(example.args[1:]))


def test_the_readme_has_command_line_examples_of_every_command():
    assert len(EXAMPLES) >= 10
    shown = {e.command for e in EXAMPLES} | set(re.findall(r"archive (\w+)", README.read_text(encoding="utf-8")))
    assert set(cli.commands) <= shown, set(cli.commands) - shown


def test_the_parser_reads_options_placeholders_pipes_and_comments():
    (plain, full) = parse('archive serve [--port 8001] [datasette options]   # "quoted" comment')
    assert (plain.args, full.args) == (["serve"], ["serve", "--port", "8001"])
    (piped,) = parse("cat feed.jsonl | archive load -                  # JSON Lines on stdin")
    assert (piped.args, piped.stdin) == (["load", "-"], "feed.jsonl")
    (quoted,) = parse('archive search "flooding after the cyclone" -k 5')
    assert quoted.args == ["search", "flooding after the cyclone", "-k", "5"]


# --- commands that never embed: the hash-encoder sample ------------------------------------------------------


@pytest.fixture
def hash_folder(hash_sample, tmp_path, monkeypatch) -> dict[str, str]:
    """A copy of the hash sample as ./archive.db and ./indexes (the CLI's defaults); the placeholders' values."""
    hash_sample.copy_to(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARCHIVE_DB", raising=False)
    avalanche = hash_sample.ids("avalanche")
    return {
        "1234": str(hash_sample.ids("debbie")[0]),
        "17": str(avalanche[0]),
        "http://example.com/story": hash_sample.story_urls["avalanche"][1],
        "DIR": str(default_model_path()),
    }


@pytest.mark.parametrize("example", [e for e in EXAMPLES if not e.needs_model], ids=str)
def test_readme_example_runs(example, hash_folder):
    if example.command == "serve":  # would serve until stopped
        parse_only(example)
        return
    before = articles()
    result = invoke(example, hash_folder)
    assert result.exit_code == 0, result.output
    assert result.output.strip() and "Traceback" not in result.output
    if example.command == "delete":
        assert f"deleted 2 article(s): {hash_folder['17']}" in result.output
        assert articles() == before - 2


# --- commands that embed: a small real archive (slow) ------------------------------------------------------


def write_inputs(folder: Path, news_csv: Path) -> None:
    """The files the README's examples name, made of real NewsArticles rows (bodies cut short, for speed)."""
    rows = [r | {"text": r["text"][:700]} for r in distinct_rows(news_csv, 6, 1500, titled=True)]
    with open(folder / "articles.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:2])
    (folder / "feeds").mkdir()
    (folder / "feeds" / "story.txt").write_text(f"{rows[2]['title']}\n\n{rows[2]['text']}", encoding="utf-8")

    def record(r: dict) -> str:
        keys = {"title": "title", "text": "body", "article_source_link": "url", "publish_date": "published"}
        return json.dumps({new: r[old] for old, new in keys.items()}) + "\n"

    (folder / "feeds" / "wire.jsonl").write_text(record(rows[3]), encoding="utf-8")
    (folder / "more.jsonl").write_text(record(rows[4]), encoding="utf-8")
    (folder / "feed.jsonl").write_text(record(rows[5]), encoding="utf-8")
    queries = [{"query": rows[0]["title"], "k": 2}, {"query": "flooding after the cyclone"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")


@pytest.fixture(scope="module")
def real_inputs(news_csv, tmp_path_factory) -> Path:
    """The README's input files and an archive of articles.csv only, built with the real model."""
    folder = tmp_path_factory.mktemp("readme")
    write_inputs(folder, news_csv)
    arc = Archive(folder / "archive.db", folder / "indexes", create=True)
    try:
        arc.load([str(folder / "articles.csv")])
    finally:
        arc.close()
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.needs_model], ids=str)
def test_readme_example_that_embeds_runs(example, real_inputs, tmp_path, monkeypatch):
    folder = tmp_path / "readme"
    shutil.copytree(real_inputs, folder, ignore=shutil.ignore_patterns(".lock"))
    monkeypatch.chdir(folder)
    monkeypatch.delenv("ARCHIVE_DB", raising=False)
    before = articles()
    result = invoke(example, {"DIR": str(default_model_path())})
    assert result.exit_code == 0, result.output
    assert result.output.strip() and "Traceback" not in result.output
    if example.command == "load":
        assert articles() > before, result.output  # the files beyond articles.csv are new
