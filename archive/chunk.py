"""Token-aware chunking: passages that fit the model's window, with overlap and char offsets.

Each chunk is embedded as "title\\n\\npassage" so a passage deep in an article still carries what the story is
about; the stored `text` is the passage alone, `start`/`end` are its offsets into the body. Nothing is ever
truncated by the model: the title and passage budgets are counted with the model's own tokenizer.
"""

from __future__ import annotations

import hashlib
import re
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
        pieces = self._pieces(body, budget)
        windows = self._fit(body, self._pack(pieces, budget), budget)
        return [Chunk(seq, s, e, body[s:e], prefix + body[s:e]) for seq, (s, e) in enumerate(windows)]

    def _pieces(self, body: str, budget: int) -> list[tuple[int, int, int]]:
        """Sentences as (start, end, tokens); a sentence longer than the budget is cut at token boundaries."""
        spans = sentence_spans(body)
        counts = self.tok.count_tokens([body[s:e] for s, e in spans])
        pieces = []
        for (s, e), n in zip(spans, counts):
            if n <= budget:
                pieces.append((s, e, n))
                continue
            # A cut mid-word can re-tokenise one token longer, hence the small margin.
            offsets, step = self.tok.token_offsets(body[s:e]), budget - 4
            for i in range(0, len(offsets), step):
                part = offsets[i : i + step]
                pieces.append((s + part[0][0], s + part[-1][1], len(part)))
        return pieces

    def _fit(self, body: str, windows: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
        """Guarantee the budget: sums of sentence counts can be off by a token at odd joins."""
        counts = self.tok.count_tokens([body[s:e] for s, e in windows])
        fitted = []
        for (s, e), n in zip(windows, counts):
            if n > budget:
                e = s + self.tok.token_offsets(body[s:e])[budget - 1][1]
            fitted.append((s, e))
        return fitted

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
