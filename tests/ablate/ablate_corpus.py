"""A small SlimPajama-layout corpus in the demo corpus's domain names (so the CPU preset's
arms apply to it as they are), with very different length profiles per domain."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = (
    "the of and to in is that for it as was with be by on not this are or from at which but "
    "have an they you were one all we their can has been if more when will would who so no "
    "time people year could them see other than then now only its also back after use two how "
    "our work first well way even new want because any these give day most data model long "
    "context token paper train mixture length source domain sample book code module function"
).split()

# domain: (documents, share of long documents, short words range, long words range)
PROFILES = {
    "StdlibPackages": (14, 1.0, (0, 0), (900, 1800)),
    "StdlibModules": (60, 0.4, (40, 180), (300, 700)),
    "ReferenceManual": (60, 0.2, (40, 180), (300, 600)),
    "Docstrings": (160, 0.0, (10, 120), (0, 0)),
}


def _text(rng: random.Random, domain: str, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    if domain in ("StdlibPackages", "StdlibModules"):
        return "\n".join(f"def f{i}():\n    return {' '.join(words[i:i + 8])!r}"
                         for i in range(0, n, 8))
    return " ".join(words).capitalize() + "."


def make_corpus(folder: Path, n_files: int = 4, seed: int = 0) -> Path:
    """Write ``n_files`` shuffled jsonl files holding every domain; returns ``folder``."""
    rng = random.Random(seed)
    docs = []
    for domain, (n, frac_long, short, long) in PROFILES.items():
        for k in range(n):
            lo, hi = long if rng.random() < frac_long else short
            docs.append({"text": _text(rng, domain, rng.randint(lo, hi)) + f" #{domain}{k}",
                         "meta": {"redpajama_set_name": domain}})
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        with open(folder / f"part-{i:02d}.jsonl", "w") as f:
            for d in docs[i::n_files]:
                f.write(json.dumps(d) + "\n")
    return folder
