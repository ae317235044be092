"""RULER's QA tasks: qa_1 (SQuAD) and qa_2 (HotpotQA), from files the user supplies.

Follows ``scripts/data/synthetic/qa.py``: SQuAD documents are the distinct paragraph
contexts (sorted), a question's gold document is its paragraph and its "more" documents
the other paragraphs of its article; unanswerable SQuAD v2 questions are dropped and every
answer text is a reference. HotpotQA documents are "title\\nsentences joined", and all ten
paragraphs of a question are its documents. A sample of ``units`` documents holds the gold
ones, then "more" ones, then random others; the list is shuffled by a fresh
``Random(seed)`` (so, as in RULER, the gold position depends only on the count) and written
"Document i:\\n<text>" joined by blank lines. Sample ``index`` asks question ``index``.

Differences from RULER: a SQuAD v1.1 file (no ``is_impossible``) is accepted; when the
requested count exceeds the documents we cycle the sample's own order instead of RULER's
plain repetition of all documents; the pad is the start of one more document.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from longctx.errors import LongctxError
from longctx.eval.ruler.constants import QA_ANSWER_PREFIX, QA_DOCUMENT, QA_TEMPLATE
from longctx.eval.ruler.fit import Draft, pad_text

DATASET_FLAGS = {"squad": "--squad", "hotpotqa": "--hotpotqa"}
DATASET_HINTS = {
    "squad": "SQuAD v2.0 dev JSON, e.g. dev-v2.0.json",
    "hotpotqa": "HotpotQA dev distractor JSON, e.g. hotpot_dev_distractor_v1.json",
}


class RulerDataMissing(LongctxError):
    """A QA task was asked for without its dataset file: the task is skipped."""


@dataclass(frozen=True)
class Question:
    query: str
    answers: tuple[str, ...]
    gold: tuple[int, ...]
    more: tuple[int, ...] = ()


@dataclass(frozen=True)
class QaSet:
    questions: tuple[Question, ...]
    docs: tuple[str, ...]


def require_dataset(task: str, dataset: str, path: str | Path | None) -> Path:
    """The dataset file, or a RulerDataMissing that says which flag would supply it."""
    if path is None or str(path) == "":
        raise RulerDataMissing(
            f"{task} skipped: needs {DATASET_FLAGS[dataset]} FILE ({DATASET_HINTS[dataset]})"
        )
    p = Path(path)
    if not p.is_file():
        raise RulerDataMissing(f"{task} skipped: {DATASET_FLAGS[dataset]} {p}: no such file")
    return p


def load_qa(dataset: str, path: Path) -> QaSet:
    stat = path.stat()
    return _load(dataset, str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load(dataset: str, path: str, _mtime: int, _size: int) -> QaSet:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return _read_squad(data) if dataset == "squad" else _read_hotpotqa(data)
    except (ValueError, KeyError, TypeError) as e:
        raise LongctxError(f"{path}: not a {dataset} JSON file ({type(e).__name__}: {e})") from None


def _read_squad(data: dict) -> QaSet:
    docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
    index = {c: i for i, c in enumerate(docs)}
    questions = []
    for article in data["data"]:
        article_docs = [index[p["context"]] for p in article["paragraphs"]]
        for p in article["paragraphs"]:
            own = index[p["context"]]
            for qa in p["qas"]:
                if qa.get("is_impossible", False):
                    continue
                questions.append(Question(
                    qa["question"],
                    tuple(a["text"] for a in qa["answers"]),
                    (own,),
                    tuple(i for i in article_docs if i != own),
                ))
    return QaSet(tuple(questions), tuple(docs))


def _read_hotpotqa(data: list) -> QaSet:
    def text(title: str, sentences: list[str]) -> str:
        return f"{title}\n{''.join(sentences)}"

    docs = sorted({text(t, s) for d in data for t, s in d["context"]})
    index = {c: i for i, c in enumerate(docs)}
    questions = tuple(
        Question(d["question"], (d["answer"],), tuple(index[text(t, s)] for t, s in d["context"]))
        for d in data
    )
    return QaSet(questions, tuple(docs))


class QaRenderer:
    """One QA sample: its question and document order fixed, the document count varies."""

    def __init__(
        self, qa: QaSet, index: int, rng_key: str, seed: int, model_template: str
    ) -> None:
        if not 0 <= index < len(qa.questions):
            raise LongctxError(f"QA sample {index}: the file has {len(qa.questions)} questions")
        q = qa.questions[index]
        rng = random.Random(rng_key)
        more = rng.sample(q.more, len(q.more))
        taken = set(q.gold) | set(more)
        others = [i for i in range(len(qa.docs)) if i not in taken]
        self.order = list(q.gold) + more + rng.sample(others, len(others))
        self.docs, self.seed = qa.docs, seed
        self.answers = list(q.answers)
        self.template = (
            model_template.format(task_template=QA_TEMPLATE).replace("{query}", q.query)
            + QA_ANSWER_PREFIX
        )
        self.answer_prefix = QA_ANSWER_PREFIX
        self.min_units = max(1, len(q.gold))
        self.max_units: int | None = None
        self.pad_variants = 1

    def _doc(self, i: int) -> str:
        return self.docs[self.order[i % len(self.order)]]

    def _numbered_doc(self, i: int) -> str:
        return QA_DOCUMENT.format(i=i + 1, document=self._doc(i))

    def render(self, units: int, pad_chars: int, variant: int = 0) -> Draft:
        chosen = [self._doc(i) for i in range(units)]
        random.Random(self.seed).shuffle(chosen)
        context = "\n\n".join(QA_DOCUMENT.format(i=i + 1, document=d) for i, d in enumerate(chosen))
        if pad_chars:
            context += pad_text(self._numbered_doc, units, pad_chars, "\n\n")
        prompt = self.template.replace("{context}", context, 1)
        return Draft(prompt, list(self.answers), self.answer_prefix)
