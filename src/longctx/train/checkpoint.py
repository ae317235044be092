"""Checkpoints (model, optimizer, sampler, RNG) and the final Hugging Face export.

Layout of ``OUT/checkpoints/step_00000012/``, none of it ever unpickled on load:

- ``rank00000.safetensors`` … one per rank: that rank's local tensors (under FSDP2 the
  local shard of each DTensor, so no rank ever gathers the full optimizer state): model
  weights, AdamW state and the torch CPU/CUDA RNG states as byte tensors;
- ``rank00000.json``: the names, shapes and dtypes in that file, the Python and NumPy RNG
  states and any non-tensor optimizer state;
- ``index.json``: format version, world size, step and the rank files with their sizes;
- ``trainer.json``: step, tokens, sampler state and the resume key (settings plus the
  content identity of the data and model).

A resume needs the same world size (local shards are not resharded). Files in a pickle
format (``*.pt``, torch.distributed.checkpoint's ``.metadata``/``*.distcp``, older longctx
checkpoints) are refused with one line, never loaded.

``OUT/checkpoints/latest`` names the newest complete one; a folder is renamed into place
only after every rank finished writing, so a kill mid-save leaves the previous one intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from longctx.dtypes import EXPORT_DTYPES, TORCH_NAMES, normalize_dtype, resolve_dtype
from longctx.errors import LongctxError
from longctx.stage import write_json_atomic
from longctx.train.distributed import Dist, barrier, broadcast_object

FORMAT = "longctx-checkpoint-v1"
STEP_RE = re.compile(r"^step_\d{8}$")
# suffixes of files that torch/pickle-based tools write; we never open them
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".metadata", ".distcp", ".ckpt")


class CheckpointError(LongctxError):
    pass


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def rank_stem(rank: int) -> str:
    return f"rank{rank:05d}"


def latest_checkpoint(out: str | Path) -> Path | None:
    """The folder ``checkpoints/latest`` names, when it is a ``step_*`` folder with trainer.json."""
    root = checkpoint_root(out)
    marker = root / "latest"
    if not marker.is_file():
        return None
    try:
        name = marker.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not STEP_RE.match(name):  # never follow a marker out of the folder
        return None
    path = root / name
    return path if (path / "trainer.json").is_file() else None


# ------------------------------------------------------------------------------ RNG state
def _rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON part: python + numpy generators, tensor part: torch CPU/CUDA byte states)."""
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    js = {"python": [version, list(internal), gauss],
          "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()  # this rank's device only
    return js, tensors


def _set_rng_state(js: dict[str, Any], tensors: dict[str, Any]) -> None:
    import torch

    version, internal, gauss = js["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    name, keys, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss),
                         float(cached)))
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(tensors["rng/cuda"])


# ------------------------------------------------------------------------------ flat state
def local_tensor(t: Any) -> Any:
    """The tensor this rank holds: the local shard of a DTensor, else the tensor itself."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _entries(model_sd: dict[str, Any], optim_sd: dict[str, Any]) -> list[tuple[str, Any]]:
    """(stored name, value) for every model tensor and optimizer state value, in a fixed order."""
    out = [(f"model/{k}", v) for k, v in model_sd.items()]
    for param, state in optim_sd.get("state", {}).items():
        out += [(f"optim/{param}/{k}", v) for k, v in state.items()]
    return out


def _save_rank(path: Path, model_sd: dict[str, Any], optim_sd: dict[str, Any], d: Dist) -> None:
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    index: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, value in _entries(model_sd, optim_sd):
        if not isinstance(value, torch.Tensor):
            scalars[name] = value  # JSON-able optimizer hyper-state (none for AdamW today)
            continue
        t = local_tensor(value).detach()
        # tied weights share storage; safetensors refuses aliases, so store them once
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               tuple(t.stride()), str(t.dtype))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = t.to("cpu").contiguous()
        index[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    rng_js, rng_t = _rng_state()
    tensors.update({k: v.contiguous() for k, v in rng_t.items()})
    stem = rank_stem(d.rank)
    save_file(tensors, str(path / f"{stem}.safetensors"), metadata={"format": FORMAT})
    write_json_atomic(path / f"{stem}.json", {
        "format": FORMAT, "rank": d.rank, "world_size": d.world, "tensors": index,
        "aliases": aliases, "scalars": scalars, "rng": rng_js,
    })


def save_checkpoint(
    out: str | Path, step: int, model: Any, optimizer: Any, trainer: dict[str, Any],
    d: Dist, keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it)."""
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
    _save_rank(tmp, model_sd, optim_sd, d)
    barrier(d)
    if d.is_main:
        ranks = []
        for r in range(d.world):
            f = tmp / f"{rank_stem(r)}.safetensors"
            ranks.append({"tensors": f.name, "index": f"{rank_stem(r)}.json",
                          "bytes": f.stat().st_size})
        write_json_atomic(tmp / "index.json", {"format": FORMAT, "world_size": d.world,
                                               "step": step, "ranks": ranks})
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


# ------------------------------------------------------------------------------ loading
def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except (OSError, ValueError, RecursionError) as e:  # torn or not JSON
        raise CheckpointError(f"checkpoint file {path} is unreadable ({type(e).__name__})") from None


def check_checkpoint(path: Path, world: int) -> dict[str, Any]:
    """Refuse, with one line, a checkpoint that is not in this format or has another world size.

    Only file names and JSON are read: nothing here (or anywhere) unpickles.
    """
    for f in sorted(path.iterdir()):
        if f.name == "weights" or f.name.lower().endswith(PICKLE_SUFFIXES):
            raise CheckpointError(
                f"checkpoint {path}: {f.name} is a pickle-based file (an older longctx checkpoint "
                f"or one not written by longctx); longctx never unpickles checkpoint files"
            )
    index = _read_json(path / "index.json")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: index.json is not a {FORMAT} index")
    if index.get("world_size") != world:
        raise CheckpointError(
            f"checkpoint {path} was written by {index.get('world_size')} processes and this run "
            f"has {world}; resume with the same number of processes"
        )
    for r in range(world):  # every rank's files are there and readable (headers only)
        _check_rank_files(path, r)
    return index


def _check_rank_files(path: Path, rank: int) -> dict[str, Any]:
    """This rank's JSON index, after checking its safetensors header lists the same tensors."""
    from safetensors import SafetensorError, safe_open

    stem = rank_stem(rank)
    meta = _read_json(path / f"{stem}.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(
            meta.get("tensors"), dict) or not isinstance(meta.get("aliases", {}), dict):
        raise CheckpointError(f"checkpoint file {path / (stem + '.json')} is not a {FORMAT} index")
    file = path / f"{stem}.safetensors"
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            stored = {k for k in f.keys() if not k.startswith("rng/")}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint file {file} is unreadable ({e})") from None
    if stored != set(meta["tensors"]) - set(meta.get("aliases") or {}):
        raise CheckpointError(f"checkpoint file {file} does not hold the tensors its index lists")
    return meta


def read_trainer_state(out: str | Path, d: Dist) -> tuple[Path | None, dict[str, Any] | None]:
    """(latest checkpoint, its trainer.json) as seen by rank 0, shared with every rank.

    Raises :class:`CheckpointError` on every rank when the checkpoint cannot be resumed.
    """
    found: Any = None
    if d.is_main:
        try:
            p = latest_checkpoint(out)
            if p is not None:
                check_checkpoint(p, d.world)
                trainer = _read_json(p / "trainer.json")
                if not isinstance(trainer, dict):
                    raise CheckpointError(f"checkpoint file {p / 'trainer.json'} is not an object")
                found = (str(p), trainer)
        except CheckpointError as e:
            found = ("error", str(e))
    found = broadcast_object(found, d)
    if not found:
        return None, None
    if found[0] == "error":
        raise CheckpointError(found[1])
    return Path(found[0]), found[1]


def load_checkpoint(path: Path, model: Any, optimizer: Any, d: Dist) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG; returns ``trainer.json``."""
    import torch
    from safetensors import SafetensorError, safe_open
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    check_checkpoint(path, d.world)
    stem = rank_stem(d.rank)
    meta = _check_rank_files(path, d.rank)
    aliases = meta.get("aliases") or {}
    model_sd, optim_sd = get_state_dict(model, optimizer)
    file = path / f"{stem}.safetensors"
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            stored = set(f.keys())
            expected = set()
            for name, target in _entries(model_sd, optim_sd):
                expected.add(name)
                if not isinstance(target, torch.Tensor):
                    if name in (meta.get("scalars") or {}):
                        _set_scalar(optim_sd, name, meta["scalars"][name])
                    continue
                src = aliases.get(name, name)
                if src not in stored:
                    raise CheckpointError(
                        f"checkpoint {path} does not match this model: no tensor {name!r}"
                    )
                value = f.get_tensor(src)
                local = local_tensor(target)
                if tuple(value.shape) != tuple(local.shape) or value.dtype != local.dtype:
                    raise CheckpointError(
                        f"checkpoint {path} does not match this model: {name!r} is "
                        f"{tuple(value.shape)} {value.dtype}, expected {tuple(local.shape)} "
                        f"{local.dtype}"
                    )
                with torch.no_grad():
                    local.copy_(value)
            extra = sorted(n for n in stored if not n.startswith("rng/") and n not in expected)
            if extra:
                raise CheckpointError(
                    f"checkpoint {path} does not match this model: it holds {extra[0]!r}"
                )
            rng = {k: f.get_tensor(k) for k in stored if k.startswith("rng/")}
    except SafetensorError as e:
        raise CheckpointError(f"checkpoint file {file} is unreadable ({e})") from None
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    if "rng/torch" in rng and isinstance(meta.get("rng"), dict):
        _set_rng_state(meta["rng"], rng)
    return _read_json(path / "trainer.json")


def _set_scalar(optim_sd: dict[str, Any], name: str, value: Any) -> None:
    """Put a JSON-stored optimizer value (``optim/PARAM/KEY``) back into the state dict."""
    _, param, key = name.split("/", 2)
    if param in optim_sd.get("state", {}):
        optim_sd["state"][param][key] = value


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No transformers progress bars when stderr is not a terminal (logs stay one line a step)."""
    from transformers.utils import logging as hf_logging

    if sys.stderr.isatty() or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def export_hf(
    model: Any, wrapper: Any, tokenizer_dir: Path, dest: Path, d: Dist, dtype: str = "fp32"
) -> list[str]:
    """Write ``dest`` as a plain HF folder (safetensors, config.json, tokenizer files).

    ``dtype`` is ``fp32`` (the master weights as trained) or ``bf16`` (half the size);
    config.json records it in transformers' spelling (``float32``, ``bfloat16``).

    Collective: under FSDP the full state dict is gathered to rank 0 on CPU.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        wrapper, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    files: list[str] = []
    if d.is_main:
        sd = {k[len("lm."):] if k.startswith("lm.") else k: v for k, v in full.items()}
        name = normalize_dtype(dtype, EXPORT_DTYPES, what="export_dtype")
        out_dtype = resolve_dtype(name, "cpu")
        sd = {k: v.detach().to("cpu", out_dtype).contiguous() for k, v in sd.items()}
        if getattr(model.config, "tie_word_embeddings", False):
            sd.pop("lm_head.weight", None)  # FSDP hides the tie; the config restores it on load
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.config.use_cache = True
        with _quiet_progress():
            model.save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
        model.config.use_cache = False
        # save_pretrained records the in-memory dtype; record the exported one instead
        config_file = tmp / "config.json"
        hf_config = json.loads(config_file.read_text())
        hf_config["dtype"] = TORCH_NAMES[name]
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
