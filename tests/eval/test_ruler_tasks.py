"""RULER task generators: templates, answers, exact token lengths, determinism, QA files."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter

import pytest

from longctx.errors import LongctxError
from longctx.eval.ruler.fit import RulerLengthError
from longctx.eval.ruler.fwe import zeta
from longctx.eval.ruler.niah import split_sentences
from longctx.eval.ruler.qa import RulerDataMissing
from longctx.eval.ruler.tasks import TASKS, make_sample

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
SYNTHETIC = [t for t in TASKS if not t.startswith("qa_")]


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def essay(ruler_essays_json):
    from longctx.eval.haystack import load_haystack

    return load_haystack(ruler_essays_json)


@pytest.fixture(scope="module")
def any_haystack(request):
    """RULER's essay when the reference data is there, else the stdlib default (None), so
    the length sweep also runs in a clone without ../shared."""
    try:
        return request.getfixturevalue("essay")
    except pytest.skip.Exception:
        return None


def _ids(tok, text: str) -> list[int]:
    return tok.backend.encode(text, add_special_tokens=False).ids


# ---------------------------------------------------------------------------- registry
def test_registry_has_rulers_13_tasks_with_their_parameters():
    assert list(TASKS) == [
        "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2",
    ]
    table = {
        n: (p.haystack, p.key_kind, p.value_kind, p.num_keys, p.num_values, p.num_queries)
        for n, t in TASKS.items() if (p := t.niah) is not None
    }
    assert table == {
        "niah_single_1": ("noise", "words", "numbers", 1, 1, 1),
        "niah_single_2": ("essay", "words", "numbers", 1, 1, 1),
        "niah_single_3": ("essay", "words", "uuids", 1, 1, 1),
        "niah_multikey_1": ("essay", "words", "numbers", 4, 1, 1),
        "niah_multikey_2": ("needle", "words", "numbers", 1, 1, 1),
        "niah_multikey_3": ("needle", "uuids", "uuids", 1, 1, 1),
        "niah_multivalue": ("essay", "words", "numbers", 1, 4, 1),
        "niah_multiquery": ("essay", "words", "numbers", 1, 1, 4),
    }
    ttg = {n: t.tokens_to_generate for n, t in TASKS.items()}
    assert {ttg[n] for n in table} == {128}
    assert (ttg["vt"], ttg["cwe"], ttg["fwe"], ttg["qa_1"], ttg["qa_2"]) == (30, 120, 50, 32, 32)
    metrics = {n: t.metric for n, t in TASKS.items()}
    assert metrics["qa_1"] == metrics["qa_2"] == "string_match_part"
    assert {metrics[n] for n in TASKS if not n.startswith("qa")} == {"string_match_all"}


# ------------------------------------------------------------------- hand-built prompts
def test_niah_single_1_small_prompt_is_rulers_singular_template(tok):
    s = make_sample("niah_single_1", 300, tok, None, seed=42, index=0)
    key, value = "wandering-radish", "2227519"
    expected = (
        "A special magic number is hidden within the following text. Make sure to memorize "
        "it. I will quiz you about the number afterwards.\n"
        f"{NOISE}\n{NOISE}\n"
        f"One of the special magic numbers for {key} is: {value}.\n"
        f"{NOISE}\n"
        "The grass is green. The sky is blue. The sun is yellow"  # the pad: 55 characters
        f"\nWhat is the special magic number for {key} mentioned in the provided text?"
        f" The special magic number for {key} mentioned in the provided text is"
    )
    assert s.prompt == expected
    assert s.answers == [value] and s.answers[0] in f"for {key} is: {value}."
    assert (s.haystack_units, s.pad_chars) == (3, 55)
    assert s.answer_prefix == f" The special magic number for {key} mentioned in the provided text is"
    assert s.prompt.endswith(s.answer_prefix)
    assert s.ids == _ids(tok, s.prompt) and s.input_tokens == 300 - 128 == len(s.ids)


def test_niah_plural_templates_and_needles(tok, any_haystack):
    essay = any_haystack
    mv = make_sample("niah_multivalue", 1500, tok, essay, index=3)
    assert mv.prompt.startswith("Some special magic numbers are hidden within the following text.")
    key = re.search(r"for (\S+) mentioned in the provided text\?", mv.prompt).group(1)
    assert mv.prompt.endswith(f"? The special magic numbers for {key} mentioned in the provided text are")
    found = re.findall(rf"One of the special magic numbers for {re.escape(key)} is: (\d{{7}})\.", mv.prompt)
    assert sorted(found) == sorted(mv.answers) and len(mv.answers) == 4

    mq = make_sample("niah_multiquery", 1500, tok, essay, index=3)
    asked = re.search(r"numbers for (.+) mentioned in the provided text\?", mq.prompt).group(1)
    keys = asked.replace(", and ", ", ").split(", ")
    assert len(keys) == 4 and asked == ", ".join(keys[:3]) + ", and " + keys[3]
    for k, v in zip(keys, mq.answers, strict=True):
        assert f"One of the special magic numbers for {k} is: {v}." in mq.prompt

    mk = make_sample("niah_multikey_1", 1500, tok, essay, index=3)
    needles = re.findall(r"One of the special magic numbers for (\S+) is: (\d{7})\.", mk.prompt)
    assert len(needles) == 4 and len({k for k, _ in needles}) == 4
    asked = re.search(r"number for (\S+) mentioned in the provided text\?", mk.prompt).group(1)
    assert mk.answers == [dict(needles)[asked]]

    uu = make_sample("niah_single_3", 1500, tok, essay, index=3)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uu.answers[0])
    assert "A special magic uuid is hidden" in uu.prompt
    assert "One of the special magic uuids for " in uu.prompt


def test_niah_essay_context_is_the_essay_with_needles_at_sentence_starts(tok, essay):
    from longctx.eval.haystack import collapse_whitespace

    for index in range(4):
        s = make_sample("niah_single_2", 2000, tok, essay, index=index)
        needle = re.search(r"One of the special magic numbers for \S+ is: \d{7}\.", s.prompt).group(0)
        header_end = s.prompt.index("afterwards.\n") + len("afterwards.\n")
        context = s.prompt[header_end : s.prompt.rindex("\nWhat is the special")]
        before, after = context.split(needle)
        assert before.endswith(" ") and after.startswith(" ")  # RULER joins pieces with " "
        seg0, seg1 = before[:-1], after[1:]
        if seg0:
            assert re.search(r"[.!?][\"')\]]?$", seg0)  # the needle starts a sentence
        text = " ".join(x for x in (seg0, seg1) if x)
        essay_words = text[: len(text) - s.pad_chars]  # the pad may skip a few words
        assert len(essay_words) > 1000 and collapse_whitespace(essay.text).startswith(essay_words)


def test_niah_needle_haystack_distractors_never_reuse_the_key(tok):
    for task in ("niah_multikey_2", "niah_multikey_3"):
        s = make_sample(task, 3000, tok, None, index=2)
        kind = "numbers" if task.endswith("2") else "uuids"
        lines = s.prompt.split("\n")[1:-1]
        pairs = [re.fullmatch(rf"One of the special magic {kind} for (\S+) is: (\S+)\.", ln) for ln in lines]
        full = [m.groups() for m in pairs if m]
        assert len(full) >= len(lines) - 1 > 20  # the last line may be a partial pad line
        asked = re.search(rf"magic {kind[:-1]} for (\S+) mentioned", s.prompt).group(1)
        hits = [v for k, v in full if k == asked]
        assert hits == s.answers


# ------------------------------------------------------------------------ other families
def test_vt_answers_are_exactly_the_chain_of_the_asked_value(tok):
    s = make_sample("vt", 2500, tok, None, index=4)
    example, task = s.prompt.split("\nMemorize and track", 1)
    assert example.startswith("Memorize and track the chain(s) of variable assignment")
    assert re.search(r"they are:  ([A-Z]{3} ){4}[A-Z]{3}$", example)
    value = re.search(r"assigned the value (\d{5}) in the text above\.", task).group(1)
    assert s.answer_prefix == (
        " Answer: According to the chain(s) of variable assignment in the text above, 5 "
        f"variables are assgined the value {value}, they are: "
    )
    assert s.prompt.endswith(s.answer_prefix)
    assigns = dict(re.findall(r"^VAR ([A-Z]{5}) = (.+?) ?$", task, flags=re.M))
    chain = [k for k, v in assigns.items() if v == value]
    while True:
        nxt = [k for k, v in assigns.items() if v == f"VAR {chain[-1]}"]
        if not nxt:
            break
        chain += nxt
    assert chain == s.answers and len(chain) == 5 and len(assigns) == 5
    assert f"VAR {chain[1]} = VAR {chain[0]} \n" in task  # RULER's trailing space


def _main_list(prompt: str) -> list[str]:
    body = prompt.rsplit("most often.\n", 1)[1].split("\nQuestion:")[0]
    return re.findall(r"\d+\. ([a-z]+)", body)  # a cut pad word counts once: harmless


@pytest.mark.parametrize("length", [1500, 5000])
def test_cwe_answers_are_the_truly_most_common_words(tok, any_haystack, length):
    s = make_sample("cwe", length, tok, any_haystack, index=5)
    counts = Counter(_main_list(s.prompt))
    assert len(s.answers) == 10 and len(set(s.answers)) == 10
    top = min(counts[a] for a in s.answers)
    assert top == (6 if length < 4096 else 30)
    assert max(c for w, c in counts.items() if w not in s.answers) < top
    example = s.prompt.split("\nBelow is a numbered list", 1)[0]
    shown = example.rsplit("most often in the list are: ", 1)[1].split()
    assert shown[0::2] == [f"{i}." for i in range(1, 11)]
    ex_counts = Counter(_main_list(example + "\nQuestion:"))
    assert {w for w, _ in ex_counts.most_common(10)} == set(shown[1::2])


def test_fwe_answers_are_the_three_most_frequent_coded_words(tok):
    s = make_sample("fwe", 3000, tok, None, index=6)
    body = s.prompt.split("most frequently appeared coded words. ", 1)[1].split("\nQuestion:")[0]
    counts = Counter(w for w in body.split() if w != "...")
    ranked = [w for w, _ in counts.most_common()]
    assert ranked[:3] == s.answers and all(re.fullmatch(r"[a-z]{6}", w) for w in s.answers)
    assert counts[ranked[2]] > counts[ranked[3]]
    assert body.split().count("...") > counts[ranked[0]]  # rank 1 is RULER's "..." noise
    assert zeta(2.0) == pytest.approx(math.pi**2 / 6, rel=1e-12)


# ---------------------------------------------------------------------- exact lengths
@pytest.mark.parametrize("length", [1024, 2048, 4096])
@pytest.mark.parametrize("task", SYNTHETIC)
def test_every_task_hits_the_exact_length_in_smollm2_tokens(tok, any_haystack, task, length):
    s = make_sample(task, length, tok, any_haystack, seed=7, index=0)
    assert s.input_tokens + s.tokens_to_generate == length
    assert s.ids == _ids(tok, s.prompt)  # the text re-tokenizes to the counted ids
    assert all(a and a in s.prompt.rsplit(s.answer_prefix, 1)[0] for a in s.answers)


@pytest.fixture(scope="module")
def llama2(llama2_tokenizer_model, tmp_path_factory):
    pytest.importorskip("sentencepiece", reason="transformers converts tokenizer.model with it")
    from longctx.data.tokenizer import load_tokenizer

    folder = tmp_path_factory.mktemp("llama2")
    shutil.copy(llama2_tokenizer_model, folder / "tokenizer.model")
    return load_tokenizer(folder)


@pytest.mark.parametrize("task", ["niah_single_1", "niah_multivalue", "niah_multikey_3", "vt", "cwe", "fwe"])
def test_exact_length_in_llama2_tokens(llama2, essay, task):
    s = make_sample(task, 4096, llama2, essay, index=1)
    assert s.input_tokens == 4096 - s.tokens_to_generate
    specials = len(s.ids) - len(_ids(llama2, s.prompt))
    assert s.ids[specials:] == _ids(llama2, s.prompt)


def test_too_short_length_is_a_clear_error(tok):
    with pytest.raises(RulerLengthError, match="length too short"):
        make_sample("vt", 400, tok)
    with pytest.raises(LongctxError, match="no prompt room"):
        make_sample("niah_single_1", 100, tok)
    with pytest.raises(LongctxError, match="unknown RULER task"):
        make_sample("niah_single_9", 1000, tok)


# ------------------------------------------------------------------------- determinism
def test_samples_are_deterministic_per_task_length_seed_and_index(tok, any_haystack):
    essay = any_haystack
    a = make_sample("niah_multikey_1", 1200, tok, essay, seed=1, index=0)
    make_sample("niah_multikey_1", 1200, tok, essay, seed=1, index=9)  # another in between
    assert make_sample("niah_multikey_1", 1200, tok, essay, seed=1, index=0) == a
    assert make_sample("niah_multikey_1", 1200, tok, essay, seed=1, index=1).answers != a.answers
    assert make_sample("niah_multikey_1", 1200, tok, essay, seed=2, index=0).answers != a.answers
    assert make_sample("niah_multikey_1", 1300, tok, essay, seed=1, index=0).answers != a.answers


def test_split_sentences_round_trips_the_collapsed_text():
    text = 'One. Two? "Three!" Four (five.) six e.g. seven'
    sents = split_sentences(text)
    assert " ".join(sents) == text
    assert sents == ["One.", "Two?", '"Three!"', "Four (five.)", "six e.g.", "seven"]


# ---------------------------------------------------------------------------------- QA
def _squad_file(path):
    def para(ctx, qas):
        return {"context": ctx, "qas": qas}

    data = {"version": "v2.0", "data": [
        {"title": "Rivers", "paragraphs": [
            para("The Danube flows through ten countries and ends in the Black Sea.",
                 [{"id": "1", "question": "Where does the Danube end?", "is_impossible": False,
                   "answers": [{"text": "the Black Sea", "answer_start": 48},
                               {"text": "Black Sea", "answer_start": 52}]},
                  {"id": "2", "question": "Who built the Danube?", "is_impossible": True,
                   "answers": []}]),
            para("The Rhine rises in the Swiss Alps.",
                 [{"id": "3", "question": "Where does the Rhine rise?", "is_impossible": False,
                   "answers": [{"text": "the Swiss Alps", "answer_start": 19}]}]),
        ]},
        {"title": "Towers", "paragraphs": [
            para(f"Tower number {i} stands {i * 3} metres tall in town {i}.", []) for i in range(40)
        ]},
    ]}
    path.write_text(json.dumps(data))
    return path


def _hotpot_file(path):
    data = [
        {"question": f"Which river flows past city {q}?", "answer": f"River {q}",
         "context": [[f"City {q}-{j}", [f"City {q}-{j} lies on River {q}. ", "It is old."]]
                     for j in range(10)]}
        for q in range(3)
    ]
    path.write_text(json.dumps(data))
    return path


def test_qa_without_its_file_is_skipped_with_a_clear_error(tok, tmp_path):
    with pytest.raises(RulerDataMissing, match=r"^qa_1 skipped: needs --squad FILE"):
        make_sample("qa_1", 1000, tok)
    with pytest.raises(LongctxError, match=r"^qa_2 skipped: needs --hotpotqa FILE"):
        make_sample("qa_2", 1000, tok)
    with pytest.raises(RulerDataMissing, match="no such file"):
        make_sample("qa_1", 1000, tok, squad=tmp_path / "missing.json")


def test_qa_1_squad_sample_holds_its_gold_paragraph_and_answers(tok, tmp_path):
    squad = _squad_file(tmp_path / "squad.json")
    s = make_sample("qa_1", 700, tok, squad=squad, index=0)
    assert s.input_tokens == 700 - 32 and s.ids == _ids(tok, s.prompt)
    assert s.answers == ["the Black Sea", "Black Sea"]
    assert "The Danube flows through ten countries and ends in the Black Sea." in s.prompt
    assert s.prompt.startswith(
        "Answer the question based on the given documents. Only give me the answer and do not "
        "output any other words.\n\nThe following are given documents.\n\nDocument 1:\n"
    )
    assert s.prompt.endswith("\n\nQuestion: Where does the Danube end? Answer:")
    assert "Document 2:\n" in s.prompt
    second = make_sample("qa_1", 700, tok, squad=squad, index=1)  # the unanswerable one is dropped
    assert second.answers == ["the Swiss Alps"]


def test_qa_2_hotpotqa_sample_holds_all_ten_paragraphs(tok, tmp_path):
    hotpot = _hotpot_file(tmp_path / "hotpot.json")
    s = make_sample("qa_2", 1200, tok, hotpotqa=hotpot, index=2)
    assert s.input_tokens == 1200 - 32 and s.answers == ["River 2"]
    for j in range(10):
        assert f"City 2-{j}\nCity 2-{j} lies on River 2. It is old." in s.prompt
    with pytest.raises(RulerLengthError, match="length too short"):
        make_sample("qa_2", 300, tok, hotpotqa=hotpot, index=2)
