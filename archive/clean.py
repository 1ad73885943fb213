"""Text normalisation for scraped news: unicode, control characters, mojibake, boilerplate, whitespace.

Everything here is a pure function over strings built from precompiled regexes: it runs on every article of
every load. Boilerplate rules are deliberately narrow (exact promo phrases, markers with a clear end) because
dropping a real sentence is worse than keeping a stray promo line.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean_text", "clean_title", "BOILERPLATE"]

# C0/C1 control characters except \t and \n (\r is handled as a line break first).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\ufeff]")
_ODD_SPACES = re.compile(r"[\t\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]")

# --- mojibake --------------------------------------------------------------------------------------------
# In the NewsArticles corpus a typographic character followed by a space (’ ” —) was turned into `"?`.
# Which one it was can be told from the context: after a space it was a dash, after punctuation a closing
# quote, after a word an apostrophe unless a quotation is open.
_MOJIBAKE = re.compile(r'"\?')
_DASH_AFTER_NBSP = re.compile(r'(?<=\w)-"\?(?=\s*\w)')  # `encourage-"?or` : `-` stood for a no-break space
_REPLACEMENT_QUOTE = re.compile('"\ufffd')  # `"�Oprah`, `O"�Malley`, `"�\xa0such as`
_CONTRACTION = re.compile(r'n"t\b')  # don"t, isn"t -> don't
_OPENER_BEFORE = " \t\n([{-/\u2014"
_NO_SPACE_BEFORE = set(" \t\n.,;:!?)]")


def _quote_is_open(text: str, pos: int) -> bool:
    """True when the nearest `"` before pos (within 300 chars) opens a quotation."""
    j = text.rfind('"', max(0, pos - 300), pos)
    if j < 0:
        return False
    nxt = text[j + 1] if j + 1 < len(text) else ""
    if nxt == "?" or nxt.isspace() or nxt == "":
        return False
    return j == 0 or text[j - 1] in _OPENER_BEFORE


def _mojibake_sub(m: re.Match) -> str:
    text, (start, end) = m.string, m.span()
    prev = text[start - 1] if start else ""
    nxt = text[end] if end < len(text) else ""
    if nxt == "":
        return '"'
    space = "" if nxt in _NO_SPACE_BEFORE else " "
    if prev == "" or prev.isspace() or prev in "([":
        return "\u2014" + space
    if prev.isalnum() and not _quote_is_open(text, start):
        return "'" + space
    return '"' + space


def _fix_mojibake(text: str) -> str:
    if '"' not in text:
        return text
    if '"\ufffd?' in text:  # a rarer spelling of the same garble
        text = text.replace('"\ufffd?', '"?')
    if '"?' in text:
        if '-"?' in text:
            text = _DASH_AFTER_NBSP.sub(" \u2014 ", text)
        text = _MOJIBAKE.sub(_mojibake_sub, text)
    if "\ufffd" in text:
        text = _REPLACEMENT_QUOTE.sub(_replacement_quote_sub, text)
    return _CONTRACTION.sub("n't", text) if 'n"t' in text else text


def _replacement_quote_sub(m: re.Match) -> str:
    text, end = m.string, m.end()
    prev = text[m.start() - 1] if m.start() else ""
    nxt = text[end] if end < len(text) else ""
    if nxt.isspace():
        return "\u2014"
    if prev.isalpha() and nxt.isalpha():
        return "'"
    return '"'


# --- boilerplate -----------------------------------------------------------------------------------------
# Inline fragments: (name, pattern). Removed wherever they occur; names are for reports and tests.
BOILERPLATE: list[tuple[str, str | tuple[str, ...], str]] = [
    ("audio player", "Trinity Audio", r"Getting your Trinity Audio player ready\.*"),
    ("gallery", "View gallery", r"(?:\b\d+\s+)?View gallery\b"),
    (
        "photo credit",
        ("(Photo", "(Image", "(Picture"),
        r"\((?:Photo|Image|Picture|Photograph)s?(?: credit)?\s*:[^()\n]{0,200}\)",
    ),
    ("app promo", "<<", r"<<[^<>\n]{0,300}\b(?:app|App Store|Google Play)\b[^<>\n]{0,300}>>"),
    ("image copyright", "Image copyright", r"Image copyright\s+(?:[\w&.'/-]+\s+){0,6}?(?=Image caption\b)"),
    ("image caption", "Image caption", r"Image caption\s+"),
    ("media playback", "Media playback", r"Media playback is (?:not supported|unsupported) on (?:this|your) device\b"),
    ("share prompt", "Share this", r"Share this (?:with|slide:)(?=\s|$)"),
    (
        "bbc promo",
        "Get latest scores",
        r"Get latest scores and headlines sent straight to your phone, sign-up to our newsletter "
        r"and learn where to find us on online\.",
    ),
    ("bbc promo", "Get news from the BBC", r"Get news from the BBC in your inbox, each weekday morning\b"),
    ("bbc promo", "@BBCNewsEnts", r"Follow us on Facebook, on Twitter @BBCNewsEnts, or on Instagram at bbcnewsents\."),
    ("bbc promo", "story suggestion", r"If you have a story suggestion email entertainment\.news@bbc\.co\.uk\.?"),
    (
        "bbc promo",
        "Join the conversation",
        r"Join the conversation - find us on Facebook, Instagram, Snapchat and Twitter\.?",
    ),
    (
        "bbc promo",
        "contact number",
        r"Please include a contact number if you are willing to speak to a BBC journalist\."
        r"(?: You can also contact us in the following ways:)?",
    ),
    ("bbc promo", "haveyoursay@", r"Share your pictures and experiences by emailing haveyoursay@bbc\.co\.uk\."),
    ("bbc promo", "haveyoursay@", r"Email haveyoursay@bbc\.co\.uk with your stories\."),
    ("bbc promo", "latest rumours", r"The latest rumours and stories from around the world of football\."),
    (
        "bbc promo",
        "Enjoy the best debate",
        r"Enjoy the best debate, analysis and interviews with 5 live and World Service "
        r"football plus our commentary listings\.",
    ),
    ("bbc promo", "How to get into", r"How to get into [a-z ]{3,30} - [^.\n]{5,200}\."),
    (
        "huffpost promo",
        "Huffington Post?",
        r"Do you have information you want to share with the Huffington Post\? Here's how\.",
    ),
    (
        "huffpost promo",
        ("impact you?", "impact YOU?"),
        r"How will (?:Donald )?Trump's (?:first 100 days|administration) impact (?:you|YOU)\?"
        r"(?: Subscribe, choose the community that you most identify with or want to learn more about and "
        r"we'll send you the news that matters most once a week throughout Trump's first 100 days in office\.)?",
    ),
    (
        "huffpost promo",
        "Never miss a thing",
        r"Never miss a thing\. Sign up for up-to-the-minute breaking news alerts delivered "
        r"straight to your inbox\.",
    ),
    (
        "huffpost promo",
        "HuffPost Must Reads",
        r"Sign up for the HuffPost Must Reads newsletter\. Each Sunday, we will bring you the "
        r"best original reporting, long form writing and breaking news from The Huffington Post and around the "
        r"web, plus behind-the-scenes looks at how it's all made\. Click here to sign up!",
    ),
    (
        "huffpost promo",
        "HuffPost Must Reads",
        r"Every week, HuffPost Must Reads features a behind-the-scenes[^.\n]{0,300}\.",
    ),
    (
        "huffpost promo",
        "HuffPost Entertainment",
        r"HuffPost Entertainment is your one-stop shop for celebrity news, hilarious "
        r"late-night bits, industry and awards coverage and more\W{1,4}sent right to your inbox six days a week\.",
    ),
    (
        "huffpost promo",
        "The Morning Email",
        r"The Morning Email helps you start your workday with everything you need to know: "
        r"breaking news, entertainment and a dash of fun\.",
    ),
    ("huffpost promo", "viral video", r"Don't be the last to watch the viral video everyone is talking about\."),
    ("huffpost promo", "weird news", r"Step into the world of weird news\."),
    ("huffpost promo", "Read THIS", r"Read THIS and be the most interesting person at your dinner party\."),
    ("huffpost promo", "best friend", r"We'r?e? basically your best friend\W{1,3}with better taste\."),
    ("huffpost promo", "THE spot", r"THE spot for your favorite fan theories and the best Netflix recs\."),
    ("huffpost promo", "spilling the tea", r"We'r?e? spilling the tea on all the queer news that matters to you\."),
    ("huffpost promo", "reality of being a woman", r"The reality of being a woman\W{1,4}by the numbers\."),
    ("trailer", "Learn more", r" ?Learn more\s*$"),
    (
        "trailer",
        "Source:",
        r"Source:[\s-]{0,3}(?:Al Jazeera|News agencies|[A-Z][A-Za-z]+ news agenc(?:y|ies))"
        r"[A-Za-z ,]{0,60}$",
    ),
    (
        "disclaimer",
        "The views expressed",
        r"The views expressed in this article are the author's own and do not necessarily reflect "
        r"Al Jazeera's editorial policy\.",
    ),
    (
        "disclaimer",
        "necessarily reflect those of China Daily",
        r"The views do not necessarily reflect those of China Daily\.",
    ),
    (
        "print edition",
        "(China Daily",
        r"\(China Daily(?: European Weekly| USA| Africa| Asia)?[^()\n]{0,40}\bpage ?\d+\)",
    ),
    (
        "photo credit",
        " / ",
        r"(?:[A-Z](?:[\w'-]+|\.) ){1,3}/ (?:Getty Images|AFP|Reuters|AP|Xinhua|EPA|for China Daily)"
        r"(?=\s|$)",
    ),
]
# Plain `in` tests on the trigger are far cheaper than a regex scan, so each rule only runs where it can hit.
_RULES = [
    (name, (trigger,) if isinstance(trigger, str) else trigger, re.compile(p)) for name, trigger, p in BOILERPLATE
]

# Whole lines that are navigation or link furniture when they stand alone (multi-line sources: HTML, JSONL).
_LINE_BOILERPLATE = re.compile(
    r"^(?:advertisement|share(?: this(?: article| story)?| on \w+)?|read more|related(?: articles| stories)?"
    r"|skip to (?:main )?content|continue reading|follow us(?: on \w+)?|sign up|subscribe"
    r"|(?:read more|related|also read|watch)\s*[:\u2014-][^.!\n]{0,150})[?\W]*$",
    re.IGNORECASE,
)

_SPACES = re.compile(r"  +")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)*")
_TRAILING = re.compile(r" +\n *|\n +")


def _base(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        text = _ODD_SPACES.sub(" ", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isprintable():  # cheap test before the regex: most texts have no control characters
        text = _CONTROL.sub("", text.replace("\t", " "))
    return text


def _strip_boilerplate(text: str) -> str:
    if "\n" in text:  # a one-line text is never a lone link line: it is the article
        text = "\n".join(ln for ln in text.split("\n") if not _LINE_BOILERPLATE.match(ln.strip()))
    for _, triggers, rx in _RULES:
        if any(t in text for t in triggers):
            text = rx.sub(" ", text)
    return text


def _tidy_spaces(text: str) -> str:
    if "  " in text:
        text = _SPACES.sub(" ", text)
    if "\n" in text:
        text = _TRAILING.sub("\n", text)
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def clean_text(text: str) -> str:
    """Normalise a scraped article body; paragraphs (blank-line separated) survive, at most one blank line."""
    if not text:
        return ""
    text = _fix_mojibake(_base(text))
    text = _strip_boilerplate(text)
    return _tidy_spaces(text)


def clean_title(text: str | None) -> str:
    """A headline on one line: same unicode and mojibake fixes, whitespace collapsed."""
    if not text:
        return ""
    text = _fix_mojibake(_base(text))
    return " ".join(text.split())


def boilerplate_hits(text: str) -> list[str]:
    """Names of the boilerplate rules that match text (for reports and tests)."""
    text = _fix_mojibake(_base(text))
    return [name for name, triggers, rx in _RULES if any(t in text for t in triggers) and rx.search(text)]
