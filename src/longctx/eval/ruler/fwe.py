"""RULER's frequent words extraction (fwe): the three most frequent coded words.

Follows ``scripts/data/synthetic/freq_words_extraction.py`` (RULER's ``fwe`` config,
alpha 2.0): a vocabulary of ``(length - 50) // 50`` distinct random 6-letter lower-case
words, sorted then shuffled by a fresh ``Random(seed)``; rank 1 is replaced by "..."
(noise the prompt says to ignore). Word k appears ``int(units * k**-alpha / zeta(alpha))``
times, the whole list is shuffled by a fresh ``Random(seed)`` and joined with spaces.
Answers: the words of ranks 2-4.

Difference from RULER: the pad is more " ..." noise (the word RULER itself adds most), so
it never changes which coded words are most frequent; zeta is our own Euler-Maclaurin sum
instead of scipy's.
"""

from __future__ import annotations

import random
import string

from longctx.eval.ruler.constants import FWE_ANSWER_PREFIX, FWE_TEMPLATE
from longctx.eval.ruler.fit import Draft

NOISE_WORD = "..."
MIN_WORDS = 100  # below about 74 the ranks 2-4 stop being strictly ahead of rank 5


def zeta(alpha: float, terms: int = 1000) -> float:
    """Riemann zeta(alpha) for alpha > 1: a partial sum plus its Euler-Maclaurin tail."""
    if alpha <= 1:
        raise ValueError(f"zeta needs alpha > 1, got {alpha}")
    head = sum(k**-alpha for k in range(1, terms))
    n = float(terms)
    return head + n ** (1 - alpha) / (alpha - 1) + 0.5 * n**-alpha + alpha / 12 * n ** (-alpha - 1)


def word_counts(units: int, vocab_size: int, alpha: float) -> list[int]:
    z = zeta(alpha)
    return [int(units * k**-alpha / z) for k in range(1, vocab_size + 1)]


class FweRenderer:
    """One fwe sample: its coded vocabulary fixed, the total word budget varies."""

    def __init__(
        self,
        rng_key: str,
        seed: int,
        target_len: int,
        tokens_to_generate: int,
        model_template: str,
        alpha: float = 2.0,
        word_len: int = 6,
    ) -> None:
        vocab_size = max(5, (target_len - tokens_to_generate) // 50)
        rng = random.Random(rng_key)
        vocab: set[str] = set()
        while len(vocab) < vocab_size:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=word_len)))
        self.vocab = sorted(vocab)
        random.Random(seed).shuffle(self.vocab)
        self.vocab[0] = NOISE_WORD
        self.seed, self.alpha = seed, alpha
        self.template = model_template.format(task_template=FWE_TEMPLATE) + FWE_ANSWER_PREFIX
        self.answer_prefix = FWE_ANSWER_PREFIX
        self.min_units = MIN_WORDS
        self.max_units: int | None = None
        self.pad_variants = 1

    def render(self, units: int, pad_chars: int, variant: int = 0) -> Draft:
        words = [
            w for w, n in zip(self.vocab, word_counts(units, len(self.vocab), self.alpha), strict=True)
            for _ in range(n)
        ]
        random.Random(self.seed).shuffle(words)
        context = " ".join(words)
        if pad_chars:
            context += ((" " + NOISE_WORD) * (pad_chars // 4 + 1))[:pad_chars]
        prompt = self.template.replace("{context}", context, 1)
        return Draft(prompt, self.vocab[1:4], self.answer_prefix)
