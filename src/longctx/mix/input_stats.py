"""Per-domain input statistics of the files indexed, and token estimates from them.

Pass 1 tokenizes only a sample, and the rounds only the candidates selection can reach, so
a domain's counts are real where documents were tokenized and estimated elsewhere: from the
bytes of the rest and the domain's tokens per byte, measured on its uniform samples (pass
1's sample, and the tokenized candidates kept by their draw, which is independent of
length), BOS/EOS counted per document. A candidate not tokenized is estimated from its own
bytes; its estimate counts as long at or above the threshold, unless its token bound proved
it short (so is a document that is not a candidate). Once every document is tokenized
nothing is estimated.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from longctx.mix.strategies import GLOBAL_GROUP

FALLBACK_RATIO = 0.25  # tokens per byte of a domain without a sample when none has one
NOT_ASKED = -1  # a candidate's length before any round asked for it
PROVEN_SHORT = -2  # ... where its token bound proved it short, so it was not tokenized


def split_by_code(codes: np.ndarray, n: int) -> list[np.ndarray]:
    """Positions of each code 0..n-1 in ``codes``, each in their original order (one sort,
    not one scan per code: a corpus may have tens of thousands of domains)."""
    codes = np.asarray(codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1), side="left")
    return [order[bounds[c] : bounds[c + 1]] for c in range(n)]


class _Bytes:
    """Byte counts of documents not tokenized, kept in sorted chunks (one per file, merged
    when the rounds rebuild them): how many documents and bytes lie at or above a size."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted bytes, suffix sums)

    def add(self, nbytes: np.ndarray) -> None:
        if len(nbytes):
            nb = np.sort(np.asarray(nbytes, dtype=np.int64))
            self.chunks.append((nb, np.concatenate([np.cumsum(nb[::-1])[::-1], [0]])))

    def at_least(self, size: float) -> tuple[int, int]:
        """(documents, bytes) of at least ``size`` bytes."""
        docs = nbytes = 0
        for nb, suffix in self.chunks:
            k = int(np.searchsorted(nb, size, side="left"))
            docs += len(nb) - k
            nbytes += int(suffix[k])
        return docs, nbytes


class _Domain:
    """One domain's candidates: real sums of the tokenized ones, bytes of the others."""

    def __init__(self) -> None:
        self.untok = _Bytes()  # candidates not tokenized
        self.untok_notkept = _Bytes()  # ... of them, those not kept (eligible only if long)
        self.real = Counter()  # docs/bytes/tokens/long_tokens/eligible_tokens of tokenized ones
        self.uniform = Counter()  # docs/bytes/tokens of tokenized kept ones (uniform sample)


class InputStats:
    """Counters of the files indexed (pass 1 summaries) and what is known of their
    candidates, with the estimates they give."""

    def __init__(self, specials: int, threshold: int) -> None:
        self.specials = specials
        self.threshold = threshold
        self.domains: dict[str, Counter] = {}
        self.skipped: Counter = Counter()
        self.files = 0
        self._cand: dict[str, _Domain] = {}
        self._est: dict[str, dict[str, Any]] | None = None  # estimate(), until data changes

    def add(self, summary: dict[str, Any], domain: np.ndarray, nbytes: np.ndarray,
            kept: np.ndarray) -> None:
        """One file's index summary and its candidates (none tokenized yet; ``domain``
        codes index the summary's ``domains``)."""
        self.files += 1
        for d, st in summary["stats"].items():
            self.domains.setdefault(d, Counter()).update(st)
        for d, mine in zip(summary["domains"], split_by_code(domain, len(summary["domains"])),
                           strict=True):
            dom = self._cand.setdefault(d, _Domain())
            dom.untok.add(nbytes[mine])
            dom.untok_notkept.add(nbytes[mine[~kept[mine]]])
        self.skipped.update(summary["skipped"])
        self._est = None

    def set_candidates(self, names: list[str], domain: np.ndarray, nbytes: np.ndarray,
                       kept: np.ndarray, length: np.ndarray) -> None:
        """Every candidate of the files indexed with what the rounds learnt (``length``
        ``NOT_ASKED``, ``PROVEN_SHORT`` or real; ``domain`` codes index ``names``). A
        candidate proved short is estimated from its bytes, as a short document."""
        for d, mine in zip(names, split_by_code(domain, len(names)), strict=True):
            n, b, k, t = length[mine], nbytes[mine], kept[mine], length[mine] >= 0
            long = t & (n >= self.threshold)
            dom = self._cand[d] = _Domain()
            asked = n == NOT_ASKED
            dom.untok.add(b[asked])
            dom.untok_notkept.add(b[asked & ~k])
            dom.real.update(docs=int(t.sum()), bytes=int(b[t].sum()), tokens=int(n[t].sum()),
                            long_tokens=int(n[long].sum()),
                            eligible_tokens=int(n[t & (k | long)].sum()))
            u = t & k
            dom.uniform.update(docs=int(u.sum()), bytes=int(b[u].sum()), tokens=int(n[u].sum()))
        self._est = None

    def ratios(self) -> dict[str, float]:
        """Tokens per byte (BOS/EOS excluded) of each domain's uniform samples; a domain
        without any gets the mean of the others'."""
        out: dict[str, float | None] = {}
        for d, st in self.domains.items():
            uni = self._cand[d].uniform if d in self._cand else Counter()
            nbytes = st["sample_bytes"] + uni["bytes"]
            tokens = (st["sample_tokens"] - self.specials * st["sample_docs"]
                      + uni["tokens"] - self.specials * uni["docs"])
            out[d] = max(0.0, tokens / nbytes) if nbytes > 0 else None
        known = [r for r in out.values() if r is not None]
        fallback = float(np.mean(known)) if known else FALLBACK_RATIO
        return {d: (r if r is not None else fallback) for d, r in out.items()}

    def ratios_of(self, names: list[str]) -> np.ndarray:
        """:meth:`ratios` as an array in the order of ``names`` (domains seen)."""
        ratios = self.ratios()
        return np.asarray([ratios[d] for d in names] or [0.0])

    def candidate_tokens(self, nbytes: np.ndarray, ratio: float | np.ndarray) -> np.ndarray:
        """Estimated tokens of documents of ``nbytes`` bytes (BOS/EOS included)."""
        return np.asarray(nbytes, dtype=np.float64) * ratio + self.specials

    def _long_bytes(self, ratio: float) -> float:
        """The fewest bytes whose estimate reaches the threshold."""
        return (self.threshold - self.specials) / ratio if ratio > 0 else float("inf")

    def estimate(self) -> dict[str, dict[str, Any]]:
        """Per domain with training documents: docs, bytes, tokens, long and short tokens,
        eligible tokens (real where tokenized, estimated elsewhere)."""
        if self._est is not None:
            return self._est
        ratios = self.ratios()
        out = {}
        for d, st in sorted(self.domains.items()):
            if not st["docs"]:  # only held-out documents: no part of the training input
                continue
            r, s = ratios[d], self.specials
            dom = self._cand.get(d, _Domain())
            real = dom.real
            rest_docs, rest_bytes = st["docs"] - real["docs"], st["bytes"] - real["bytes"]
            tokens = real["tokens"] + rest_bytes * r + rest_docs * s
            n_long, b_long = dom.untok.at_least(self._long_bytes(r))
            long_t = real["long_tokens"] + b_long * r + n_long * s
            untok_docs, untok_bytes = dom.untok.at_least(0)
            nk_docs, nk_bytes = dom.untok_notkept.at_least(0)
            nk_long_docs, nk_long_bytes = dom.untok_notkept.at_least(self._long_bytes(r))
            kept_docs, kept_bytes = untok_docs - nk_docs, untok_bytes - nk_bytes
            eligible = (real["eligible_tokens"] + (kept_bytes + nk_long_bytes) * r
                        + (kept_docs + nk_long_docs) * s)
            tokens, long_t = int(round(tokens)), int(round(long_t))
            out[d] = {
                "docs": int(st["docs"]),
                "bytes": int(st["bytes"]),
                "tokens": tokens,
                "long_tokens": long_t,
                "short_tokens": float(tokens - long_t),
                "eligible_tokens": int(round(eligible)),
                "estimated": bool(rest_docs),
                "tokenized_docs": int(real["docs"]),
                "tokens_per_byte": r,
                "sample_docs": int(st["sample_docs"]),
            }
        self._est = out
        return out

    def token_weights(self) -> dict[str, float]:
        return {d: float(v["tokens"]) for d, v in self.estimate().items()}

    def eligible(self, key: str) -> int:
        """Eligible tokens of a budget group (a domain, or all of them), estimated where
        candidates are not tokenized."""
        est = self.estimate()
        if key == GLOBAL_GROUP:
            return sum(v["eligible_tokens"] for v in est.values())
        return est[key]["eligible_tokens"] if key in est else 0
