"""Splitting document text into passages that fit the embedding model's token window.

Token counts come from the model's own tokenizer (tokenizer.json of the model directory,
through the `tokenizers` library), so a passage of `max_tokens` tokens plus [CLS] and [SEP]
is never truncated by the model. Passages end and start on word boundaries and consecutive
passages share about `overlap_tokens` tokens, so a sentence cut by a boundary is still whole
in one of them. Each passage is a verbatim slice of the text.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from ragmeshd.models import packaged_model_path
from ragmeshd.settings import Settings

TOKENIZER_FILE = "tokenizer.json"


class PassageSplitter:
    """Splits texts into passages of at most `max_tokens` tokens and `max_chars` characters."""

    def __init__(
        self, tokenizer: Tokenizer, *, max_tokens: int, overlap_tokens: int, max_chars: int
    ) -> None:
        if not 0 <= overlap_tokens < max_tokens // 2:
            raise ValueError("overlap_tokens must be less than half of max_tokens")
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.max_chars = max_chars

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` without special tokens."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, text: str) -> list[str]:
        """The passages of `text`, in order; a short text is one passage."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        offsets, words = encoding.offsets, encoding.word_ids
        count = len(offsets)
        if count <= self.max_tokens:
            pieces = [text.strip()]
        else:
            pieces = []
            start = 0
            while True:
                end = min(start + self.max_tokens, count)
                if end < count:
                    end = _word_start(words, end, floor=start + 1)
                pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
                if end == count:
                    break
                following = _word_start(words, end - self.overlap_tokens, floor=start + 1)
                start = max(following, start + 1)
        return [part for piece in pieces for part in _cap_chars(piece, self.max_chars) if part]


def _word_start(words: list[int | None], index: int, *, floor: int) -> int:
    """Move `index` back to the first token of its word, but not below `floor`; a word that
    reaches back past `floor` (one longer than the window) is cut at `index` instead."""

    def inside_word(position: int) -> bool:
        return words[position] is not None and words[position] == words[position - 1]

    moved = index
    while moved > floor and inside_word(moved):
        moved -= 1
    if moved == floor and inside_word(floor):
        return index
    return moved


def _cap_chars(text: str, max_chars: int) -> list[str]:
    """Cut `text` into pieces of at most `max_chars`, at whitespace where there is some."""
    pieces = []
    while len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        if cut <= 0:
            cut = max_chars
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    pieces.append(text.strip())
    return pieces


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The model's fast tokenizer, with any truncation and padding it was saved with removed."""
    path = model_dir / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the embedding model directory has no {TOKENIZER_FILE}: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def make_splitter(settings: Settings) -> PassageSplitter:
    """Passages sized by the tokenizer of the model the embeddings service runs."""
    s = settings.search
    model_dir = settings.embeddings.model_path
    tokenizer = load_tokenizer(Path(model_dir) if model_dir else packaged_model_path())
    return PassageSplitter(
        tokenizer,
        max_tokens=s.passage_max_tokens,
        overlap_tokens=s.passage_overlap_tokens,
        max_chars=s.passage_max_chars,
    )
