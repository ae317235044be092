"""Checkpoints (model, optimizer, sampler, RNG) and the final Hugging Face export.

Layout: ``OUT/checkpoints/step_00000012/`` holding ``weights/`` (torch.distributed.checkpoint:
each rank writes its own shards, so an FSDP run never gathers the full optimizer state),
``trainer.json`` (step, tokens, sampler state, resume key) and ``rng_rank{r}.pt``.
``OUT/checkpoints/latest`` names the newest complete one; a folder is renamed into place
only after every rank finished writing, so a kill mid-save leaves the previous one intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from longctx.errors import LongctxError
from longctx.stage import write_json_atomic
from longctx.train.distributed import Dist, barrier, broadcast_object


class CheckpointError(LongctxError):
    pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """One process without a process group is a supported DCP mode; silence its warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def latest_checkpoint(out: str | Path) -> Path | None:
    root = checkpoint_root(out)
    marker = root / "latest"
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    return path if (path / "trainer.json").is_file() else None


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: str | Path, step: int, model: Any, optimizer: Any, trainer: dict[str, Any],
    d: Dist, keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it)."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = checkpoint_root(out)
    name = f"step_{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _quiet():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "weights"))
    torch.save(_rng_state(), tmp / f"rng_rank{d.rank}.pt")
    barrier(d)
    if d.is_main:
        write_json_atomic(tmp / "trainer.json", {**trainer, "step": step})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        (root / "latest.tmp").write_text(name)
        os.replace(root / "latest.tmp", root / "latest")
        old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    barrier(d)
    return final


def load_checkpoint(path: Path, model: Any, optimizer: Any, d: Dist) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG; returns ``trainer.json``."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    with _quiet():
        dcp.load(state, checkpoint_id=str(path / "weights"))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    rng_file = path / f"rng_rank{d.rank}.pt"
    if rng_file.is_file():  # a different world size has no RNG state for new ranks
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((path / "trainer.json").read_text())


def read_trainer_state(out: str | Path, d: Dist) -> tuple[Path | None, dict[str, Any] | None]:
    """(latest checkpoint, its trainer.json) as seen by rank 0, shared with every rank."""
    found = None
    if d.is_main:
        p = latest_checkpoint(out)
        found = (str(p), json.loads((p / "trainer.json").read_text())) if p else None
    found = broadcast_object(found, d)
    if not found:
        return None, None
    return Path(found[0]), found[1]


def export_hf(
    model: Any, wrapper: Any, tokenizer_dir: Path, dest: Path, d: Dist, dtype: str = "float32"
) -> list[str]:
    """Write ``dest`` as a plain HF folder (safetensors, config.json, tokenizer files).

    ``dtype`` is ``float32`` (the master weights as trained) or ``bfloat16`` (half the size).

    Collective: under FSDP the full state dict is gathered to rank 0 on CPU.
    """
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        wrapper, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    files: list[str] = []
    if d.is_main:
        sd = {k[len("lm."):] if k.startswith("lm.") else k: v for k, v in full.items()}
        out_dtype = getattr(torch, dtype)
        sd = {k: v.detach().to("cpu", out_dtype).contiguous() for k, v in sd.items()}
        if getattr(model.config, "tie_word_embeddings", False):
            sd.pop("lm_head.weight", None)  # FSDP hides the tie; the config restores it on load
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.config.use_cache = True
        model.save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
        model.config.use_cache = False
        # save_pretrained records the in-memory dtype; record the exported one instead
        config_file = tmp / "config.json"
        hf_config = json.loads(config_file.read_text())
        hf_config["dtype"] = dtype
        config_file.write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        for f in sorted(Path(tokenizer_dir).iterdir()):
            if f.is_file() and (f.name.startswith("tokenizer") or f.name in (
                "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja",
            )):
                shutil.copy2(f, tmp / f.name)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        files = sorted(p.name for p in dest.iterdir())
    barrier(d)
    return files
