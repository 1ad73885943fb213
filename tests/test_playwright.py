"""A real browser (Debian chromium via Playwright) against `archive serve`: search, results, related coverage."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from archive import Archive

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SCRIPT_TITLE = "<script>alert(1)</script>"
IMG_TITLE = "<img src=x onerror=alert(2)> Tram lines closed in Vienna"
HOSTILE_OUTLET = '"><svg onload=alert(3)>'

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

if sync_playwright is None or not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser test: install playwright and Debian chromium")
    pytest.skip("playwright or /usr/bin/chromium is missing", allow_module_level=True)

pytestmark = pytest.mark.browser
IMG_ID = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"archive serve exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="module")
def server(sample_archive, tmp_path_factory):
    """`archive serve` on a copy of the sample archive holding one article titled with a <script> tag."""
    base = tmp_path_factory.mktemp("browser")
    shutil.copy(sample_archive.db_path, base / "archive.db")
    shutil.copytree(sample_archive.index_dir, base / "indexes", ignore=shutil.ignore_patterns(".lock"))
    (base / "xss.jsonl").write_text(
        json.dumps(
            {
                "title": SCRIPT_TITLE,
                "outlet": "example.org",
                "published": "2017-04-01",
                "url": "https://example.org/x",
                "body": "A zebra escaped from a circus in Vienna and trotted along the Ringstrasse "
                "before keepers caught it.",
            }
        )
        + "\n"
        + json.dumps(
            {
                "title": IMG_TITLE,
                "outlet": HOSTILE_OUTLET,
                "published": "2017-04-02",
                "url": "https://example.org/y",
                "subtitle": "<iframe src=javascript:alert(4)>",
                "byline": "<b onmouseover=alert(5)>x</b>",
                "body": "Police closed two tram lines in Vienna after a zebra ran along the Ringstrasse. "
                "<script>alert(6)</script> <img src=x onerror=alert(7)> Keepers caught it by the opera house.",
            }
        )
        + "\n"
    )
    arc = Archive(base / "archive.db", base / "indexes")
    arc.load([str(base / "xss.jsonl")])
    xss_id = arc.article("https://example.org/x")["id"]
    global IMG_ID
    IMG_ID = arc.article("https://example.org/y")["id"]
    arc.close()
    port = free_port()
    script = Path(sys.executable).parent / "archive"
    proc = subprocess.Popen(
        [str(script), "serve", "--db", str(base / "archive.db"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/-/versions.json", proc)
        yield url, xss_id
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def page():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        yield page
        browser.close()


def test_search_then_related_coverage(server, page):
    url, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(url + "/archive/-/semantic")
    page.fill("input[name=q]", "tropical cyclone hits the Queensland coast")
    page.click("input[type=submit]")
    page.wait_for_selector(".na-result")
    assert page.locator(".na-result").count() == 10
    assert "debbie" in page.locator(".na-results").inner_text().lower()
    page.screenshot(path=str(ARTIFACTS / "semantic.png"), full_page=True)

    page.locator(".na-result .na-title").first.click()
    page.wait_for_selector("text=Find related coverage")
    page.click("text=Find related coverage")
    page.wait_for_selector(".na-result")
    assert "/-/related" in page.url
    assert page.locator(".na-result").count() >= 5
    page.screenshot(path=str(ARTIFACTS / "related.png"), full_page=True)


def test_script_title_never_runs(server, page):
    url, xss_id = server
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in (
        "/archive/-/semantic?q=zebra+escaped+from+a+circus",
        f"/archive/articles/{xss_id}",
        f"/archive/articles/{xss_id}/-/related",
    ):
        page.goto(url + path)
        page.wait_for_load_state("load")
        assert SCRIPT_TITLE in page.locator("body").inner_text(), path
    assert dialogs == []


def test_hostile_titles_outlets_bodies_and_queries_never_run(server, page):
    """<img onerror>, <svg onload>, <iframe javascript:> in every field, and in the query itself."""
    from urllib.parse import quote

    url, xss_id = server
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    paths = [
        "/archive/-/semantic?q=zebra+tram+lines+Vienna&mode=semantic",
        "/archive/-/semantic",
        f"/archive/-/semantic?q=tram&outlet={quote(HOSTILE_OUTLET)}",
        f"/archive/articles/{IMG_ID}",
        f"/archive/articles/{IMG_ID}/-/related",
        f"/archive/articles/{xss_id}/-/related",
        "/archive/articles?_search=zebra",
        f"/archive/articles?outlet={quote(HOSTILE_OUTLET)}",
        "/archive/-/semantic?q=" + quote("<img src=x onerror=alert(8)>") + "&mode=keyword",
        "/archive/-/semantic?q=x&since=" + quote("<script>alert(9)</script>"),
    ]
    for path in paths:
        page.goto(url + path)
        page.wait_for_load_state("load")
    page.goto(url + "/archive/-/semantic?q=zebra+tram+lines+Vienna&mode=semantic")
    assert IMG_TITLE in page.locator(".na-results").inner_text()
    assert page.locator(".na-results img, .na-results svg, .na-results iframe").count() == 0
    assert dialogs == []


def test_related_splits_same_story_and_the_story_page_has_a_timeline(server, page, sample_archive):
    """Cyclone Debbie: the related page heads with the same-story group; the story page lists its coverage."""
    url, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    arc = sample_archive.open()
    try:
        debbie = arc.article(sample_archive.story_urls["debbie"][0])["id"]
    finally:
        arc.close()
    page.goto(url + f"/archive/articles/{debbie}/-/related")
    page.wait_for_selector(".na-result")
    headings = page.locator("h2.na-section").all_inner_texts()
    assert headings and headings[0].startswith("Same story"), headings
    page.screenshot(path=str(ARTIFACTS / "related-split.png"), full_page=True)

    page.goto(url + "/archive/-/stories?sort=size")
    page.wait_for_selector(".na-result")
    page.locator(".na-result .na-title").first.click()
    page.wait_for_selector(".na-timeline li")
    assert page.locator(".na-timeline li").count() >= 2
    assert page.locator(".na-timeline .na-badge").first.inner_text() == "first"
    page.screenshot(path=str(ARTIFACTS / "story.png"), full_page=True)
