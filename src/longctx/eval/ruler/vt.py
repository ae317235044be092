"""RULER's variable tracking (vt): follow a chain of assignments hidden in noise.

Follows ``scripts/data/synthetic/variable_tracking.py`` at upstream HEAD with RULER's
``vt`` config (1 chain, 4 hops, noise haystack): five distinct 5-letter upper-case
variables, "VAR A = 12345" then "VAR B = VAR A " (RULER's trailing space kept) ...,
each line inserted at a random index among ``units`` noise sentences, lines joined with
"\\n". The answers are the chain's variables in order. A one-shot example comes first:
the same task with 3-letter variables, sized to at most 500 tokens (no model template,
answer prefix included), then " " + its answer + "\\n".

Difference from RULER: RULER builds the example once per run with root value 12345 and
renames its variables and value per sample; we build it per sample from the sample's RNG
(same shape, same size rule, fresh names and value), so noise positions also vary.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from longctx.eval.ruler.constants import NOISE_SENTENCE, VT_ANSWER_PREFIX, VT_TEMPLATE
from longctx.eval.ruler.fit import Draft, pad_text

ICL_MAX_TOKENS = 500


def make_chain(rng: random.Random, num_hops: int, name_len: int) -> tuple[list[str], list[str]]:
    """(variables, assignment lines) of one chain with ``num_hops + 1`` distinct names."""
    names: list[str] = []
    while len(names) < num_hops + 1:
        name = "".join(rng.choices(string.ascii_uppercase, k=name_len))
        if name not in names:
            names.append(name)
    lines = [f"VAR {names[0]} = {rng.randrange(10000, 99999)}"]
    lines += [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(num_hops)]
    return names, lines


def noise_context(rng: random.Random, units: int, chain: list[str]) -> str:
    """``units`` noise sentences with the chain's lines inserted in order at random places."""
    lines = [NOISE_SENTENCE] * units
    for j, at in enumerate(sorted(rng.sample(range(units), len(chain)))):
        lines.insert(at + j, chain[j])
    return "\n".join(lines)


class VtRenderer:
    """One vt sample: its chain and one-shot example fixed, the noise count varies."""

    def __init__(
        self,
        rng_key: str,
        model_template: str,
        count_plain: Callable[[str], int],
        num_hops: int = 4,
    ) -> None:
        self.rng_key = rng_key
        rng = random.Random(rng_key)
        self.answers, self.chain = make_chain(rng, num_hops, name_len=5)
        value = self.chain[0].split("=")[-1].strip()
        self.answer_prefix = VT_ANSWER_PREFIX.format(num_v=num_hops + 1, query=value)
        task = model_template.format(task_template=VT_TEMPLATE).replace("{query}", value)
        start = task.index(VT_TEMPLATE[:20])
        self.icl = self._example(rng, num_hops, count_plain)
        self.task_template = task[:start] + self.icl + "\n" + task[start:]
        self.min_units = len(self.chain)
        self.max_units: int | None = None
        self.pad_variants = 1

    def _example(self, rng: random.Random, num_hops: int, count_plain: Callable[[str], int]) -> str:
        hops = min(10, num_hops)
        names, chain = make_chain(rng, hops, name_len=3)
        value = chain[0].split("=")[-1].strip()
        template = VT_TEMPLATE.replace("{query}", value) + VT_ANSWER_PREFIX.format(
            num_v=hops + 1, query=value
        )

        def text(units: int) -> str:
            ctx = noise_context(random.Random(f"{self.rng_key}|icl|{units}"), units, chain)
            return template.replace("{context}", ctx, 1)

        units = len(chain)
        if count_plain(text(units)) > ICL_MAX_TOKENS:
            raise ValueError("the vt example does not fit in 500 tokens with its own chain")
        while count_plain(text(units + 1)) <= ICL_MAX_TOKENS:
            units += 1
        return text(units) + " " + " ".join(names) + "\n"

    def render(self, units: int, pad_chars: int, variant: int = 0) -> Draft:
        ctx = noise_context(random.Random(f"{self.rng_key}|insert|{units}"), units, self.chain)
        if pad_chars:
            ctx += pad_text(lambda _i: NOISE_SENTENCE, 0, pad_chars, "\n")
        prompt = self.task_template.replace("{context}", ctx, 1) + self.answer_prefix
        return Draft(prompt, list(self.answers), self.answer_prefix)
