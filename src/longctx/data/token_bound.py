r"""A sound upper bound on a document's token count, found without tokenizing the document.

Exact selection must know whether a document its draw did not keep is long: only then is it
eligible. On a corpus of short documents, tokenizing such documents just to learn that they
are short is most of what a per-source build tokenizes. For a byte-level BPE tokenizer
whose pre-tokenizer is GPT-2's regex (``ByteLevel`` with ``use_regex``, no normalizer:
SmolLM2, GPT-2, RoBERTa), a document has at most this many tokens: its bytes, minus, for each
*word*, the word's bytes less the word's exact token count. A word is a run of ASCII letters
that no letter follows, with the space before it if there is one; without a space, the
character before the run is none (the text's start) or an ASCII character other than a
letter or an apostrophe. A bound below the threshold proves the document short. A short
document that its draw did not keep is never eligible, so it needs no tokens at all.

Why the bound holds. GPT-2's pattern is
``'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+``,
and the pieces are its matches, left to right.
- A word with its space is one piece. A piece holds a space only as its first character or
  inside a run of whitespace. Before a space that a letter follows, a run of whitespace is
  matched by ``\s+(?!\S)``, which gives that last space back. So the piece before the
  space ends there, and at the space `` ?\p{L}+`` is the first alternative that matches.
  It takes the letters up to the first non-letter: the word.
- A word without a space is one piece too. The piece before it ends at the run: an ASCII
  character that is no letter, space or apostrophe is matched by a whitespace, digit or
  punctuation alternative, and none of them takes a letter after it (an apostrophe could
  start ``'s`` and take one). Then ``\p{L}+`` takes the run.
- BPE encodes piece by piece, so a word has the same tokens alone as in the document.
- Every other piece encodes to at most its bytes: byte-level BPE starts from one symbol per
  byte, and merges only lower the count.

Added tokens are matched in the raw text before this split, so a document that holds the
text of any added token gets no bound; it is tokenized. Word counts come from the tokenizer
itself: each word's piece goes through the tokenizer's BPE model alone, once per process,
the first time a document holds it. Nothing is assumed about the counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat
from typing import Any

# A word, in UTF-8 bytes (the module docstring says why each is one piece): a space and
# letters, or letters at the start or after an ASCII character that is no letter, space or
# apostrophe; no letter follows, nor a byte of a non-ASCII character (some are letters).
WORD = re.compile(rb"(?:(?<=[^A-Za-z' \x80-\xff])|^| )[A-Za-z]+(?![A-Za-z\x80-\xff])")
BYTE_LEVEL_SPACE = "\u0120"  # 'Ġ': how byte-level BPE vocabularies write a leading space
# Documents over this many bytes per threshold token are not bounded: at ~4 bytes per
# token of English the bound cannot prove them short, and computing it would be wasted.
MAX_BYTES_PER_TOKEN = 6
VERSION = 1  # of the rule above: a build's work files made under another are not reused


def supports(backend: Any) -> bool:
    """Whether the bound's argument holds for this Rust tokenizer: no normalizer, GPT-2's
    regex pre-tokenizer without an added prefix space, a BPE model without dropout."""
    pre, model = backend.pre_tokenizer, backend.model
    return (backend.normalizer is None and type(pre).__name__ == "ByteLevel"
            and bool(pre.use_regex) and not pre.add_prefix_space
            and type(model).__name__ == "BPE" and not model.dropout)


class TokenBound:
    """Upper bounds on the tokens of UTF-8 texts (without BOS/EOS) for one tokenizer."""

    def __init__(self, backend: Any) -> None:
        self._tokenize = backend.model.tokenize  # BPE of one piece, as the pipeline runs it
        vocab = backend.get_vocab(with_added_tokens=False)
        # words that are one vocabulary entry, with that entry (the piece in byte-level form:
        # ASCII letters as they are, the space as 'Ġ'): the only words looked up, a bounded
        # table; a rarer word counts at its bytes
        plain = (t.removeprefix(BYTE_LEVEL_SPACE) for t in vocab)
        self._words = {(b" " if t.startswith(BYTE_LEVEL_SPACE) else b"") + w.encode(): t
                       for t, w in zip(vocab, plain, strict=True) if w.isascii() and w.isalpha()}
        added = [t.content.encode("utf-8", "surrogatepass")
                 for t in backend.get_added_tokens_decoder().values() if t.content]
        self._added = tuple(added)
        self._added_first = tuple(frozenset(a[:1] for a in added))
        self._saving: dict[bytes, int] = {}  # word -> its bytes less its tokens

    def upper(self, raws: Sequence[bytes]) -> list[int | None]:
        """Per UTF-8 text, at least its token count without BOS/EOS; None where the text
        holds an added token's text."""
        found: list[list[bytes] | None] = []
        seen: set[bytes] = set()
        for raw in raws:
            if self._has_added(raw):
                found.append(None)
                continue
            ws = WORD.findall(raw)
            found.append(ws)
            seen.update(ws)
        seen &= self._words.keys()
        seen -= self._saving.keys()
        if seen:
            self._learn(sorted(seen))
        get = self._saving.get
        return [None if ws is None else len(raw) - sum(map(get, ws, repeat(0)))
                for raw, ws in zip(raws, found, strict=True)]

    def _has_added(self, raw: bytes) -> bool:
        return (any(c in raw for c in self._added_first)
                and any(a in raw for a in self._added))

    def _learn(self, words: list[bytes]) -> None:
        for w in words:
            self._saving[w] = len(w) - len(self._tokenize(self._words[w]))


_BOUNDS: dict[int, tuple[Any, TokenBound | None]] = {}


def token_bound(backend: Any) -> TokenBound | None:
    """The bound for a Rust tokenizer (one per tokenizer object and process; it learns word
    counts as it goes), or None when the argument above does not cover the tokenizer."""
    got = _BOUNDS.get(id(backend))
    if got is None or got[0] is not backend:
        got = _BOUNDS[id(backend)] = (backend, TokenBound(backend) if supports(backend) else None)
    return got[1]
