"""The paper's mixture arithmetic on known inputs (hand-computed values, FACTS.md §2)."""

from __future__ import annotations

import pytest

from longctx.mix.strategies import (
    GLOBAL_GROUP,
    MixError,
    eligible_tokens,
    exact_budgets,
    expected_global_shares,
    get_strategy,
    plan_budgets,
    predicted_long_fraction,
    target_shares,
)

# SLIMPAJAMA_ORIGINAL_MIX from the paper's data_engineering/utils.py (FACTS.md §2)
PAPER_MIX = {
    "RedPajamaC4": 0.26609933,
    "RedPajamaCommonCrawl": 0.53374772,
    "RedPajamaStackExchange": 0.03169647,
    "RedPajamaWikipedia": 0.03402128,
    "RedPajamaGithub": 0.05004782,
    "RedPajamaArXiv": 0.04290379,
    "RedPajamaBook": 0.0414836,
}


def test_paper_per_source_budgets_for_5b_tokens():
    # The paper: budget = total x share. Its shares sum to 1.00000001, so x 5e9 they give
    # 5,000,000,050 tokens; ours renormalise first and sum to exactly 5e9. Hand-computed
    # values 5e9 x share / 1.00000001, rounded: C4 1,330,496,637 (raw 1,330,496,650 - 13.3),
    # CC 2,668,738,573 (2,668,738,600 - 26.7).
    budgets = exact_budgets(5_000_000_000, PAPER_MIX)
    assert sum(budgets.values()) == 5_000_000_000
    assert abs(budgets["RedPajamaC4"] - 1_330_496_637) <= 1
    assert abs(budgets["RedPajamaCommonCrawl"] - 2_668_738_573) <= 1
    assert abs(budgets["RedPajamaBook"] - 207_417_998) <= 1


def test_paper_upsample_code_arxiv_book_mix():
    # UPSAMPLE_CODE_ARXIV_BOOK: Github, ArXiv, Book set to 0.60, renormalised by 2.6655648:
    # C4 0.0998, CC 0.2002, SE 0.0119, Wiki 0.0128, the three upsampled 0.2251 each.
    mix = dict(PAPER_MIX, RedPajamaGithub=0.6, RedPajamaArXiv=0.6, RedPajamaBook=0.6)
    shares = target_shares(PAPER_MIX, mix=mix)
    assert shares["RedPajamaC4"] == pytest.approx(0.26609933 / 2.6655648, abs=1e-9)
    assert round(shares["RedPajamaC4"], 4) == 0.0998
    assert round(shares["RedPajamaCommonCrawl"], 4) == 0.2002
    assert round(shares["RedPajamaStackExchange"], 4) == 0.0119
    assert round(shares["RedPajamaWikipedia"], 4) == 0.0128
    for d in ("RedPajamaGithub", "RedPajamaArXiv", "RedPajamaBook"):
        assert round(shares[d], 4) == 0.2251


def test_upsample_multiplies_then_renormalises():
    shares = target_shares({"A": 96.0, "Book": 4.0}, upsample={"Book": 3})
    assert shares["Book"] == pytest.approx(0.12 / 1.08)
    assert shares["A"] == pytest.approx(0.96 / 1.08)
    with pytest.raises(MixError, match="Nope"):
        target_shares({"A": 1.0}, upsample={"Nope": 2})


def test_default_shares_are_input_token_shares_and_mix_overrides():
    assert target_shares({"a": 300, "b": 100}) == {"a": 0.75, "b": 0.25}
    # --mix leaves out input domain c: it gets share 0
    assert target_shares({"a": 300, "b": 100, "c": 5}, mix={"a": 1, "b": 1}) == {
        "a": 0.5, "b": 0.5, "c": 0.0}


def test_exact_budgets_largest_remainder():
    # raw 3.5, 2.1, 1.4 -> floors 3, 2, 1 (6); the one left goes to the largest remainder (a)
    assert exact_budgets(7, {"a": 0.5, "b": 0.3, "c": 0.2}) == {"a": 4, "b": 2, "c": 1}
    # equal remainders: ties go by name, never by dict order
    assert exact_budgets(10, {"c": 1, "b": 1, "a": 1}) == {"a": 4, "b": 3, "c": 3}
    assert exact_budgets(0, {"a": 1}) == {"a": 0}
    for total in (1, 17, 600_000, 1_000_003):
        assert sum(exact_budgets(total, PAPER_MIX).values()) == total


def test_predicted_long_fraction_is_l_over_l_plus_p_s():
    # L = 350, S = 650, p = 0.1: 350 / (350 + 65) = 0.843373...
    assert predicted_long_fraction(350, 650, 0.1) == pytest.approx(350 / 415)
    assert eligible_tokens(350, 650, 0.1) == pytest.approx(415)
    assert predicted_long_fraction(0, 100, 0.1) == 0.0
    assert predicted_long_fraction(100, 0, 0.1) == 1.0
    assert predicted_long_fraction(350, 650, 1.0) == pytest.approx(0.35)  # no length rule


def test_global_expected_shares_shift_toward_long_domains():
    # book all long (L=100), web mostly short (L=100, S=900), p = 0.1:
    # eligible book 100, web 100 + 90 = 190 -> shares 100/290 and 190/290
    shares = expected_global_shares({"book": 100, "web": 100}, {"book": 0, "web": 900}, 0.1)
    assert shares["book"] == pytest.approx(100 / 290)
    assert shares["web"] == pytest.approx(190 / 290)


def test_strategies_and_plans():
    assert get_strategy("per_source").length_rule and get_strategy("per_source").per_domain
    assert not get_strategy("original").length_rule
    assert get_strategy("original").keep_probability(0.1) == 1.0
    assert get_strategy("global").keep_probability(0.1) == 0.1
    assert get_strategy("cut").chunk and not get_strategy("cut").length_rule
    with pytest.raises(MixError, match="strategy"):
        get_strategy("nope")
    shares, budgets = plan_budgets(get_strategy("global"), 1000, {"a": 1, "b": 3})
    assert shares == {} and budgets == {GLOBAL_GROUP: 1000}
    with pytest.raises(MixError, match="global"):
        plan_budgets(get_strategy("global"), 1000, {"a": 1}, mix={"a": 1})
    with pytest.raises(MixError, match="upsample"):
        plan_budgets(get_strategy("upsample"), 1000, {"a": 1})
    shares, budgets = plan_budgets(get_strategy("upsample"), 1000, {"a": 1, "b": 1},
                                   upsample={"b": 3})
    assert budgets == {"a": 250, "b": 750}


def test_expected_global_shares_do_not_depend_on_hash_order():
    """The sum runs in sorted domain order, so the shares are the same in every process
    (summing a set of names would follow PYTHONHASHSEED)."""
    import subprocess
    import sys

    code = ("from longctx.mix.strategies import expected_global_shares as f;"
            "L={f'd{i}': 0.1*i+1e-9*i*i for i in range(40)};"
            "S={f'd{i}': 1/3+i for i in range(40)};print(repr(f(L,S,0.1)))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(s)}, check=True).stdout
            for s in (0, 1, 2, 3)}
    assert len(outs) == 1
