"""Build the model to train: ``tiny`` (random 2-layer LLaMA), ``smollm2-135m`` or a local folder.

Every model is built by :func:`longctx.models.load_causal_lm`, the one builder eval uses
too; RoPE is applied to the *config* before the weights are loaded (``longctx.rope``), so
the rotary module is constructed with the trained frequencies. :class:`CausalLMWithLoss` wraps
the HF model so the loss is computed in sequence chunks (``loss.py``, by ``ce_impl``) and so
FSDP's root hooks see one forward that covers embeddings, decoder and head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longctx.train.config import TINY, TrainConfig, tokenizer_dir_for


def tiny_config(cfg: TrainConfig, vocab_size: int, bos: int | None, eos: int | None) -> Any:
    """A small LLaMA config sized to the tokenizer (for tests and the CPU demo)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.tiny_hidden,
        intermediate_size=cfg.tiny_intermediate,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        num_key_value_heads=cfg.tiny_kv_heads,
        max_position_embeddings=max(cfg.resolved_seq_len(), 2048),
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=eos,
        use_cache=False,
    )


def attention_implementation(device_type: str, doc_mask: str, attention: str = "auto") -> str:
    """transformers' attention for ``attention``; auto: flex_attention for document masks on
    GPU (block-sparse), sdpa otherwise. flash is FlashAttention 3, 2 or 4, whichever is
    installed (refused when none is, or off CUDA)."""
    if attention == "auto":
        return "flex_attention" if device_type == "cuda" and doc_mask == "mask" else "sdpa"
    if attention == "flash":
        from longctx.train.fastpaths import flash_implementation

        return flash_implementation(device_type)
    return {"sdpa": "sdpa", "flex": "flex_attention"}[attention]


def build_model(cfg: TrainConfig, *, device_type: str = "cpu") -> tuple[Any, Path, dict]:
    """(HF model in fp32 on CPU, tokenizer dir, rope_parameters) for ``cfg``."""
    import torch

    from longctx.data.tokenizer import load_tokenizer
    from longctx.models import load_causal_lm

    seq_len = cfg.resolved_seq_len()
    tok_dir = tokenizer_dir_for(cfg.model, cfg.data_manifest)
    if cfg.model == TINY:
        tok = load_tokenizer(tok_dir)
        source: Any = tiny_config(cfg, tok.vocab_size, tok.bos_id, tok.eos_id)
    else:
        source = cfg.model
    model, _, params = load_causal_lm(
        source,
        rope=train_rope(cfg),
        min_positions=seq_len,
        dtype=torch.float32,
        attn_implementation=attention_implementation(device_type, cfg.doc_mask, cfg.attention),
        seed=cfg.seed,
    )
    return model, tok_dir, params


def train_rope(cfg: TrainConfig) -> dict[str, Any]:
    """The :func:`longctx.rope.apply_rope` keywords of the RoPE ``cfg`` trains with."""
    return {
        "rope_type": cfg.rope_type,
        "theta": cfg.rope_theta,
        "factor": cfg.rope_factor,
        "original_max_positions": cfg.rope_original_max_positions,
        "low_freq_factor": cfg.rope_low_freq_factor,
        "high_freq_factor": cfg.rope_high_freq_factor,
    }


class CausalLMWithLoss:
    """Factory for the wrapper module (defined lazily so importing this file needs no torch)."""

    def __new__(cls, lm: Any, ce_chunk: int, ce_impl: str = "chunked") -> Any:  # type: ignore[misc]
        return _wrapper_class()(lm, ce_chunk, ce_impl)


_WRAPPER: Any = None


def _wrapper_class() -> Any:
    global _WRAPPER
    if _WRAPPER is not None:
        return _WRAPPER
    import torch

    from longctx.train.fastpaths import liger_cross_entropy
    from longctx.train.loss import chunked_cross_entropy, fused_cross_entropy

    losses = {"chunked": chunked_cross_entropy, "fused": fused_cross_entropy,
              "liger": liger_cross_entropy}

    class _CausalLMWithLoss(torch.nn.Module):
        """forward(input_ids, position_ids, targets) -> (sum of token losses, token count)."""

        def __init__(self, lm: Any, ce_chunk: int, ce_impl: str) -> None:
            super().__init__()
            if ce_impl not in losses:
                raise ValueError(f"ce_impl must be one of {', '.join(losses)} (got {ce_impl!r})")
            self.lm = lm
            self.ce_chunk = ce_chunk
            self.ce_impl = ce_impl

        def forward(self, input_ids: Any, position_ids: Any, targets: Any) -> Any:
            # attention_mask=None + position_ids resets: transformers builds the per-document
            # (block-diagonal causal) mask itself; use_cache=False keeps it from being skipped.
            out = self.lm.model(
                input_ids=input_ids, position_ids=position_ids, attention_mask=None,
                use_cache=False,
            )
            hidden = out.last_hidden_state
            loss = losses[self.ce_impl]
            return loss(hidden, self.lm.lm_head.weight, targets, self.ce_chunk)

    _WRAPPER = _CausalLMWithLoss
    return _WRAPPER


def count_parameters(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
