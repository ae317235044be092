"""RULER's metrics and which task uses which (``scripts/eval/synthetic/constants.py``).

- ``string_match_all`` (NIAH, vt, cwe, fwe): per sample, the share of references that
  occur in the prediction, case-insensitively (plain substring test);
- ``string_match_part`` (qa_1, qa_2): per sample, 1 if any reference occurs in it.

Both average over samples and report x100 rounded to 2 decimals, as RULER prints them.
Predictions are first cleaned as RULER's ``evaluate.py`` does (strip, control characters
to newlines, strip); that is the same scorer the needle evaluation uses, so both share
``eval.scorers``. The RULER paper's per-length score is the plain mean over the 13 tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from longctx.eval import scorers
from longctx.eval.ruler.tasks import get_task

METRICS: dict[str, Callable[[Sequence[str], Sequence[Sequence[str]]], float]] = {
    "string_match_all": scorers.string_match_all,
    "string_match_part": scorers.string_match_part,
}
SAMPLE_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "string_match_all": scorers.ruler_match_all,
    "string_match_part": scorers.ruler_match_part,
}


def task_metric(task: str) -> str:
    return get_task(task).metric


def score_task(task: str, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """The task's RULER score in 0..100 (2 decimals) over its samples."""
    return METRICS[task_metric(task)](preds, refs)


def sample_scores(task: str, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> list[float]:
    """Per-sample scores in 0..1 (their mean x100 is ``score_task`` before rounding)."""
    if len(preds) != len(refs):
        raise ValueError(f"need as many predictions as references: {len(preds)} vs {len(refs)}")
    one = SAMPLE_METRICS[task_metric(task)]
    return [one(p, r) for p, r in zip(preds, refs, strict=True)]


def average_over_tasks(task_scores: Mapping[str, float]) -> float:
    """The RULER paper's number for one length: the mean of its task scores (2 decimals)."""
    if not task_scores:
        raise ValueError("no task scores to average")
    for name in task_scores:
        get_task(name)
    return round(sum(task_scores.values()) / len(task_scores), 2)
