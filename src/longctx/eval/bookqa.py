"""InfiniteBench En.QA ("longbook_qa_eng") from a local jsonl file the user provides.

Each record has ``context`` (the book), ``input`` (the question) and ``answer`` (a list of
gold answers; a string is accepted too). The prompt is tokenized and, when longer than
``truncate`` tokens, cut in the middle (first half + last half kept, as InfiniteBench does),
so the question at the end always survives. The metric is InfiniteBench's ``qa_f1_score``
(see ``scorers``), reported in 0..1 (the paper prints it x100: 27.4 for its 7B model).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.cliopts import opt
from longctx.config import to_dict
from longctx.eval import scorers
from longctx.eval.generate import EvalError, first_line_done, greedy_generate, load_eval_model
from longctx.eval.model_args import EvalModelArgs
from longctx.stage import run_hash, sha256_file, write_json_atomic, write_manifest

# Modelled on InfiniteBench's En.QA prompt: base models complete "Answer:"; chat models get
# the same instruction, book and question as one user turn in their own chat template.
INSTRUCTION = "Read the book and answer the question. Be very concise in your answer."
PROMPT_TEMPLATE = INSTRUCTION + "\n\n{context}\n\nQuestion: {question}\nAnswer:"
CHAT_USER_TEMPLATE = INSTRUCTION + "\n\n{context}\n\nQuestion: {question}"


@dataclass
class BookQAConfig(EvalModelArgs):
    """``longctx eval bookqa`` settings."""

    data: str = opt("", "InfiniteBench longbook_qa_eng.jsonl (fields context, input, answer).")
    truncate: int = opt(128000, "Middle-truncate prompts to this many tokens.")
    max_new_tokens: int = opt(32, "Greedy decoding budget per question.")
    max_items: int | None = opt(None, "Answer only the first N.")
    chat: str = opt("auto", "auto (use the model's chat template when it has one), on, or off "
                    "(complete 'Answer:' like a base model).")
    prefill_chunk: int = opt(0, "Prompt tokens per forward pass (0 = the whole prompt at once).")

    def validate(self) -> None:
        if not self.data:
            raise EvalError("data: give the longbook_qa_eng jsonl file (--data FILE)")
        if self.truncate < 16:
            raise EvalError(f"truncate must be at least 16 tokens, got {self.truncate}")
        if self.max_new_tokens <= 0:
            raise EvalError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.chat not in ("auto", "on", "off"):
            raise EvalError(f"chat: expected auto, on or off, got {self.chat!r}")


@dataclass(frozen=True)
class QAItem:
    id: str
    context: str
    question: str
    answers: list[str]


def read_items(path: str | Path, max_items: int | None = None) -> list[QAItem]:
    """Parse the jsonl; a bad record is an error naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"bookqa data file not found: {p}")
    items = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise EvalError(f"{p}:{n}: not valid JSON: {e}") from None
            missing = [k for k in ("context", "input", "answer") if k not in rec]
            if missing:
                raise EvalError(f"{p}:{n}: record lacks field(s) {missing}")
            answers = rec["answer"] if isinstance(rec["answer"], list) else [rec["answer"]]
            answers = [str(a) for a in answers]
            if not answers:
                raise EvalError(f"{p}:{n}: empty 'answer' list")
            items.append(
                QAItem(str(rec.get("id", n - 1)), str(rec["context"]), str(rec["input"]), answers)
            )
            if max_items is not None and len(items) >= max_items:
                break
    if not items:
        raise EvalError(f"{p}: no records")
    return items


def middle_truncate(ids: list[int], limit: int) -> list[int]:
    """Keep the first ``limit // 2`` and the last ``limit - limit // 2`` ids."""
    if len(ids) <= limit:
        return list(ids)
    head = limit // 2
    return list(ids[:head]) + list(ids[len(ids) - (limit - head) :])


def use_chat(tok: Any, mode: str) -> bool:
    """``auto``: use the chat template when the tokenizer has one (instruct models such as
    the embedded SmolLM2-Instruct end the turn at once when asked to complete "Answer:")."""
    if mode == "off":
        return False
    has = bool(getattr(tok.hf, "chat_template", None))
    if mode == "on" and not has:
        raise EvalError(f"chat: on, but tokenizer {tok.name} has no chat template")
    return has


def build_prompt(tok: Any, item: QAItem, chat: bool) -> str:
    if not chat:
        return PROMPT_TEMPLATE.format(context=item.context, question=item.question)
    user = CHAT_USER_TEMPLATE.format(context=item.context, question=item.question)
    return tok.hf.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
    )


def run_bookqa(
    cfg: BookQAConfig, out_dir: str | Path, *, progress: bool | None = None, force: bool = False
) -> dict:
    """Claim ``out_dir`` (lock, foreign-folder and input-overlap checks), then run."""
    from longctx.stage import claimed_stage

    with claimed_stage(out_dir, "eval.bookqa", run_hash(cfg), force=force,
                       inputs=[cfg.data, cfg.model]):
        return _run_bookqa(cfg, out_dir, progress=progress)


def _run_bookqa(cfg: BookQAConfig, out_dir: str | Path, *, progress: bool | None = None) -> dict:
    """Answer every item greedily, score with qa_f1_score, write bookqa.json + manifest."""
    from longctx.data.tokenizer import load_tokenizer
    from longctx.progress import progress_bar

    t0 = time.perf_counter()
    items = read_items(cfg.data, cfg.max_items)
    model, folder = load_eval_model(
        cfg.model,
        rope_theta=cfg.rope_theta,
        max_length=cfg.truncate + cfg.max_new_tokens,
        dtype=cfg.dtype,
        device=cfg.device,
    )
    tok = load_tokenizer(folder)
    stop_ids = [i for i in (tok.eos_id,) if i is not None]
    chat = use_chat(tok, cfg.chat)
    records: list[dict[str, Any]] = []
    with progress_bar(progress, transient=True) as bar:
        task = bar.add_task("bookqa", total=len(items))
        for it in items:
            t1 = time.perf_counter()
            text = build_prompt(tok, it, chat)
            ids = tok.encode_plain([text])[0]
            prompt = middle_truncate(ids, cfg.truncate)
            new = greedy_generate(
                model,
                prompt,
                max_new_tokens=cfg.max_new_tokens,
                stop_ids=stop_ids,
                decode=lambda x: tok.decode(x, skip_special_tokens=True),
                stop_text=first_line_done,
                prefill_chunk=cfg.prefill_chunk,
            )
            response = tok.decode(new, skip_special_tokens=True).strip()
            records.append(
                {
                    "id": it.id,
                    "question": it.question,
                    "answers": it.answers,
                    "response": response,
                    "f1": scorers.qa_f1_score(response, it.answers),
                    "prompt_tokens": len(prompt),
                    "truncated": len(ids) > len(prompt),
                    "seconds": time.perf_counter() - t1,
                }
            )
            bar.advance(task)
    f1 = sum(r["f1"] for r in records) / len(records)
    result = {
        "stage": "eval.bookqa",
        "model": cfg.model,
        "f1": f1,
        "n": len(records),
        "metric": "InfiniteBench qa_f1_score (max token F1 over gold answers), 0..1",
        "truncate": cfg.truncate,
        "prompt_template": CHAT_USER_TEMPLATE if chat else PROMPT_TEMPLATE,
        "chat_template": chat,
        "scorer_version": scorers.SCORER_VERSION,
        "items": records,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "bookqa.json", result)
    write_manifest(
        out,
        {
            "stage": "eval.bookqa",
            "status": "done",
            "config": to_dict(cfg),
            "config_hash": run_hash(cfg),
            "counts": {"items": len(records)},
            "input": {"data": str(cfg.data), "sha256": sha256_file(cfg.data)},
            "checksums": {"bookqa.json": sha256_file(out / "bookqa.json")},
            "f1": f1,
            "seconds": time.perf_counter() - t0,
        },
    )
    return result
