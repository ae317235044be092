"""Evaluation over several processes: one model per rank, one set of output files.

Under ``torchrun --nproc-per-node N -m longctx.eval ...`` (RANK/WORLD_SIZE/LOCAL_RANK in the
environment) a gloo process group carries only barriers and a few integers. Rank 0 claims
the output folder (its lock and ``running`` manifest); every rank then runs a contiguous
block of the stage's work order and appends one line per finished cell or row to its own
``NAME.rank{r}.jsonl``; after a barrier rank 0 folds those files into ``NAME.jsonl`` (the
file a single process appends to) and computes the results once, from the same records a
single process would have, so the JSON written is the same. A rerun with any world size
reads ``NAME.jsonl`` and every rank file, so nothing finished is computed again after a rank
dies. Contiguous blocks keep a rank's cells in prefix order (its KV cache reuse holds).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from longctx.stage import claimed_stage

T = TypeVar("T")
FAIL_HOOK_ENV = "LONGCTX_EVAL_FAIL_AT"  # test hook: "R:N" = rank R dies after its N-th record
# A rank that finished its share waits at the final barrier for the slowest one: hours on a
# long grid. A rank that dies ends the others through torchrun, not through this timeout.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the evaluation (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T], weights: Sequence[float] | None = None) -> list[T]:
        """This rank's contiguous block of ``items``: blocks of near-equal total weight (a
        cell's cost, e.g. its prompt length), each item in the block holding its midpoint."""
        if self.world == 1:
            return list(items)
        w = [1.0] * len(items) if weights is None else [float(x) for x in weights]
        total = sum(w) or 1.0
        mine, before = [], 0.0
        for item, wi in zip(items, w, strict=True):
            if min(int((before + wi / 2) / total * self.world), self.world - 1) == self.rank:
                mine.append(item)
            before += wi
        return mine

    def device(self, requested: str) -> str:
        """``cuda:LOCAL_RANK`` for auto/cuda when several ranks share a CUDA machine (ranks
        beyond the GPU count share GPUs round-robin)."""
        if self.world == 1 or requested not in ("auto", "cuda"):
            return requested
        import torch

        if not torch.cuda.is_available():
            return requested
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def total(self, value: int) -> int:
        """``value`` summed over ranks (also a barrier)."""
        if self.world == 1:
            return int(value)
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(value)], dtype=torch.int64)
        dist.all_reduce(t)
        return int(t.item())


def current() -> Ranks:
    """The ranks of this run; joins the process group when torchrun started several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    """Leave the process group :func:`current` joined (nothing without one)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def claimed_by_main(
    ranks: Ranks, out: str | Path, stage: str, cfg_hash: str, *, force: bool,
    inputs: Iterable[Any],
) -> Iterator[None]:
    """:func:`~longctx.stage.claimed_stage` on rank 0 only, held until every rank is done;
    when rank 0 cannot claim ``out`` every rank stops (rank 0 with the reason)."""
    with contextlib.ExitStack() as stack:
        failed: Exception | None = None
        if ranks.is_main:
            try:
                stack.enter_context(claimed_stage(out, stage, cfg_hash, force=force,
                                                  inputs=inputs))
            except Exception as e:  # noqa: BLE001 - re-raised below, after the others know
                failed = e
        if ranks.total(failed is not None):
            if failed is not None:
                raise failed
            from longctx.eval.generate import EvalError

            raise EvalError(f"--out {out}: rank 0 could not claim it (its error says why)")
        yield


def fail_hook(rank: int, written: int) -> None:
    """Test hook: with ``LONGCTX_EVAL_FAIL_AT=R:N`` rank R exits at once (no cleanup, as a
    killed process) after appending its N-th record."""
    if os.environ.get(FAIL_HOOK_ENV, "") == f"{rank}:{written}":
        os._exit(17)


class PartialLog:
    """A stage's finished records: ``NAME.jsonl`` plus ``NAME.rank{r}.jsonl`` of the ranks of
    a multi-process run (one JSON object per line, appended as each finishes)."""

    def __init__(self, folder: str | Path, name: str, ranks: Ranks) -> None:
        self.folder, self.name, self.ranks = Path(folder), name, ranks
        self.final = self.folder / f"{name}.jsonl"

    @property
    def own(self) -> Path:
        """The file this rank appends to (``NAME.jsonl`` for a single process)."""
        if self.ranks.world == 1:
            return self.final
        return self.folder / f"{self.name}.rank{self.ranks.rank}.jsonl"

    def _rank_files(self) -> list[Path]:
        pattern = re.compile(rf"{re.escape(self.name)}\.rank(\d+)\.jsonl")
        found = [(int(m.group(1)), p) for p in self.folder.glob(f"{self.name}.rank*.jsonl")
                 if (m := pattern.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def records(self) -> list[dict[str, Any]]:
        """Every whole record of every file (a line cut by a kill is skipped)."""
        out = []
        for path in [self.final, *self._rank_files()]:
            out.extend(_whole_records(path))
        return out

    @contextlib.contextmanager
    def sink(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """``write(record)`` appending to :attr:`own`, after cutting a line a kill left torn."""
        own = self.own
        if own.is_file():
            raw = own.read_bytes()
            if raw and not raw.endswith(b"\n"):
                with open(own, "r+b") as f:
                    f.truncate(raw.rfind(b"\n") + 1)
        written = 0
        with open(own, "a") as f:
            def write(record: dict[str, Any]) -> None:
                nonlocal written
                f.write(json.dumps(record) + "\n")
                f.flush()
                written += 1
                fail_hook(self.ranks.rank, written)

            yield write

    def merge(self) -> None:
        """Rank 0, after every rank finished: fold the rank files into ``NAME.jsonl`` (written
        whole, then the rank files removed; a crash in between only leaves duplicates)."""
        parts = self._rank_files()
        if not parts:
            return
        lines = [json.dumps(r) for p in [self.final, *parts] for r in _whole_records(p)]
        tmp = self.final.with_name(self.final.name + f".tmp{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, self.final)
        for p in parts:
            p.unlink()


def _whole_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def merged_result(
    ranks: Ranks, log: PartialLog, write: Callable[[], dict], result_file: Path
) -> dict:
    """After this rank's share: wait for all, let rank 0 merge ``log`` and ``write`` the
    outputs (returning their content), and give the other ranks the file it wrote."""
    ranks.barrier()
    if ranks.is_main:
        log.merge()
        result = write()
        ranks.barrier()
        return result
    ranks.barrier()
    return json.loads(result_file.read_text())

