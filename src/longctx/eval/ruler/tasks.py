"""The 13 RULER tasks and ``make_sample``: one seeded prompt of an exact token length.

Registry: NVIDIA/RULER ``scripts/synthetic.yaml`` (task parameters) and
``scripts/data/synthetic/constants.py`` (templates, tokens to generate); the metric of each
family is from ``scripts/eval/synthetic/constants.py``.

Length rule. RULER keeps the largest haystack with ``len(tokenize(prompt)) +
tokens_to_generate <= max_seq_length``, counting the prompt without BOS, so its prompts
fall short of the length by up to one growth step or unit. Here the prompt (model template, task,
answer prefix) is **exactly** ``length - tokens_to_generate`` model-facing tokens: the
leading specials the tokenizer's post-processor adds (as ``eval.needle`` feeds them; none
for SmolLM2) plus the ids of the whole prompt text, so prompt + the full generation budget
is exactly ``length`` (``fit.py`` says how).

Determinism: every random choice comes from RNGs seeded by (task, length, seed, index), so
a sample never depends on which other samples were built, in what order, or on
``PYTHONHASHSEED``; RULER's fixed ``Random(seed)`` shuffles use ``seed`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from longctx.errors import LongctxError
from longctx.eval.haystack import Haystack, collapse_whitespace, default_haystack
from longctx.eval.ruler.constants import BASE_TEMPLATE, TOKENS_TO_GENERATE
from longctx.eval.ruler.cwe import CweRenderer
from longctx.eval.ruler.fit import Renderer, TokenCounter, fit_exact
from longctx.eval.ruler.fwe import FweRenderer
from longctx.eval.ruler.niah import NiahParams, NiahRenderer
from longctx.eval.ruler.qa import QaRenderer, load_qa, require_dataset
from longctx.eval.ruler.vt import VtRenderer
from longctx.eval.ruler.words import haystack_vocabulary

DEFAULT_SEED = 42  # RULER's --random_seed default


@dataclass(frozen=True)
class TaskSpec:
    """One RULER task: its family, its parameters and its metric."""

    name: str
    family: str  # niah | vt | cwe | fwe | qa
    metric: str  # string_match_all | string_match_part
    niah: NiahParams | None = None
    dataset: str | None = None  # qa only: squad | hotpotqa

    @property
    def tokens_to_generate(self) -> int:
        return TOKENS_TO_GENERATE[self.family]


def _niah(name: str, haystack: str, key: str, value: str, k=1, v=1, q=1) -> TaskSpec:
    return TaskSpec(name, "niah", "string_match_all", NiahParams(haystack, key, value, k, v, q))


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        _niah("niah_single_1", "noise", "words", "numbers"),
        _niah("niah_single_2", "essay", "words", "numbers"),
        _niah("niah_single_3", "essay", "words", "uuids"),
        _niah("niah_multikey_1", "essay", "words", "numbers", k=4),
        _niah("niah_multikey_2", "needle", "words", "numbers"),
        _niah("niah_multikey_3", "needle", "uuids", "uuids"),
        _niah("niah_multivalue", "essay", "words", "numbers", v=4),
        _niah("niah_multiquery", "essay", "words", "numbers", q=4),
        TaskSpec("vt", "vt", "string_match_all"),
        TaskSpec("cwe", "cwe", "string_match_all"),
        TaskSpec("fwe", "fwe", "string_match_all"),
        TaskSpec("qa_1", "qa", "string_match_part", dataset="squad"),
        TaskSpec("qa_2", "qa", "string_match_part", dataset="hotpotqa"),
    )
}


@dataclass(frozen=True)
class Sample:
    """One prompt: ``input_tokens + tokens_to_generate == length`` exactly."""

    task: str
    index: int
    seed: int
    length: int
    prompt: str  # model template + task text + answer prefix: what the model reads
    answers: list[str]
    answer_prefix: str
    input_tokens: int
    tokens_to_generate: int
    ids: list[int]  # the model-facing ids of ``prompt`` (leading specials included)
    haystack_units: int  # essay words, noise/needle lines, list words, documents, ...
    pad_chars: int  # characters of extra haystack appended to hit the length exactly
    metric: str


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise LongctxError(f"unknown RULER task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def make_sample(
    task: str,
    target_len: int,
    tokenizer: Any,
    haystack: Haystack | str | None = None,
    seed: int = DEFAULT_SEED,
    index: int = 0,
    *,
    squad: str | Path | None = None,
    hotpotqa: str | Path | None = None,
    model_template: str = BASE_TEMPLATE,
) -> Sample:
    """Build sample ``index`` of ``task`` at ``target_len`` tokens (prompt + generation).

    ``haystack`` is the essay text for the essay tasks and the word source of cwe (default:
    the stdlib prose of ``eval.haystack``); qa_1/qa_2 need ``squad``/``hotpotqa`` and raise
    ``RulerDataMissing`` ("qa_1 skipped: needs --squad FILE ...") without them.
    """
    spec = get_task(task)
    if "{task_template}" not in model_template:
        raise LongctxError("model_template must contain {task_template}")
    budget = target_len - spec.tokens_to_generate
    if budget <= 0:
        raise LongctxError(
            f"{task}: length {target_len} leaves no prompt room after "
            f"{spec.tokens_to_generate} generated tokens"
        )
    counter = TokenCounter(tokenizer)
    renderer = _renderer(spec, target_len, counter, haystack, seed, index, squad, hotpotqa,
                         model_template)
    fitted = fit_exact(renderer, budget, counter)
    return Sample(
        task=task,
        index=index,
        seed=seed,
        length=target_len,
        prompt=fitted.draft.prompt,
        answers=fitted.draft.answers,
        answer_prefix=fitted.draft.answer_prefix,
        input_tokens=len(fitted.ids),
        tokens_to_generate=spec.tokens_to_generate,
        ids=fitted.ids,
        haystack_units=fitted.units,
        pad_chars=fitted.pad_chars,
        metric=spec.metric,
    )


def _renderer(
    spec: TaskSpec,
    target_len: int,
    counter: TokenCounter,
    haystack: Haystack | str | None,
    seed: int,
    index: int,
    squad: str | Path | None,
    hotpotqa: str | Path | None,
    model_template: str,
) -> Renderer:
    rng_key = f"ruler|{spec.name}|{target_len}|{seed}|{index}"
    if spec.family == "qa":
        path = require_dataset(spec.name, spec.dataset, squad if spec.dataset == "squad" else hotpotqa)
        return QaRenderer(load_qa(spec.dataset, path), index, rng_key, seed, model_template)
    if spec.family == "vt":
        n_specials = len(counter.specials)
        return VtRenderer(rng_key, model_template, lambda t: len(counter.ids(t)) - n_specials)
    if spec.family == "fwe":
        return FweRenderer(rng_key, seed, target_len, spec.tokens_to_generate, model_template)
    text = _haystack_text(haystack)
    if spec.family == "cwe":
        return CweRenderer(rng_key, seed, haystack_vocabulary(text), target_len, model_template)
    return NiahRenderer(spec.niah, rng_key, seed, _essay_words(text), model_template)


def _haystack_text(haystack: Haystack | str | None) -> str:
    if haystack is None:
        return default_haystack().text
    return haystack.text if isinstance(haystack, Haystack) else haystack


@lru_cache(maxsize=4)
def _essay_words(text: str) -> list[str]:
    """RULER's essay unit: the whitespace-collapsed text split on single spaces."""
    words = collapse_whitespace(text).split(" ")
    if words == [""]:
        raise LongctxError("the haystack has no words")
    return words
