"""RULER's common words extraction (cwe): name the 10 words repeated most in a list.

Follows ``scripts/data/synthetic/common_words_extraction.py`` (upstream HEAD, RULER's
``cwe`` config freq_cw=30, freq_ucw=3, num_cw=10): ``units`` distinct words, the first 10
repeated 30 times and the rest 3 times (6 and 1 below 4,096 tokens), the list shuffled by
a fresh ``Random(seed)`` and written "1. w 2. w ...". One solved example comes first (40
words at 10/3 repeats, 20 at 3/1 below 4,096), the full template then " " + its numbered
answer, then "\\n", then the task. Answers: the 10 common words.

Difference from RULER: the words come from the haystack's own vocabulary (``words.py``)
instead of wonderwords; the pad is more list entries, each a fresh word listed once, so it
never changes which words are most common.
"""

from __future__ import annotations

import random

from longctx.eval.ruler.constants import CWE_ANSWER_PREFIX, CWE_TEMPLATE
from longctx.eval.ruler.fit import Draft, RulerLengthError

SHORT_LENGTH = 4096  # below this RULER uses fewer repeats


def numbered(words: list[str], start: int = 1) -> str:
    return " ".join(f"{i}. {w}" for i, w in enumerate(words, start))


def word_list(words: list[str], num_common: int, common: int, uncommon: int, seed: int) -> list[str]:
    """The repeated, shuffled list: the first ``num_common`` words ``common`` times each."""
    out = words[:num_common] * common + words[num_common:] * uncommon
    random.Random(seed).shuffle(out)
    return out


class CweRenderer:
    """One cwe sample: its word order and example fixed, the number of words varies."""

    def __init__(
        self,
        rng_key: str,
        seed: int,
        vocabulary: tuple[str, ...],
        target_len: int,
        model_template: str,
        num_common: int = 10,
        freq_common: int = 30,
        freq_uncommon: int = 3,
    ) -> None:
        if len(vocabulary) <= num_common:
            raise RulerLengthError(f"cwe needs more than {num_common} haystack words")
        short = target_len < SHORT_LENGTH
        self.seed, self.num_common = seed, num_common
        self.repeats = (6, 1) if short else (freq_common, freq_uncommon)
        shuffled = list(vocabulary)
        random.Random(seed).shuffle(shuffled)
        rng = random.Random(rng_key)
        self.order = rng.sample(shuffled, len(shuffled))
        example_size, example_repeats = (20, (3, 1)) if short else (40, (10, 3))
        example = random.Random(rng_key + "|example").sample(shuffled, example_size)
        self.template = model_template.format(task_template=CWE_TEMPLATE) + CWE_ANSWER_PREFIX
        shot = word_list(example, num_common, *example_repeats, seed)
        self.example = (
            self.template.replace("{context}", numbered(shot), 1)
            + " "
            + numbered(example[:num_common])
        )
        self.answer_prefix = CWE_ANSWER_PREFIX
        self.min_units = num_common
        self.max_units: int | None = len(vocabulary)
        self.pad_variants = 1

    def render(self, units: int, pad_chars: int, variant: int = 0) -> Draft:
        chosen = self.order[:units]
        entries = word_list(chosen, self.num_common, *self.repeats, self.seed)
        context = numbered(entries)
        if pad_chars:
            context += self._pad(units, len(entries) + 1, pad_chars)
        prompt = self.example + "\n" + self.template.replace("{context}", context, 1)
        return Draft(prompt, chosen[: self.num_common], self.answer_prefix)

    def _pad(self, units: int, number: int, chars: int) -> str:
        parts, size = [], 0
        for word in self.order[units:]:
            parts.append(f" {number}. {word}")
            number += 1
            size += len(parts[-1])
            if size >= chars:
                return "".join(parts)[:chars]
        raise RulerLengthError(
            f"the haystack's vocabulary ({len(self.order)} words) is too small for cwe at this "
            f"length; pass a larger haystack (RULER's essay JSON has 13,875 such words)"
        )
