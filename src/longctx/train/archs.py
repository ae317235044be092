"""Decoder shapes the planner and the training benchmark know by name, and a folder's shape.

A shape is only the numbers that set memory and FLOPs (no weights): the benchmark builds
random-init LLaMA models from :func:`llama_kwargs`, and ``longctx plan`` counts parameters,
activations and FLOPs from the same numbers. Parameter counts assume a LLaMA-style decoder
(q/k/v/o projections, a gated MLP, two RMSNorms per layer, no biases); for other
architectures read from a folder they are an approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.errors import LongctxError


class ArchError(LongctxError):
    pass


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only LM that memory and FLOPs depend on."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    tie_word_embeddings: bool
    head_dim: int = 0  # 0: hidden_size // num_attention_heads

    @property
    def head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_dim(self) -> int:
        """Width of the attention output (heads x head_dim)."""
        return self.num_attention_heads * self.head

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values): kv_heads x head_dim."""
        return self.num_key_value_heads * self.head

    @property
    def layer_params(self) -> int:
        """One decoder layer: q, k, v, o projections, gate/up/down MLP, two RMSNorm weights."""
        h, i = self.hidden_size, self.intermediate_size
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        return attn + 3 * h * i + 2 * h

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def params(self) -> int:
        """Unique parameters (a tied head counted once), as ``count_parameters`` counts them."""
        head = 0 if self.tie_word_embeddings else self.embedding_params
        return (self.embedding_params + self.num_hidden_layers * self.layer_params
                + self.hidden_size + head)

    @property
    def matmul_params(self) -> int:
        """Parameters that take part in matmuls: all but the input embedding (a tied head
        counts once, as the head)."""
        return self.params - (0 if self.tie_word_embeddings else self.embedding_params)

    @property
    def root_params(self) -> int:
        """Parameters outside the decoder layers (embedding, final norm, untied head): FSDP's
        root unit, gathered for the whole forward and backward."""
        return self.params - self.num_hidden_layers * self.layer_params


ARCHS: dict[str, Shape] = {
    # SmolLM2-135M: the embedded model's config.json
    "smollm2-135m": Shape(49152, 576, 1536, 30, 9, 3, True),
    # 1B class: the shape of Llama-3.2-1B
    "llama-1b": Shape(128256, 2048, 8192, 16, 32, 8, True),
    # 8B class: the shape of Llama-3-8B
    "llama-8b": Shape(128256, 4096, 14336, 32, 32, 8, False),
    # `--model tiny` with TrainConfig's tiny_* defaults and the embedded tokenizer's vocab
    "tiny": Shape(49152, 64, 128, 2, 4, 2, True),
}


def llama_kwargs(name: str) -> dict[str, Any]:
    """``LlamaConfig`` keywords of a named shape (the benchmark builds its models from these)."""
    s = ARCHS[name]
    return dict(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                intermediate_size=s.intermediate_size, num_hidden_layers=s.num_hidden_layers,
                num_attention_heads=s.num_attention_heads,
                num_key_value_heads=s.num_key_value_heads,
                tie_word_embeddings=s.tie_word_embeddings)


def shape_of_config(config: Any) -> Shape:
    """The shape of an HF config (object or ``config.json`` dict)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    try:
        hidden = int(get("hidden_size"))
        heads = int(get("num_attention_heads"))
        return Shape(
            vocab_size=int(get("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(get("intermediate_size") or 4 * hidden),
            num_hidden_layers=int(get("num_hidden_layers")),
            num_attention_heads=heads,
            num_key_value_heads=int(get("num_key_value_heads") or heads),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            head_dim=int(get("head_dim") or 0),
        )
    except (TypeError, ValueError):
        raise ArchError("model config lacks hidden_size/num_attention_heads/num_hidden_layers/"
                        "vocab_size as numbers") from None


def resolve_shape(model: str) -> Shape:
    """A named shape (``smollm2-135m``, ``tiny``, ``llama-1b``, ``llama-8b``) or a local HF
    folder's, read from its checked ``config.json`` (no weights are read)."""
    if model in ARCHS:
        return ARCHS[model]
    if not Path(model).is_dir():
        raise ArchError(f"model {model!r}: not one of {', '.join(ARCHS)} nor a local HF model "
                        f"folder")
    from longctx.models import check_model_dir, resolve_model_dir

    config = check_model_dir(resolve_model_dir(model))
    try:
        return shape_of_config(config)
    except ArchError as e:
        raise ArchError(f"model {model}: {e}") from None

