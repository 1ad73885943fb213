import pytest

from archive.chunk import SPECIAL_TOKENS, Chunker, sentence_spans
from archive.embed import Encoder
from archive.sample import news_rows


@pytest.fixture(scope="module")
def encoder():
    return Encoder()  # the bundled model's tokenizer only: torch is never loaded here


@pytest.fixture(scope="module")
def real_rows(news_csv):
    return [r for r in news_rows(news_csv) if r["text"].strip()][:300]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ('He said "no." Then left.', ['He said "no."', "Then left."]),
        ("Para one\n\nPara two", ["Para one", "Para two"]),
        ("No end mark", ["No end mark"]),
        ("  ", []),
    ],
)
def test_sentence_spans(text, expected):
    assert [text[s:e] for s, e in sentence_spans(text)] == expected


def test_chunks_fit_the_window_and_cover_the_body(encoder, real_rows):
    chunker = Chunker(encoder)
    for row in real_rows:
        body, title = row["text"], row["title"]
        chunks = chunker.chunk(title, body)
        assert chunks, row["article_id"]
        for c in chunks:
            assert body[c.start : c.end] == c.text
            assert encoder.count_tokens([c.embed_text])[0] + SPECIAL_TOKENS <= encoder.max_tokens
        assert not _outside(body, chunks).strip(), row["article_id"]  # every non-space character is in a chunk


def _outside(body: str, chunks) -> str:
    """The body's text that no chunk covers (sentences are the body less whitespace, so this must be blank)."""
    pos, gaps = 0, []
    for c in sorted(chunks, key=lambda c: c.start):
        gaps.append(body[pos : c.start])
        pos = max(pos, c.end)
    return "".join(gaps) + body[pos:]


def test_consecutive_chunks_overlap(encoder, real_rows):
    long_row = max(real_rows, key=lambda r: len(r["text"]))
    chunks = Chunker(encoder, overlap=40).chunk(long_row["title"], long_row["text"])
    assert len(chunks) > 3
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))
    assert all(b.start > a.start for a, b in zip(chunks, chunks[1:]))


def test_title_is_embedded_with_every_passage(encoder):
    chunks = Chunker(encoder, max_tokens=40).chunk("Cyclone Debbie", "Wind. " * 80)
    assert len(chunks) > 1
    assert all(c.embed_text.startswith("Cyclone Debbie\n\n") for c in chunks)


def test_a_sentence_longer_than_the_window_is_split_not_truncated(encoder):
    body = " ".join(f"word{i}" for i in range(2000))
    chunks = Chunker(encoder).chunk("", body)
    assert len(chunks) > 1
    assert chunks[0].start == 0 and chunks[-1].end == len(body)
    for c in chunks:
        assert encoder.count_tokens([c.embed_text])[0] + SPECIAL_TOKENS <= encoder.max_tokens


def test_content_hash_follows_the_embedded_text(encoder):
    a = Chunker(encoder).chunk("Title", "Body text.")[0]
    b = Chunker(encoder).chunk("Other title", "Body text.")[0]
    assert a.text == b.text and a.content_hash != b.content_hash
