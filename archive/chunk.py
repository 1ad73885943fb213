"""Token-aware chunking: passages that fit the model's window, with overlap and char offsets.

Each chunk is embedded as "title\\n\\npassage" so a passage deep in an article still carries what the story is
about; the stored `text` is the passage alone, `start`/`end` are its offsets into the body. Nothing is ever
truncated by the model: the title and passage budgets are counted with the model's own tokenizer.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

# A sentence ends at . ! ? or … (optionally followed by a closing quote or bracket) before whitespace;
# paragraph breaks always end one. Split on it, every match yields two groups: the closers (kept with the
# sentence) and the whole whitespace run (dropped). A paragraph break is tried only at the start of a run, so
# a long run of spaces is scanned once, not once per space.
_SENTENCE_END = re.compile(r"((?<=[.!?…])[\"'”’)\]]*|(?<!\s)(?=\s*\n\s*\n))(\s+)")
TITLE_MAX_TOKENS = 48
SPECIAL_TOKENS = 2  # [CLS] and [SEP]


class Tokenizing(Protocol):
    max_tokens: int
    additive: bool  # optional: True when token counts add up over whitespace-separated pieces

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


@dataclass
class Chunk:
    seq: int
    start: int
    end: int
    text: str
    embed_text: str

    @property
    def content_hash(self) -> str:
        return hashlib.sha1(self.embed_text.encode("utf-8")).hexdigest()


def sentence_spans(body: str) -> list[tuple[int, int]]:
    """Char spans of sentences (whitespace between them excluded)."""
    # Offsets from the lengths of the split parts (sentence, closers, gap, sentence, ...): no Python work per
    # sentence, which matters on a body of a million tiny "sentences".
    pos = list(accumulate(map(len, _SENTENCE_END.split(body)), initial=0))
    spans = [*zip(pos[0::3], pos[2::3]), (pos[-2], pos[-1])]
    # Inner sentences start after a whole whitespace run and end before one; only the outer two may need trimming.
    for i in (-1, 0):
        if spans:
            start, end = _strip_span(body, *spans[i])
            if start < end:
                spans[i] = (start, end)
            else:
                del spans[i]
    return spans


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class Chunker:
    """Packs whole sentences into windows of at most `max_tokens`, overlapping by about `overlap` tokens."""

    def __init__(self, tokenizer: Tokenizing, *, max_tokens: int | None = None, overlap: int = 40):
        self.tok = tokenizer
        self.max_tokens = max_tokens or tokenizer.max_tokens
        self.overlap = overlap

    def title_prefix(self, title: str) -> tuple[str, int]:
        """The title as embedded (cut to TITLE_MAX_TOKENS) and its token count, separator included."""
        title = title.strip()
        if not title:
            return "", 0
        offsets = self.tok.token_offsets(title)
        if len(offsets) > TITLE_MAX_TOKENS:
            title = title[: offsets[TITLE_MAX_TOKENS - 1][1]]
        prefix = title + "\n\n"
        return prefix, self.tok.count_tokens([prefix])[0]

    def chunk(self, title: str, body: str) -> list[Chunk]:
        prefix, prefix_tokens = self.title_prefix(title)
        budget = self.max_tokens - SPECIAL_TOKENS - prefix_tokens
        offsets = self.tok.token_offsets(body)  # the body's one tokenizer pass: every count below comes from it
        starts = [s for s, _ in offsets]
        windows = self._pack(self._pieces(body, budget, offsets, starts), budget)
        windows = self._fit(body, windows, budget, offsets, starts)
        return [Chunk(seq, s, e, body[s:e], prefix + body[s:e]) for seq, (s, e) in enumerate(windows)]

    def _pieces(self, body: str, budget: int, offsets, starts) -> list[tuple[int, int, int]]:
        """Sentences as (start, end, tokens); a sentence longer than the budget is cut at token boundaries.

        A sentence's tokens are the body's tokens that start inside it: the model's pre-tokenizer splits at
        whitespace and punctuation first, so a sentence tokenises alone as it does within the body."""
        pieces = []
        for s, e in sentence_spans(body):
            i, j = bisect_left(starts, s), bisect_left(starts, e)
            if j - i <= budget:
                pieces.append((s, e, j - i))
                continue
            # A cut mid-word can re-tokenise one token longer, hence the small margin (and `_fit`).
            step = budget - 4
            for k in range(i, j, step):
                part = offsets[k : min(k + step, j)]
                pieces.append((part[0][0], part[-1][1], len(part)))
        return pieces

    def _fit(self, body: str, windows: list[tuple[int, int]], budget: int, offsets, starts) -> list[tuple[int, int]]:
        """Guarantee the budget. Counts from the body's tokens are exact for windows that start and end between
        words; a window cut inside a word (a very long sentence) is counted again on its own."""
        fitted = []
        for s, e in windows:
            n = bisect_left(starts, e) - bisect_left(starts, s)
            if _inside_word(body, s, e) or not self.additive:
                n = self.tok.count_tokens([body[s:e]])[0]
            if n > budget:
                e = s + self.tok.token_offsets(body[s:e])[budget - 1][1]
            fitted.append((s, e))
        return fitted

    @property
    def additive(self) -> bool:
        """Whether token counts add up over whitespace-separated pieces (true of BERT-style tokenizers)."""
        return getattr(self.tok, "additive", False)

    def _pack(self, pieces: list[tuple[int, int, int]], budget: int) -> list[tuple[int, int]]:
        # Token counts of adjacent pieces add up: BERT-style tokenizers split on whitespace first.
        windows: list[tuple[int, int]] = []
        i = 0
        while i < len(pieces):
            j, used = i, 0
            while j < len(pieces) and used + pieces[j][2] <= budget:
                used += pieces[j][2]
                j += 1
            windows.append((pieces[i][0], pieces[j - 1][1]))
            if j >= len(pieces):
                break
            # Step back over trailing sentences worth at most `overlap` tokens, always moving forward.
            back, k = 0, j
            while k - 1 > i and back + pieces[k - 1][2] <= self.overlap:
                k -= 1
                back += pieces[k][2]
            i = k
        return windows


def _inside_word(body: str, start: int, end: int) -> bool:
    """Whether a window begins or ends in the middle of a word (so the body's tokens may not be its own)."""
    return (start > 0 and body[start - 1].isalnum() and body[start].isalnum()) or (
        end < len(body) and body[end - 1].isalnum() and body[end].isalnum()
    )


WHITESPACE_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}


def splits_on_whitespace(tokenizer_json: dict) -> bool:
    """Whether a tokenizer (its tokenizer.json) splits at whitespace before anything else, which makes token
    counts additive over whitespace-separated pieces (WordPiece models such as MiniLM and MPNet)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    kinds = (
        [p.get("type") for p in pre.get("pretokenizers", [])] if pre.get("type") == "Sequence" else [pre.get("type")]
    )
    return bool(kinds) and kinds[0] in WHITESPACE_PRE_TOKENIZERS
