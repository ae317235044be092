"""Scorer parity: fixed responses against values computed by hand from RULER's rule, the
paper's recall rule, ROUGE-1 and InfiniteBench's qa_f1_score (FACTS.md §4-§5, Table 4)."""

from __future__ import annotations

import pytest

from longctx.eval import scorers
from longctx.eval.needle import PAPER_NEEDLE

# FACTS.md §5 "Test vectors": preds, refs, string_match_all, string_match_part
RULER_VECTORS = [
    (["1234567."], [["1234567"]], 100.0, 100.0),
    (["The special magic number is 12345678"], [["1234567"]], 100.0, 100.0),
    (["1234567, 7654321"], [["1234567", "7654321", "1111111", "2222222"]], 50.0, 100.0),
    (["1234567", "nothing"], [["1234567"], ["7654321"]], 50.0, 50.0),
    (["ABCD-efgh"], [["abcd-EFGH"]], 100.0, 100.0),
    ([""], [["1234567"]], 0.0, 0.0),
    (["a", "b", "c"], [["a"], ["b"], ["x"]], 66.67, 66.67),
]


@pytest.mark.parametrize("preds,refs,match_all,match_part", RULER_VECTORS)
def test_ruler_vectors(preds, refs, match_all, match_part):
    assert scorers.string_match_all(preds, refs) == match_all
    assert scorers.string_match_part(preds, refs) == match_part


def test_ruler_postprocess_control_characters():
    # control characters become newlines, then the string is stripped again
    assert scorers.ruler_postprocess("\t 123\x014567 \x02") == "123\n4567"
    # so a value split by a control character is not contained any more
    assert scorers.ruler_match_all("123\x004567", ["1234567"]) == 0.0
    assert scorers.ruler_match_all("  1234567\n", ["1234567"]) == 1.0


def test_paper_recall_tops_out_at_eleven_twelfths():
    perfect = "Eat a sandwich and sit in Dolores Park on a sunny day."
    assert scorers.paper_recall(perfect) == pytest.approx(11 / 12)
    assert scorers.paper_recall(PAPER_NEEDLE) == pytest.approx(11 / 12)  # whole needle
    assert scorers.paper_recall(perfect + " " + perfect) == pytest.approx(11 / 12)


def test_paper_recall_keeps_the_period():
    no_period = "eat a sandwich and sit in Dolores Park on a sunny day"
    assert scorers.paper_recall(no_period) == pytest.approx(10 / 12)  # "day" != "day."
    assert scorers.paper_recall("sunny day.") == pytest.approx(2 / 12)
    assert scorers.paper_recall("sunny day") == pytest.approx(1 / 12)
    assert scorers.paper_recall("I don't know") == 0.0
    # a RULER-style containment check calls the same answer fully correct (FACTS §5 end)
    assert scorers.ruler_match_all(no_period, [scorers.PAPER_ANSWER.rstrip(".")]) == 1.0


def test_rouge1_by_hand():
    # ref: the cat sat on the mat (6); cand: the cat is on a mat (6); clipped overlap
    # the:1 cat:1 on:1 mat:1 = 4 -> P = R = F = 4/6
    assert scorers.rouge1_f("The cat sat on the mat.", "the cat is on a mat") == pytest.approx(
        4 / 6
    )
    # no stemmer: "sitting" does not match "sit" (rouge_score with use_stemmer=True would)
    assert scorers.rouge1_f("sit", "sitting") == 0.0
    assert scorers.rouge1_f("sit", "") == 0.0
    # P = 1/1, R = 1/3 -> F = 2 * 1 * 1/3 / (4/3) = 0.5
    assert scorers.rouge1_f("Dolores Park sandwich", "park") == pytest.approx(0.5)


def test_qa_f1_by_hand():
    # "the eiffel tower in paris" -> normalised "eiffel tower in paris" (4 tokens);
    # gold "eiffel tower" (2): P = 2/4, R = 1 -> F1 = 2/3; "Louvre" gives 0; max = 2/3
    assert scorers.qa_f1_score("The Eiffel Tower, in Paris!", ["Eiffel Tower", "Louvre"]) == (
        pytest.approx(2 / 3)
    )
    assert scorers.qa_f1_score("a cat", "the cat") == 1.0  # articles dropped
    assert scorers.qa_f1_score("", ["x"]) == 0.0
    assert scorers.normalize_answer("  The  Quick, brown fox!  ") == "quick brown fox"
    # repeated tokens are counted with multiplicity: pred "red red" vs gold "red":
    # same = 1, P = 1/2, R = 1 -> 2/3
    assert scorers.qa_f1_score("red red", ["red"]) == pytest.approx(2 / 3)


def test_needle_scores_bundle():
    s = scorers.needle_scores("1234567.", ["1234567"], "1234567", " One of ... is: 1234567.")
    assert s["ruler"] == 1.0
    assert s["paper_recall"] == 0.0  # "1234567." keeps its period, so the word differs
    assert set(s) == {"ruler", "paper_recall", "rouge1"}
    assert scorers.SCORER_VERSION
