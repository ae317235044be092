"""RULER scoring: the metric vectors of FACTS.md §5 and the per-task metric mapping."""

from __future__ import annotations

import pytest

from longctx.eval.ruler.score import (
    METRICS,
    average_over_tasks,
    sample_scores,
    score_task,
    task_metric,
)
from longctx.eval.ruler.tasks import TASKS

from .test_scorers import RULER_VECTORS  # FACTS.md §5 "Test vectors", written once


@pytest.mark.parametrize(("preds", "refs", "match_all", "match_part"), RULER_VECTORS)
def test_metrics_reproduce_the_facts_vectors(preds, refs, match_all, match_part):
    assert METRICS["string_match_all"](preds, refs) == match_all
    assert METRICS["string_match_part"](preds, refs) == match_part


def test_each_task_uses_rulers_metric():
    assert {t: task_metric(t) for t in TASKS} == {
        **{t: "string_match_all" for t in TASKS if not t.startswith("qa_")},
        "qa_1": "string_match_part",
        "qa_2": "string_match_part",
    }


def test_score_task_applies_the_tasks_metric():
    preds, refs = ["1234567, 7654321"], [["1234567", "7654321", "1111111", "2222222"]]
    assert score_task("niah_multivalue", preds, refs) == 50.0
    assert score_task("qa_1", preds, refs) == 100.0
    assert score_task("vt", ["\x00 ABCDE FGHIJ\tKLMNO"], [["ABCDE", "FGHIJ", "KLMNO"]]) == 100.0


def test_sample_scores_are_fractions_whose_mean_is_the_score():
    preds = ["1234567", "7654321 and 1111111", "nothing"]
    refs = [["1234567"], ["7654321", "2222222"], ["3333333"]]
    per = sample_scores("niah_multiquery", preds, refs)
    assert per == [1.0, 0.5, 0.0]
    assert round(sum(per) / len(per) * 100, 2) == score_task("niah_multiquery", preds, refs) == 50.0
    assert sample_scores("qa_2", preds, refs) == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="as many predictions"):
        sample_scores("vt", preds, refs[:2])


def test_mismatched_or_empty_inputs_are_errors():
    with pytest.raises(ValueError):
        score_task("cwe", [], [])
    with pytest.raises(ValueError):
        score_task("cwe", ["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="at least one reference"):
        score_task("qa_1", ["a"], [[]])


def test_average_over_tasks_is_the_plain_mean():
    assert average_over_tasks({"niah_single_1": 100.0, "vt": 50.0, "qa_1": 0.0}) == 50.0
    with pytest.raises(ValueError):
        average_over_tasks({})
    with pytest.raises(ValueError, match="unknown RULER task"):
        average_over_tasks({"niah_single_9": 1.0})
