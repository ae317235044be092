"""RULER's needle-in-a-haystack family (8 tasks): keys, needles, three haystack kinds.

Follows ``scripts/data/synthetic/niah.py`` (FACTS.md §5): k keys with v values each become
"One of the special magic {type} for {key} is: {value}." needles (plural type word always),
shuffled by a fresh ``Random(seed)``; q of the keys are asked for and the answers are all
their values. Haystacks:

- essay: the whitespace-collapsed essay cut to ``units`` words (tiled when longer), split
  into sentences; needle i goes before sentence ``int(n_sentences * depth_i / 100)`` for
  depths drawn without replacement from RULER's 40 depths; pieces joined with " ".
- noise: ``units`` copies of the grass/sky/sun sentence; needles inserted at distinct
  random line indices; lines joined with "\\n".
- needle: ``units`` distractor needles (fresh random key and value of the same kinds);
  inserted and joined like noise.

When q x v == 1 the template gets RULER's singular rewrite (Some->A, are all->is, are->is,
answers->answer, type word loses its "s").

Differences from RULER: sentences are split by a regex (after . ! or ?, optionally
followed by a closing quote or bracket, before whitespace) because nltk's punkt is not a
dependency, so abbreviations like "e.g." also end a sentence; keys within a sample are
distinct and distractor keys never equal a real key (RULER leaves both to its 6M-key
space); word keys come from ``words.py``'s lists.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from longctx.eval.ruler.constants import (
    DEPTHS,
    NIAH_ANSWER_PREFIX,
    NIAH_NEEDLE,
    NIAH_TEMPLATE,
    NOISE_SENTENCE,
)
from longctx.eval.ruler.fit import Draft, pad_text
from longctx.eval.ruler.words import draw_value

_SENTENCE_BREAK_RE = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")


@dataclass(frozen=True)
class NiahParams:
    haystack: str  # essay | noise | needle
    key_kind: str
    value_kind: str
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


def split_sentences(text: str) -> list[str]:
    """Sentences of a whitespace-collapsed text (joining them with " " gives it back)."""
    return [s for s in _SENTENCE_BREAK_RE.split(text) if s]


def singular_rewrite(template: str) -> str:
    """RULER's rewrite of the plural template for a single asked-for value."""
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        template = template.replace(old, new)
    return template


class NiahRenderer:
    """One NIAH sample with its keys, values, needles and depths fixed."""

    def __init__(
        self,
        params: NiahParams,
        rng_key: str,
        seed: int,
        essay_words: list[str],
        model_template: str,
    ) -> None:
        self.params = params
        self.rng_key = rng_key
        self.words = essay_words
        rng = random.Random(rng_key)
        num_keys = max(params.num_keys, params.num_queries)
        keys: list[str] = []
        values: list[list[str]] = []
        needles: list[str] = []
        while len(keys) < num_keys:
            key = draw_value(params.key_kind, rng)
            if key in keys:
                continue
            keys.append(key)
            values.append([draw_value(params.value_kind, rng) for _ in range(params.num_values)])
            needles += [
                NIAH_NEEDLE.format(type_needle_v=params.value_kind, key=key, value=value)
                for value in values[-1]
            ]
        random.Random(seed).shuffle(needles)  # RULER: a fresh Random(seed), not the stream
        self.keys = set(keys)
        self.needles = needles
        self.depths = rng.sample(DEPTHS, len(needles)) if params.haystack == "essay" else []
        asked = rng.sample(range(num_keys), params.num_queries)
        queries = [keys[i] for i in asked]
        self.answers = [a for i in asked for a in values[i]]
        query = (
            ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        )
        type_word = params.value_kind
        task, prefix = model_template.format(task_template=NIAH_TEMPLATE), NIAH_ANSWER_PREFIX
        if params.num_queries * params.num_values == 1:
            task, prefix = singular_rewrite(task), singular_rewrite(prefix)
            type_word = type_word[:-1]
        self.task_template = task.replace("{query}", query).replace("{type_needle_v}", type_word)
        self.answer_prefix = prefix.format(type_needle_v=type_word, query=query)
        self._distractors: list[str] = []
        self._distractor_rng = random.Random(rng_key + "|distractors")
        self.min_units = 1 if params.haystack == "essay" else len(needles)
        self.max_units: int | None = None
        # An essay pad may start 0..3 words after the cut (the words in between are skipped).
        self.pad_variants = 4 if params.haystack == "essay" else 1

    def render(self, units: int, pad_chars: int, variant: int = 0) -> Draft:
        if self.params.haystack == "essay":
            context = self._essay_context(units, pad_chars, variant)
        else:
            context = self._line_context(units, pad_chars)
        prompt = self.task_template.replace("{context}", context, 1) + self.answer_prefix
        return Draft(prompt, list(self.answers), self.answer_prefix)

    # ------------------------------------------------------------------------ haystacks
    def _essay_context(self, units: int, pad_chars: int, variant: int) -> str:
        text = " ".join(self._word(i) for i in range(units))
        if pad_chars:
            text += pad_text(self._word, units + variant, pad_chars, " ")
        sents = split_sentences(text.strip())
        cuts = [0, *sorted(int(len(sents) * d / 100) for d in self.depths), len(sents)]
        pieces: list[str] = []
        for i in range(1, len(cuts)):
            pieces.append(" ".join(sents[cuts[i - 1] : cuts[i]]))
            if i - 1 < len(self.needles):
                pieces.append(self.needles[i - 1])
        return " ".join(pieces)

    def _line_context(self, units: int, pad_chars: int) -> str:
        source = self._noise if self.params.haystack == "noise" else self._distractor
        lines = [source(i) for i in range(units)]
        rng = random.Random(f"{self.rng_key}|insert|{units}")
        for at, needle in zip(
            sorted(rng.sample(range(units), len(self.needles)), reverse=True),
            self.needles,
            strict=True,
        ):
            lines.insert(at, needle)
        text = "\n".join(lines)
        if pad_chars:
            text += pad_text(source, units, pad_chars, "\n")
        return text

    @staticmethod
    def _noise(_i: int) -> str:
        return NOISE_SENTENCE

    def _word(self, i: int) -> str:
        return self.words[i % len(self.words)]

    def _distractor(self, i: int) -> str:
        while len(self._distractors) <= i:
            key = draw_value(self.params.key_kind, self._distractor_rng)
            if key in self.keys:
                continue
            value = draw_value(self.params.value_kind, self._distractor_rng)
            self._distractors.append(
                NIAH_NEEDLE.format(type_needle_v=self.params.value_kind, key=key, value=value)
            )
        return self._distractors[i]
