"""Per-domain input statistics of the files scanned so far, and token estimates from them.

Not every document is tokenized (provably short ones rejected by their keep draw are not;
neither are documents of a domain whose pool is frozen), so input token counts are exact
where a document was tokenized and estimated from tokens per byte elsewhere.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from longctx.mix.strategies import GLOBAL_GROUP


class InputStats:
    """Per-domain counters summed over the files scanned so far, and estimates from them."""

    def __init__(self, specials: int) -> None:
        self.specials = specials
        self.domains: dict[str, Counter] = {}
        self.skipped: Counter = Counter()
        self.files = 0
        # Domains whose budget is covered: files read while a domain is frozen add only its
        # docs/bytes (tokens estimated) and none of its documents to the pool, whether or not
        # a worker happened to tokenize them (that depends on timing, the output must not).
        self.frozen: set[str] = set()

    def add(self, summary: dict[str, Any]) -> None:
        self.files += 1
        for d, st in summary["stats"].items():
            c = self.domains.setdefault(d, Counter())
            if d in self.frozen:
                c.update({"docs": st["docs"], "bytes": st["bytes"],
                          "covered_docs": st["docs"], "covered_bytes": st["bytes"]})
            else:
                c.update(st)
        self.skipped.update(summary["skipped"])

    def _ratio(self, st: Counter) -> float | None:
        """Tokens per byte (without BOS/EOS) of a domain's short documents."""
        for tok_key, doc_key, byte_key in (
            ("drawn_tokens", "drawn_docs", "drawn_bytes"),
            ("tok_tokens", "tok_docs", None),
        ):
            docs = st[doc_key]
            if not docs:
                continue
            nbytes = (st[byte_key] if byte_key
                      else st["bytes"] - st["untok_bytes"] - st["covered_bytes"])
            if nbytes > 0:
                return max(0.0, (st[tok_key] - self.specials * docs) / nbytes)
        return None

    def estimate(self) -> dict[str, dict[str, Any]]:
        """Per domain: docs, tokens, long tokens, short tokens (estimated where not every
        document was tokenized: drawn-out short docs by the domain's tokens per byte, docs of
        an already covered domain by scaling what was measured before it was covered)."""
        ratios = {d: self._ratio(st) for d, st in self.domains.items()}
        known = [r for r in ratios.values() if r is not None]
        fallback = float(np.mean(known)) if known else 0.25
        out = {}
        for d, st in sorted(self.domains.items()):
            r = ratios[d] if ratios[d] is not None else fallback
            untok = st["untok_bytes"] * r + st["untok_docs"] * self.specials
            tokens = st["tok_tokens"] + untok
            long_t = float(st["long_tokens"])
            seen_bytes = st["bytes"] - st["covered_bytes"]
            if st["covered_bytes"] and seen_bytes > 0:
                scale = st["covered_bytes"] / seen_bytes
                tokens, long_t = tokens * (1 + scale), long_t * (1 + scale)
            out[d] = {
                "docs": int(st["docs"]),
                "bytes": int(st["bytes"]),
                "tokens": int(round(tokens)),
                "long_tokens": int(round(long_t)),
                "short_tokens": float(tokens - long_t),
                "tokenized_docs": int(st["tok_docs"]),
                "estimated": bool(st["untok_docs"] or st["covered_docs"]),
                "eligible_docs": int(st["kept_docs"]),
                "eligible_tokens": int(st["kept_tokens"]),
                "covered_docs": int(st["covered_docs"]),
            }
        return out

    def token_weights(self) -> dict[str, float]:
        return {d: float(v["tokens"]) for d, v in self.estimate().items()}

    def eligible(self, key: str) -> int:
        if key == GLOBAL_GROUP:
            return sum(int(st["kept_tokens"]) for st in self.domains.values())
        st = self.domains.get(key)
        return int(st["kept_tokens"]) if st else 0
