"""clean_text / clean_title: unit cases, and real NewsArticles rows where no real sentence may be lost."""

from __future__ import annotations

import csv
import re
import time
import unicodedata
from pathlib import Path

import pytest

from archive.clean import boilerplate_hits, clean_text, clean_title


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('voted on DeVos"?highly contentious nomination', "voted on DeVos' highly contentious nomination"),
        ('opposition from teachers"?unions and', "opposition from teachers' unions and"),
        ('a worse choice,"?Sen. Elizabeth Warren said', 'a worse choice," Sen. Elizabeth Warren said'),
        ('"potential grizzlies."?DeVos said', '"potential grizzlies." DeVos said'),
        ('he said, "stay tuned."?', 'he said, "stay tuned."'),
        ('determine "?at least temporarily "?the fate', "determine \u2014 at least temporarily \u2014 the fate"),
        ('encourage-"?or at least', "encourage \u2014 or at least"),
        ('the "Bowling Green terrorists"?ABC News first', 'the "Bowling Green terrorists" ABC News first'),
        ('"What do you want?"?she asked', '"What do you want?" she asked'),
        ('I don"t think so', "I don't think so"),
        ('James O"\ufffdMalley pointed out', "James O'Malley pointed out"),
        ('clergy "\ufffd\xa0such as officiating', "clergy \u2014 such as officiating"),
    ],
)
def test_mojibake(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Getting your Trinity Audio player ready...\nThe council met on Monday.", "The council met on Monday."),
        ("3 View gallery\nThe fire spread quickly.", "The fire spread quickly."),
        ("The president spoke. (Photo: Alex Brandon/AP, File) He left.", "The president spoke. He left."),
        ("Crowds gathered (Photo: Getty Images) outside.", "Crowds gathered outside."),
        (
            "Rain fell. << Get the WTOP app on your smartphone: Google Play: https://x App Store: https://y >> "
            "Roads closed.",
            "Rain fell. Roads closed.",
        ),
        (
            "Image copyright Getty Images Image caption The minister arrived late. The vote passed.",
            "The minister arrived late. The vote passed.",
        ),
        (
            "Share this with Media playback is not supported on this device Cook says he is fine.",
            "Cook says he is fine.",
        ),
        (
            "The strike ends today. Do you have information you want to share with the Huffington Post? Here's how. "
            "Share this slide: How will Trump's first 100 days impact you? Learn more",
            "The strike ends today.",
        ),
        ("The talks failed. Source:-Al Jazeera and news agencies", "The talks failed."),
        ("Sales rose. (China Daily European Weekly 03/03/2017 page25)", "Sales rose."),
        (
            "A wafer in Regensburg. Guenter Schiffmann / Getty Images The plant grew.",
            "A wafer in Regensburg. The plant grew.",
        ),
        ("Prices rose.\nREAD MORE: Why prices rise\nShops closed.", "Prices rose.\nShops closed."),
        ("Markets fell.\n\nAdvertisement\n\nTraders left.", "Markets fell.\n\nTraders left."),
    ],
)
def test_boilerplate(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    "keep",
    [
        "Get the app on your phone, the minister urged farmers.",
        "The gallery reopened. Visitors can view gallery spaces on three floors.",
        "She said the photo: was taken in 2015.",
        "Learn more about the programme on its website, officials said.",
        "READ MORE: Syria hanged 13,000 in prison, says Amnesty Video footage by activists showed civilians.",
        "The source: an official who asked not to be named.",
    ],
)
def test_keeps_real_sentences(keep: str) -> None:
    assert clean_text(keep).replace("  ", " ") == keep


def test_whitespace_controls_and_unicode() -> None:
    raw = "  First\x00 para\x07graph\tends.\r\n\r\n\r\n\n  Second\xa0 paragraph.  \n"
    assert clean_text(raw) == "First paragraph ends.\n\nSecond paragraph."
    assert clean_text("Cafe\u0301") == "Caf\u00e9"  # NFC
    assert clean_text("") == "" and clean_text(" \n\t ") == ""


def test_clean_title() -> None:
    assert clean_title('  Trump"?travel ban\n  blocked \x00again ') == "Trump' travel ban blocked again"
    assert clean_title(None) == ""


# --- real data: nothing but boilerplate may disappear ------------------------------------------------------

# A sentence of the original that contains one of these may legitimately lose words; every other must survive.
MARKERS = (
    "Share this",
    "Media playback",
    "Get latest scores",
    "Get news from the BBC",
    "@BBCNewsEnts",
    "story suggestion",
    "Join the conversation",
    "contact number",
    "haveyoursay",
    "latest rumours",
    "Enjoy the best debate",
    "How to get into",
    "Huffington Post?",
    "impact you",
    "impact YOU",
    "Never miss a thing",
    "Must Reads",
    "HuffPost Entertainment",
    "Morning Email",
    "viral video",
    "weird news",
    "Read THIS",
    "best friend",
    "THE spot",
    "spilling the tea",
    "reality of being a woman",
    "Learn more",
    "Source:",
    "The views",
    "(China Daily",
    " / ",
    "contact us in the following ways",
    # the second sentence of a multi-sentence promo
    "Here's how.",
    'Here"\ufffds how.',
    "Subscribe, choose the community",
    "up-to-the-minute breaking news",
    "Each Sunday, we will bring you",
    "Click here to sign up",
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _alnum(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFC", text).lower() if ch.isalnum())


def _rows(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["text"].strip()]


def test_no_real_sentence_lost(news_csv: Path) -> None:
    rows = _rows(news_csv)
    assert len(rows) > 3000
    checked = 0
    for row in rows:
        cleaned = _alnum(clean_text(row["text"]))
        for sentence in _SENTENCE.split(row["text"]):
            if any(m in sentence for m in MARKERS) or len(_alnum(sentence)) < 3:
                continue
            assert _alnum(sentence) in cleaned, (row["article_id"], sentence)
            checked += 1
    assert checked > 50_000


def test_real_mojibake_and_boilerplate_gone(news_csv: Path) -> None:
    rows = _rows(news_csv)
    cleaned = [clean_text(r["text"]) for r in rows]
    assert sum('"?' in r["text"] for r in rows) > 900
    assert not any('"?' in c for c in cleaned)
    assert not any(boilerplate_hits(c) for c in cleaned)
    touched = sum(bool(boilerplate_hits(r["text"])) for r in rows)
    assert 1000 < touched < 2000


def test_fast_enough(news_csv: Path) -> None:
    texts = [r["text"] for r in _rows(news_csv)]
    start = time.perf_counter()
    for t in texts:
        clean_text(t)
    assert time.perf_counter() - start < 5  # ~0.7 s on a laptop core for the 3,788 bodies
