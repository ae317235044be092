"""Answer scorers for the needle and BookQA evaluations (pure functions, no model code).

Three needle scorers are computed for every cell, because the literature uses all three
and they disagree on the same response (see FACTS.md §4-§5):

- ``ruler``: RULER's ``string_match_all`` — post-process the prediction (strip, control
  characters -> newline, strip), then the fraction of reference strings contained in it,
  case-insensitively (plain substring test, so ``12345678`` contains ``1234567``).
- ``paper_recall``: the paper's ``visualize.py`` word recall — the set of lower-cased,
  whitespace-split response words intersected with the *list* of expected words, divided
  by the list length. Punctuation stays attached ("day." != "day"), and a repeated expected
  word ("a" twice in the paper's needle) can only be matched once, so the paper's own
  needle tops out at 11/12.
- ``rouge1``: ROUGE-1 F-measure (clipped unigram overlap). Tokenisation follows
  rouge_score's default (lower-case, every run of characters outside ``[a-z0-9]`` is a
  separator) but **without the Porter stemmer** the paper enabled, because rouge_score is
  not a dependency here: "sitting" and "sit" do not match. Scores can therefore be lower
  than rouge_score(use_stemmer=True) when the response inflects the needle's words.

BookQA uses InfiniteBench's ``qa_f1_score``: SQuAD-style normalisation (lower-case, drop
punctuation, drop the articles a/an/the, collapse whitespace), token-level F1, max over
the gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

SCORER_VERSION = "longctx-scorers-1 (ruler string_match_all; paper word recall; rouge1-nostem)"

_CONTROL_RE = re.compile(r"[\x00-\x1f]")
_ROUGE_SPLIT_RE = re.compile(r"[^a-z0-9]+")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


# ------------------------------------------------------------------------------------ RULER
def ruler_postprocess(pred: str) -> str:
    """RULER's prediction clean-up: strip, control characters -> "\\n", strip again."""
    return _CONTROL_RE.sub("\n", pred.strip()).strip()


def ruler_match_all(pred: str, refs: Sequence[str]) -> float:
    """One sample of ``string_match_all`` in 0..1: share of refs contained in pred (no case)."""
    if not refs:
        raise ValueError("ruler_match_all needs at least one reference")
    p = ruler_postprocess(pred).lower()
    return sum(1.0 for r in refs if r.lower() in p) / len(refs)


def ruler_match_part(pred: str, refs: Sequence[str]) -> float:
    """One sample of ``string_match_part`` in 0..1: 1 if any ref is contained in pred."""
    if not refs:
        raise ValueError("ruler_match_part needs at least one reference")
    p = ruler_postprocess(pred).lower()
    return max(1.0 if r.lower() in p else 0.0 for r in refs)


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER's task score: mean of per-sample match_all, x100, rounded to 2 decimals."""
    _check_lengths(preds, refs)
    total = sum(ruler_match_all(p, r) for p, r in zip(preds, refs, strict=True))
    return round(total / len(preds) * 100, 2)


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER's QA score: mean of per-sample match_part, x100, rounded to 2 decimals."""
    _check_lengths(preds, refs)
    total = sum(ruler_match_part(p, r) for p, r in zip(preds, refs, strict=True))
    return round(total / len(preds) * 100, 2)


def _check_lengths(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(preds) != len(refs) or not preds:
        raise ValueError(
            f"need as many predictions as references (>0): {len(preds)} vs {len(refs)}"
        )


# ------------------------------------------------------------------------------ the paper
PAPER_ANSWER = "eat a sandwich and sit in Dolores Park on a sunny day."


def paper_recall(response: str, expected: str = PAPER_ANSWER) -> float:
    """The paper's heatmap score: |set(response words) & set(expected words)| / len(list)."""
    words = expected.lower().split()
    if not words:
        raise ValueError("paper_recall needs a non-empty expected answer")
    return len(set(response.lower().split()) & set(words)) / len(words)


# ---------------------------------------------------------------------------------- ROUGE-1
def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenisation without stemming: lower-case alphanumeric runs."""
    return [t for t in _ROUGE_SPLIT_RE.split(text.lower()) if t]


def rouge1_f(reference: str, candidate: str) -> float:
    """ROUGE-1 F-measure: clipped unigram overlap, F = 2PR / (P + R); 0 if either is empty."""
    ref, cand = Counter(rouge_tokens(reference)), Counter(rouge_tokens(candidate))
    overlap = sum((ref & cand).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(cand.values())
    recall = overlap / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- InfiniteBench
def normalize_answer(text: str) -> str:
    """SQuAD/InfiniteBench normalisation: lower, drop punctuation, articles, extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-level F1 between normalised prediction and one gold answer."""
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    same = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_toks)
    recall = same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, golds: Sequence[str] | str) -> float:
    """InfiniteBench's En.QA metric for one item: max token F1 over the gold answers."""
    if isinstance(golds, str):
        golds = [golds]
    if not golds:
        raise ValueError("qa_f1_score needs at least one gold answer")
    return max(token_f1(prediction, g) for g in golds)


def needle_scores(
    response: str, refs: Sequence[str], recall_expected: str, needle_text: str
) -> dict[str, float]:
    """All needle scores of one response: RULER containment, paper recall, ROUGE-1 F."""
    return {
        "ruler": ruler_match_all(response, refs),
        "paper_recall": paper_recall(response, recall_expected),
        "rouge1": rouge1_f(needle_text, response),
    }
