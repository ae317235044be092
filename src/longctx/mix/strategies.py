"""The paper's mixture strategies as pure arithmetic (no I/O).

A strategy decides two things: which documents are eligible (the paper's keep rule: a
document shorter than ``long_threshold`` tokens is kept with probability ``short_keep``)
and how the output token total is split (exact per-domain budgets, or one global budget).

- ``cut``:        whole corpus, docs chunked at the threshold, chunks shuffled, original mix
- ``original``:   whole docs, original mix (the paper's "cut at 128K")
- ``per_source``: keep rule inside each domain, per-domain budgets = share x total (the paper)
- ``global``:     keep rule ignoring domains, one budget for the total (the mix shifts)
- ``upsample``:   like per_source, with chosen domains' weights multiplied (``--upsample``)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from longctx.errors import LongctxError

STRATEGIES = ("cut", "original", "per_source", "global", "upsample")
GLOBAL_GROUP = "*"


class MixError(LongctxError):
    pass


@dataclass(frozen=True)
class Strategy:
    """What a strategy does, independent of any corpus."""

    name: str
    length_rule: bool  # short docs kept with probability short_keep
    per_domain: bool  # exact per-domain budgets (False: one global budget)
    chunk: bool  # docs cut into pieces of long_threshold tokens (``cut``)

    def keep_probability(self, short_keep: float) -> float:
        """Probability that a short document is eligible (1 when no length rule)."""
        return short_keep if self.length_rule else 1.0


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise MixError(f"--strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
    return Strategy(
        name=name,
        length_rule=name in ("per_source", "global", "upsample"),
        per_domain=name != "global",
        chunk=name == "cut",
    )


def normalise(weights: Mapping[str, float], *, what: str = "weights") -> dict[str, float]:
    total = float(sum(weights.values()))
    if not weights or total <= 0 or not math.isfinite(total):
        raise MixError(f"{what}: need at least one positive weight, got {dict(weights)}")
    return {k: float(v) / total for k, v in weights.items()}


def target_shares(
    input_tokens: Mapping[str, float],
    mix: Mapping[str, float] | None = None,
    upsample: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per-domain target token shares.

    Default: the measured input token shares. ``mix`` replaces them (domains of the input
    that ``mix`` leaves out get 0). ``upsample`` multiplies chosen domains' weights, then
    everything is renormalised (so ``Book=3`` on a 0.04 share gives 0.12/1.08).
    """
    weights = dict(mix) if mix else dict(input_tokens)
    for domain, factor in (upsample or {}).items():
        if domain not in weights:
            known = ", ".join(sorted(weights))
            raise MixError(f"--upsample {domain}={factor}: unknown domain (known: {known})")
        weights[domain] = weights[domain] * float(factor)
    shares = normalise(weights, what="--mix" if mix else "input token shares")
    for d in input_tokens:
        shares.setdefault(d, 0.0)
    return dict(sorted(shares.items()))


def exact_budgets(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Integer budgets proportional to ``shares`` that sum exactly to ``total``.

    Largest-remainder rounding; ties go to the larger share, then the domain name, so the
    result never depends on dict order.
    """
    if total < 0:
        raise MixError(f"token total must be >= 0, got {total}")
    shares = normalise(shares, what="shares")
    raw = {d: total * s for d, s in shares.items()}
    out = {d: int(math.floor(v)) for d, v in raw.items()}
    left = total - sum(out.values())
    order = sorted(raw, key=lambda d: (-(raw[d] - out[d]), -shares[d], d))
    for d in order[:left]:
        out[d] += 1
    assert sum(out.values()) == total
    return dict(sorted(out.items()))


def is_long(length: int, long_threshold: int) -> bool:
    """The paper's rule: a document of ``length`` tokens is long when length >= threshold.

    The one definition of "long" (statistics, scan, selection, manifests); ``length`` may be
    a numpy array (elementwise).
    """
    return length >= long_threshold


def predicted_long_fraction(long_tokens: float, short_tokens: float, keep: float) -> float:
    """Share of tokens from long docs after keeping short docs with probability ``keep``.

    All L long tokens survive, p*S of the S short tokens do, so the share is L / (L + p*S).
    """
    denom = long_tokens + keep * short_tokens
    return float(long_tokens / denom) if denom > 0 else 0.0


def eligible_tokens(long_tokens: float, short_tokens: float, keep: float) -> float:
    """Expected tokens that pass the keep rule: L + p*S."""
    return long_tokens + keep * short_tokens


def plan_budgets(
    strategy: Strategy,
    total: int,
    input_tokens: Mapping[str, float],
    mix: Mapping[str, float] | None = None,
    upsample: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, int]]:
    """(target shares, budgets). ``global`` has one budget under the key ``"*"``."""
    if not strategy.per_domain:
        if mix or upsample:
            raise MixError("--strategy global ignores domains: --mix/--upsample do not apply")
        return {}, {GLOBAL_GROUP: total}
    if strategy.name == "upsample" and not upsample:
        raise MixError("--strategy upsample needs --upsample DOMAIN=FACTOR[,...]")
    shares = target_shares(input_tokens, mix, upsample)
    return shares, exact_budgets(total, shares)


def expected_global_shares(
    long_tokens: Mapping[str, float], short_tokens: Mapping[str, float], keep: float
) -> dict[str, float]:
    """Per-domain output shares the global rule is expected to give: (L_d + pS_d) / sum."""
    elig = {d: eligible_tokens(long_tokens.get(d, 0), short_tokens.get(d, 0), keep)
            for d in sorted(set(long_tokens) | set(short_tokens))}
    total = sum(elig.values())
    return {d: (v / total if total else 0.0) for d, v in sorted(elig.items())}
