"""A generated corpus shaped like SlimPajama, for benchmarking the data build on the workload
users pay for: hundreds of short documents per long one, every file holding every domain.

Per-domain token shares are the ones the paper's code uses (CC .534, C4 .266, GitHub .050,
ArXiv .043, Book .041, Wikipedia .034, StackExchange .032); document lengths are log-normal
around the paper's per-domain medians (C4 315, CC 1,066, SE 507, Wiki 409, GitHub 520,
ArXiv 14,565, Book 121,602 tokens), divided by ``--length-scale`` (default 8, so the paper's
4,096-token threshold becomes 512 and a small corpus still holds long documents). Words are
drawn from a fixed list whose words are single SmolLM2 tokens or close to it, so one word is
about one token. Documents of all domains are shuffled together into ``--files`` files
(SlimPajama's layout: `text` + `meta.redpajama_set_name`, `.jsonl.zst`).

    python benchmarks/slimpajama_shaped.py --out runs/sp-shaped --tokens 8M --files 4
    python benchmarks/data_build.py --corpus runs/sp-shaped
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SHARES = {"RedPajamaCommonCrawl": 0.534, "RedPajamaC4": 0.266, "RedPajamaGithub": 0.050,
          "RedPajamaArXiv": 0.043, "RedPajamaBook": 0.041, "RedPajamaWikipedia": 0.034,
          "RedPajamaStackExchange": 0.032}
MEDIANS = {"RedPajamaCommonCrawl": 1066, "RedPajamaC4": 315, "RedPajamaGithub": 520,
           "RedPajamaArXiv": 14565, "RedPajamaBook": 121602, "RedPajamaWikipedia": 409,
           "RedPajamaStackExchange": 507}
SIGMA = 1.0  # log-normal spread (natural log): the middle 68% of documents within e^±1
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there one all we their can has been if more when "
    "will would who so no time people year could them see other than then now only its also "
    "back after use two how our work first well way even new want because any these give day "
    "most us data model long context token paper train mixture length source domain sample "
    "book code function return value class import file number system"
).split()


def parse_count(s: str) -> int:
    mult = {"K": 1e3, "M": 1e6, "B": 1e9}.get(s[-1].upper(), 1)
    return int(float(s[:-1] if mult != 1 else s) * mult)


def lengths_for(domain: str, budget: int, scale: float, rng: np.random.Generator) -> list[int]:
    """Log-normal document lengths (in words) around the domain's scaled median until the
    domain's word budget is spent; the last document is cut to fit."""
    mu = math.log(max(MEDIANS[domain] / scale, 8))
    out, total = [], 0
    while total < budget:
        n = max(8, int(rng.lognormal(mu, SIGMA)))
        n = min(n, budget - total) if budget - total >= 8 else n
        out.append(n)
        total += n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", default="8M", help="total words (≈ tokens), e.g. 8M")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--length-scale", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import zstandard

    rng = np.random.default_rng(args.seed)
    total = parse_count(args.tokens)
    docs = []  # (domain, length)
    for d, share in SHARES.items():
        docs += [(d, n) for n in lengths_for(d, int(total * share), args.length_scale, rng)]
    order = rng.permutation(len(docs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    words = np.asarray(WORDS)
    sinks = [zstandard.ZstdCompressor(level=3).stream_writer(
        open(out / f"chunk_{k:04d}.jsonl.zst", "wb")) for k in range(args.files)]
    counts = {d: [0, 0] for d in SHARES}
    try:
        for j, i in enumerate(order):
            d, n = docs[i]
            text = " ".join(words[rng.integers(0, len(words), n)])
            rec = {"text": text, "meta": {"redpajama_set_name": d}}
            sinks[j % args.files].write((json.dumps(rec) + "\n").encode())
            counts[d][0] += 1
            counts[d][1] += n
    finally:
        for s in sinks:
            s.close()
    summary = {"files": args.files, "documents": len(docs), "words": sum(n for _, n in docs),
               "length_scale": args.length_scale, "threshold_equivalent": 4096 / args.length_scale,
               "domains": {d: {"documents": c[0], "words": c[1]} for d, c in counts.items()}}
    (out / ".shape.json").write_text(json.dumps(summary, indent=2) + "\n")  # hidden: not input
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
