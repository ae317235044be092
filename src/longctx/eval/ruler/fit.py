"""Exact prompt lengths: choose how much haystack a prompt gets so that it is exactly
``budget`` tokens in the model's tokenizer.

RULER keeps the largest haystack (essay words, noise sentences, list words, documents)
whose prompt plus ``tokens_to_generate`` fits the length (grown in 500-word / 25-sentence
/ 10-document steps in April 2024, bisected at HEAD), so its prompts fall short by up to
one step or unit. We search the same units, then append a *pad*: the first ``c``
characters of more haystack of the same kind (the next essay words, noise sentences,
distractor lines, list entries, documents), choosing ``c`` so the whole prompt
re-tokenizes to exactly ``budget`` ids. One more character can add two tokens (" 1" is
two tokens in SmolLM2 and LLaMA), so when no ``c`` hits the budget we try another pad
text (an essay pad that starts a few words later), then one unit fewer. Counting always
tokenizes the whole prompt text, so the text and the ids the model gets agree: no seams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from longctx.errors import LongctxError


class RulerLengthError(LongctxError):
    """The requested length cannot hold this task's prompt (or cannot be hit exactly)."""


@dataclass(frozen=True)
class Draft:
    """One rendered prompt: the full text the model reads and what counts as the answer."""

    prompt: str
    answers: list[str]
    answer_prefix: str


class Renderer(Protocol):
    """A task instance with its random choices fixed; only the haystack size varies."""

    min_units: int
    max_units: int | None
    pad_variants: int  # how many different pad texts render() can append (variant 0..n-1)

    def render(self, units: int, pad_chars: int, variant: int = 0) -> Draft: ...


@dataclass(frozen=True)
class Fitted:
    draft: Draft
    ids: list[int]
    units: int
    pad_chars: int
    pad_variant: int


class TokenCounter:
    """Model-facing ids of a prompt: the leading specials the tokenizer's own post-processor
    adds (as the needle evaluation feeds them; none for SmolLM2) then the prompt's ids."""

    def __init__(self, tokenizer: Any) -> None:
        from longctx.eval.needle import leading_special_ids

        self.backend = tokenizer.backend
        self.specials = leading_special_ids(self.backend)
        self._encode = getattr(self.backend, "encode_batch_fast", None) or self.backend.encode_batch

    def ids(self, text: str) -> list[int]:
        return self.specials + list(self._encode([text], add_special_tokens=False)[0].ids)


_PAD_RETRIES = 4  # haystack sizes below the largest fitting one to try a pad on


def pad_text(unit: Callable[[int], str], start: int, chars: int, sep: str) -> str:
    """The first ``chars`` characters of sep + unit(start) + sep + unit(start + 1) + ...:
    a pad made of more haystack units of the renderer's own kind."""
    parts, size, i = [], 0, start
    while size < chars:
        parts.append(sep + unit(i))
        size += len(parts[-1])
        i += 1
    return "".join(parts)[:chars]


def fit_exact(renderer: Renderer, budget: int, counter: TokenCounter) -> Fitted:
    """The largest haystack whose prompt fits ``budget``, padded to exactly ``budget``."""
    counts: dict[tuple[int, int, int], int] = {}

    def n_tokens(units: int, pad: int = 0, variant: int = 0) -> int:
        key = (units, pad, variant if pad else 0)
        if key not in counts:
            counts[key] = len(counter.ids(renderer.render(units, pad, variant).prompt))
        return counts[key]

    def fitted(units: int, pad: int, variant: int) -> Fitted:
        draft = renderer.render(units, pad, variant)
        return Fitted(draft, counter.ids(draft.prompt), units, pad, variant)

    lo = renderer.min_units
    if n_tokens(lo) > budget:
        raise RulerLengthError(
            f"length too short: the smallest prompt of this task is {n_tokens(lo)} tokens, "
            f"the budget is {budget}"
        )
    best = _largest_fitting(n_tokens, budget, lo, renderer.max_units)
    for units in range(best, max(lo, best - _PAD_RETRIES) - 1, -1):
        if n_tokens(units) == budget:
            return fitted(units, 0, 0)
        for variant in range(renderer.pad_variants):
            pad = _exact_pad(lambda c, u=units, v=variant: n_tokens(u, c, v), budget)
            if pad is not None:
                return fitted(units, pad, variant)
    raise RulerLengthError(f"no haystack size and pad give exactly {budget} tokens")


def _largest_fitting(
    count: Callable[[int], int], budget: int, lo: int, hi: int | None = None
) -> int:
    """Largest u in [lo, hi] with count(u) <= budget, given count(lo) <= budget.

    Token counts grow almost linearly with the haystack, so we extrapolate to a point past
    the budget, then interpolate inside the bracket (a few counts instead of ~20 bisection
    steps at 128K); after a handful of interpolations we fall back to bisection, so a
    non-linear count still terminates. The answer u has count(u) <= budget < count(u + 1)
    (or u == hi)."""
    good, bad = lo, None
    step = max(1, lo)
    while bad is None:
        probe = good + step
        if hi is not None and probe > hi:
            if count(hi) <= budget:
                return hi
            bad = hi
        elif count(probe) <= budget:
            per_unit = max(1e-9, (count(probe) - count(good)) / (probe - good))
            good = probe
            wanted = int((budget - count(good)) / per_unit * 1.02) + 1
            step = max(1, min(wanted, 64 * (good - lo)))  # a flat start cannot jump to hi
        else:
            bad = probe
    for attempt in range(64):
        if bad - good <= 1:
            break
        if attempt < 6:
            frac = (budget - count(good)) / max(1, count(bad) - count(good))
            mid = min(max(good + int(frac * (bad - good)), good + 1), bad - 1)
        else:
            mid = (good + bad) // 2
        if count(mid) <= budget:
            good = mid
        else:
            bad = mid
    return good


def _exact_pad(n_tokens: Callable[[int], int], budget: int) -> int | None:
    """Pad length c with n_tokens(c) == budget, or None: the largest fitting c, then its
    neighbours (adding a character can merge or split tokens)."""
    if n_tokens(0) > budget:
        return None
    good = _largest_fitting(n_tokens, budget, 0, 1 << 22)
    for c in (good, *range(good - 1, max(-1, good - 9), -1), *range(good + 1, good + 9)):
        if c >= 0 and n_tokens(c) == budget:
            return c
    return None
