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
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\ufdd0-\ufdef\ufeff]")
_ODD_SPACES = re.compile(r"[\t\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]")

# --- mojibake --------------------------------------------------------------------------------------------
# In the NewsArticles corpus a typographic character followed by a space (’ ” —) was turned into `"?`.
# Which one it was can be told from the context: after a space it was a dash, after punctuation a closing
# quote, after a word an apostrophe unless a quotation is open.
_DASH_AFTER_NBSP = re.compile(r'(?<=\w)-"\?(?=\s*\w)')  # `encourage-"?or` : `-` stood for a no-break space
_CONTRACTION = re.compile(r'n"t\b')  # don"t, isn"t -> don't

# Each garble is first swapped for one placeholder, a Unicode noncharacter (_CONTROL removes any from the input),
# then resolved in passes of plain substitutions, each placeholder to a marker of its decision; the markers become
# text last. Every pass reads its neighbours as the original showed them (a garble, resolved or not, reads as one),
# so the result equals deciding each garble from the original text, without Python work per garble.
_G = "\ufdd0"
_MARKERS = "\ufdd0-\ufdd6"
_FINAL = [
    ("\ufdd1", '"'),
    ("\ufdd2", '" '),
    ("\ufdd3", "'"),
    ("\ufdd4", "' "),
    ("\ufdd5", "\u2014"),
    ("\ufdd6", "\u2014 "),
]
_NO_SPACE_AFTER = r"(?=[ \t\n.,;:!?)\]])"  # the next character needs no space before it
_GARBLE_PASSES = [
    (re.compile(_G + r"\Z"), "\ufdd1"),  # at the very end: a closing quote
    # after the start, whitespace or an opening bracket: a dash
    (re.compile(_G + r"(?<![^\s(\[]" + _G + ")" + _NO_SPACE_AFTER), "\ufdd5"),
    (re.compile(_G + r"(?<![^\s(\[]" + _G + ")"), "\ufdd6"),
]
# After a word and inside a quotation (the nearest `"` within 300 chars opens one): a closing quote. The text is
# scanned reversed here, so "the nearest quote before" becomes a bounded lookahead.
_OPEN_QUOTE_AHEAD = r"(?=[^\W_][^\"" + _MARKERS + r"]{0,298}(?<!\s)\"(?:[ \t\n(\[{\-/\u2014]|\Z))"
_REVERSED_PASSES = [
    (re.compile(_G + r"(?<=[ \t\n.,;:!?)\]]" + _G + ")" + _OPEN_QUOTE_AHEAD), "\ufdd1"),
    (re.compile(_G + _OPEN_QUOTE_AHEAD), "\ufdd2"),
]
_LAST_PASSES = [
    (re.compile(_G + r"(?<=[^\W_]" + _G + ")" + _NO_SPACE_AFTER), "\ufdd3"),  # after a word: an apostrophe
    (re.compile(_G + r"(?<=[^\W_]" + _G + ")"), "\ufdd4"),
    (re.compile(_G + _NO_SPACE_AFTER), "\ufdd1"),  # anything else: a quote
    (re.compile(_G), "\ufdd2"),
]
# `"\ufffd` (`"�Oprah`, `O"�Malley`, `"�\xa0such as`): before a space a dash, between letters an
# apostrophe, else a quote. Replacements are neither letters nor spaces, so the passes do not disturb each other.
_REPLACEMENT_PASSES = [
    (re.compile('"\ufffd' + r"(?=\s)"), "\u2014"),
    (re.compile(r"(?<=[^\W\d_])" + '"\ufffd' + r"(?=[^\W\d_])"), "'"),
    (re.compile('"\ufffd'), '"'),
]


def _resolve_garbles(text: str) -> str:
    text = text.replace('"?', _G)
    for rx, marker in _GARBLE_PASSES:
        text = rx.sub(marker, text)
    if _G in text:
        backwards = text[::-1]
        for rx, marker in _REVERSED_PASSES:
            backwards = rx.sub(marker, backwards)
        text = backwards[::-1]
    for rx, marker in _LAST_PASSES:
        text = rx.sub(marker, text)
    for marker, final in _FINAL:
        text = text.replace(marker, final)
    return text


def _fix_mojibake(text: str) -> str:
    if '"' not in text:
        return text
    if '"\ufffd?' in text:  # a rarer spelling of the same garble
        text = text.replace('"\ufffd?', '"?')
    if '"?' in text:
        if '-"?' in text:
            text = _DASH_AFTER_NBSP.sub(" \u2014 ", text)
        text = _resolve_garbles(text)
    if '"\ufffd' in text:
        for rx, repl in _REPLACEMENT_PASSES:
            text = rx.sub(repl, text)
    return _CONTRACTION.sub("n't", text) if 'n"t' in text else text


# --- boilerplate -----------------------------------------------------------------------------------------
_AGENCIES = ("AFP", "AP", "dpa", "DPA", "Reuters", "KNA", "epd", "SID", "EFE", "Lusa", "ANSA", "Xinhua")
# Inline fragments: (name, pattern). Removed wherever they occur; names are for reports and tests.
BOILERPLATE: list[tuple[str, str | tuple[str, ...], str]] = [
    ("audio player", "Trinity Audio", r"Getting your Trinity Audio player ready(?:\.+|\u2026)?"),
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
    ("huffpost promo", "weird news", r"(?:The truth is stranger than fiction\. )?Step into the world of weird news\."),
    ("huffpost promo", "Read THIS", r"Read THIS and be the most interesting person at your dinner party\."),
    ("huffpost promo", "best friend", r"We'r?e? basically your best friend\W{1,3}with better taste\."),
    ("huffpost promo", "THE spot", r"THE spot for your favorite fan theories and the best Netflix recs\."),
    ("huffpost promo", "spilling the tea", r"We'r?e? spilling the tea on all the queer news that matters to you\."),
    ("huffpost promo", "reality of being a woman", r"The reality of being a woman\W{1,4}by the numbers\."),
    (
        "huffpost promo",
        "HuffPost Lifestyle is",
        r"HuffPost Lifestyle is a daily newsletter that will make you happier and healthier\W{1,4}"
        r"one email at a time\.",
    ),
    (
        "huffpost promo",
        "progressive parenting",
        r"(?:The HuffPost Parents newsletter, So You Want To Raise A Feminist, offers the latest stories and news in "
        r"progressive parenting\. )?Start here, with the latest stories and news in progressive parenting\.",
    ),
    # BBC Sport's trailer: "Run by the BBC and partners" and club listings, then the getinspired link.
    (
        "bbc promo",
        "Run by the BBC and partners",
        r"Run by the BBC and partners\b[^\n]{0,150}?(?=For more ideas, information and inspiration, visit )",
    ),
    (
        "bbc promo",
        "For more ideas, information",
        r"For more ideas, information and inspiration, visit (?:www\.)?bbc\.co\.uk/[\w/-]*",
    ),
    (
        "share bar",
        "Newsvine Permalink",
        r"(?:Send )?Facebook Twitter Google\+ Whatsapp Tumblr linkedin stumble Digg reddit Newsvine Permalink"
        r"(?: https?://(?:www\.)?dw\.com/p/\w+)?",
    ),
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
        ("(China Daily", "( China Daily"),
        r"\( ?China Daily(?: European Weekly| USA| Africa| Asia)?[^()\n]{0,40}\bpage ?\d+\)",
    ),
    # A credit starts at a word's start, so a long run of letters is scanned once, not once per letter.
    (
        "photo credit",
        " / ",
        r"(?<![\w'-])(?:[A-Z](?:[\w'-]+|\.) ){1,3}/ (?:Getty Images|AFP|Reuters|AP|Xinhua|EPA|for China Daily)"
        r"(?=\s|$)",
    ),
    ("photo credit", "rovided to China Daily", r"\b(?:Photos?|Images?) [Pp]rovided to China Daily\b"),
    (
        "contact credit",
        "chinadaily",
        r"(?<!\S)(?:Contact the writers?(?: at| through)? )?[\w.+-]{1,64}@(?:mail\.)?chinadaily(?:uk)?"
        r"\.com(?:\.cn)?(?:(?:,| and) [\w.+-]{1,64}@(?:mail\.)?chinadaily(?:uk)?\.com(?:\.cn)?)*",
    ),
    # DW's sign-off: editors' initials and the agencies, `jbh/rt (AFP/Reuters)`, `ct/kbm-(AFP, dpa)`.
    (
        "agency credit",
        (*(f"({agency}" for agency in _AGENCIES), "(with "),
        r"[a-z](?<![\w/][a-z])[a-z]{0,4}(?:/[a-z]{1,5}){1,3}[ -]{0,2}"
        rf"\((?=[^()\n]{{0,100}}\))(?:with )?(?:{'|'.join(_AGENCIES)})(?:\s?[,/]-?\s?[^(),/\n]{{1,60}}){{0,8}}\)",
    ),
    # Rows of dashes between paragraphs: `. - - - - - -` or `.------` after a sentence, or five dashes or more
    # anywhere. A row after a word (` --- `) is a dash in the text and stays. Rows start with a dash that no other
    # dash precedes, so a long row is scanned once. Dashes dangling at the end: _drop_trailing_dashes.
    (
        "separator",
        ("- -", "--"),
        r"-(?:(?:(?<![^\n.!?\"'\u2019\u201d)\]]-)|(?<=[\n.!?\"'\u2019\u201d)\]] -))(?: ?-){2,} ?(?!\w)"
        r"|(?<![\w-]-)-{4,}(?!\w))",
    ),
]
# Plain `in` tests on the trigger are far cheaper than a regex scan, so each rule only runs where it can hit.
_RULES = [
    (name, (trigger,) if isinstance(trigger, str) else trigger, re.compile(p)) for name, trigger, p in BOILERPLATE
]

# Whole lines that are navigation or link furniture when they stand alone (multi-line sources: HTML, JSONL).
# One pass over the whole text (a Python step per line would cost seconds on a body of a million lines); a
# matched line goes with its line break, as if it had never been there. Nothing here crosses a line break; the
# lookahead on the first letter turns most lines away before the alternatives are tried.
_LINE_BOILERPLATE = re.compile(
    r"^[^\S\n]*(?=[acdfgirsw])(?:advertisement|share(?: this(?: article| story)?| on \w+)?|read more"
    r"|related(?: articles| stories)?|skip to (?:main )?content|continue reading|follow us(?: on \w+)?|sign up"
    r"|subscribe|(?:read more|related|also read|watch)[^\S\n]*[:\u2014-][^.!\n]{0,150}"
    r"|(?:download|get|install)\b[^\n]{0,200}\b(?:app store|google play)\b[^\n]{0,100})[^\w\n]*(?:\n|\Z)",
    re.IGNORECASE | re.MULTILINE,
)

_SPACES = re.compile(r"  +")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)*")
_TRAILING = re.compile(r"(?<! ) +\n *|\n +")  # from a run's first space: one scan per run


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
        text = _LINE_BOILERPLATE.sub("", text)
    for _, triggers, rx in _RULES:
        if any(t in text for t in triggers):
            text = rx.sub(" ", text)
    return _drop_trailing_dashes(text)


def _drop_trailing_dashes(text: str) -> str:
    """`... the trial. -` or `... Reuters) - -` (left by a sign-off): the dashes go; `well-` stays."""
    body = text.rstrip(" \n-")
    tail = text[len(body) :]
    if "-" not in tail or (tail[0] == "-" and body[-1:].isalnum()):
        return text
    return body


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
