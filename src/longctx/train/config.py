"""``TrainConfig``: every knob of ``longctx train``; flag names equal config keys.

``validate()`` runs before any model is built or anything is written: it checks values
(every number finite and in a sane range), the data folder (a finished ``data build``), the
sequence length against what the shards hold, that ``out`` is not one of the inputs (nor
inside or around one), that a model folder loads without running its code or unpickling,
and that the data was tokenized with the model's tokenizer (content fingerprint). Every
error names the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.cliopts import opt
from longctx.config import ConfigError, parse_count
from longctx.dtypes import EXPORT_DTYPES, PRECISIONS, DtypeError, normalize_dtype
from longctx.errors import LongctxError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
SCHEDULES = ("constant", "cosine")
DOC_MASKS = ("none", "mask")
DEVICES = ("auto", "cpu", "cuda")
CE_IMPLS = ("chunked", "fused", "liger")
CHECKPOINT_POLICIES = ("full", "selective")
ATTENTIONS = ("auto", "sdpa", "flex", "flash")
TINY = "tiny"
DATA_STAGE = "data.build"
EVAL_STAGES = ("data.build", "data.heldout")
MAX_SEQ_LEN = 1 << 24  # 16M tokens per row: far beyond any model this trains
MAX_ROWS_PER_STEP = 1 << 20
MAX_TINY = 1 << 16

# Keys that define *what* is trained; a resume with different values is refused. The data
# and a model folder enter by content identity (see ``resume_key``), not by path.
RESUME_KEYS = (
    "seq_len", "batch_tokens", "micro_batch", "seed", "rope_theta",
    "rope_type", "rope_factor", "rope_original_max_positions", "doc_mask", "tiny_layers",
    "tiny_hidden", "tiny_heads", "tiny_kv_heads", "tiny_intermediate",
)

# float keys: (low, high, low is exclusive, high is exclusive, what the range means)
FLOAT_RANGES: dict[str, tuple[float, float, bool, bool, str]] = {
    "lr": (0.0, 1.0, True, False, "must be positive and at most 1"),
    "min_lr_ratio": (0.0, 1.0, False, False, "must be in [0, 1]"),
    "weight_decay": (0.0, 1.0, False, False, "must be >= 0 and at most 1"),
    "beta1": (0.0, 1.0, False, True, "must be in [0, 1)"),
    "beta2": (0.0, 1.0, False, True, "must be in [0, 1)"),
    "grad_clip": (0.0, 1e9, False, False, "must be >= 0 (0 disables clipping)"),
    "rope_theta": (0.0, 1e15, True, False, "must be positive and at most 1e15"),
    "rope_factor": (1.0, 1e4, False, False, "must be in [1, 10000]"),
    "rope_low_freq_factor": (0.0, 1e4, True, False, "must be positive and at most 10000"),
    "rope_high_freq_factor": (0.0, 1e4, True, False, "must be positive and at most 10000"),
    "gpu_memory_gb": (0.0, 1e6, True, False, "must be positive and at most 1e6"),
}


_R, _M, _O, _T = "RoPE", "Memory / distributed", "Optimization", "Tiny model (--model tiny)"
_E = "Evaluation during training"


@dataclass
class TrainConfig:
    """Continual pretraining of a causal LM on packed shards (see ``longctx train --help``)."""

    data: str = opt("", "Packed data folder (from `longctx data build`).")
    model: str = opt(TINY, "'smollm2-135m' (embedded), 'tiny' (random 2-layer LLaMA sized to "
                     "the data's tokenizer) or a local HF model folder.")
    out: str = opt("", "Output folder (checkpoints, metrics, final/).")
    force: bool = opt(False, "Take over an --out that holds files longctx did not write, and "
                      "discard a checkpoint there of another run (other settings, data or model "
                      "content, world size, or an unsafe format) to start over.")
    steps: int = opt(0, "Optimizer steps (larger than a previous run = resume).")
    tokens: str = opt("", "Train tokens instead of --steps, e.g. 5B.")
    seq_len: int = opt(0, "Training length; must divide the data's row length.",
                       show="the data's")
    batch_tokens: str = opt("", "Global tokens per optimizer step, e.g. 4M (accumulation is "
                            "derived).", show="one sequence")
    micro_batch: int = opt(1, "Rows per forward pass per rank.")
    lr: float = opt(2e-5, "Peak learning rate (paper: 2e-5).", panel=_O)
    warmup_steps: int = opt(0, "Linear warmup steps.", panel=_O)
    schedule: str = opt("constant", "constant (paper) | cosine.", panel=_O)
    min_lr_ratio: float = opt(0.1, "Cosine floor as a fraction of lr.", panel=_O)
    weight_decay: float = opt(0.0, "AdamW weight decay.", panel=_O)
    beta1: float = opt(0.9, "AdamW beta1.", panel=_O)
    beta2: float = opt(0.95, "AdamW beta2.", panel=_O)
    grad_clip: float = opt(1.0, "Gradient norm clip, 0 = off.", panel=_O)
    rope_theta: float | None = opt(None, "RoPE base, e.g. 500000 (Xiong et al.) or 2.08e6 "
                                   "(paper).", panel=_R, show="the model's")
    rope_type: str = opt("default", "default | linear | dynamic | yarn | llama3.", panel=_R)
    rope_factor: float | None = opt(None, "Scaling factor (non-default types).", panel=_R)
    rope_original_max_positions: int | None = opt(
        None, "Pre-training context (yarn, llama3; dynamic's L0).", panel=_R,
        show="the model's max positions")
    rope_low_freq_factor: float = opt(1.0, "llama3 low_freq_factor.", panel=_R)
    rope_high_freq_factor: float = opt(4.0, "llama3 high_freq_factor.", panel=_R)
    doc_mask: str = opt("none", "none: attend across documents (paper) | mask: reset positions "
                        "per document, block attention between documents and skip each "
                        "document's first token in the loss.")
    save_every: int = opt(0, "Checkpoint every K steps (0 = only at the end/signal).")
    keep_checkpoints: int = opt(2, "Checkpoints kept.")
    seed: int = opt(0, "Seed of data order and tiny init.")
    precision: str = opt("auto", "auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16.", panel=_M)
    device: str = opt("auto", "auto | cpu | cuda.", panel=_M)
    checkpointing: bool = opt(True, "Activation checkpointing.", panel=_M)
    checkpoint_policy: str = opt("full", "With --checkpointing: full (recompute each decoder "
                                 "layer) | selective (keep matmul and attention outputs, "
                                 "recompute the cheap elementwise ops).", panel=_M)
    activation_offload: bool = opt(False, "Move each decoder layer's saved activations to "
                                   "pinned host memory, prefetched in backward (CUDA only).",
                                   panel=_M)
    compile: bool = opt(False, "torch.compile each decoder layer (regional compilation).",
                        panel=_M)
    attention: str = opt("auto", "auto (flex for --doc-mask mask on GPU, sdpa otherwise) | "
                         "sdpa | flex | flash (needs flash-attn and a GPU).", panel=_M)
    ce_chunk: int = opt(4096, "Tokens per cross-entropy chunk (0 = whole sequence).", panel=_M)
    ce_impl: str = opt("chunked", "chunked (LM head recomputed in backward) | fused (loss "
                       "gradient computed in the forward, chunk by chunk) | liger "
                       "(Liger-Kernel, CUDA only).", panel=_M)
    fsdp: bool = opt(False, "FSDP2 sharding (automatic under torchrun).", panel=_M)
    cpu_offload: bool = opt(False, "Keep params/grads/optimizer on the host (FSDP2).", panel=_M)
    gpu_memory_gb: float | None = opt(None, "Memory per GPU for the preflight check.",
                                      panel=_M, show="the device's")
    preflight: bool = opt(True, "Refuse configs estimated not to fit.", panel=_M)
    eval_data: str | None = opt(None, "Held-out packed folder for periodic eval loss.",
                                panel=_E, show="DATA/heldout when the build has one")
    eval_every: int = opt(0, "Evaluate the current weights every K steps (and at the end): "
                          "held-out loss by position bucket and a small needle grid, logged "
                          "in metrics.jsonl (0 = off).", panel=_E)
    eval_rows: int = opt(4, "Held-out rows per evaluation.", panel=_E)
    eval_buckets: list[str] = opt(factory=list, help="Position buckets LO-HI of the held-out "
                                  "loss (as `eval loss --buckets`).", panel=_E,
                                  show="quarters of seq_len: 0-S/4,S/4-S/2,S/2-S")
    eval_attention: str = opt("doc", "Held-out loss positions (as `eval loss --attention`): "
                              "doc | row.", panel=_E)
    eval_key_tokens: bool = opt(False, "Also the loss on key tokens (as `eval loss "
                                "--key-tokens`, marked by the current weights).", panel=_E,
                                flags=("--eval-key-tokens",))
    eval_key_context: int = opt(4096, "Key tokens: K, tokens of context of the short pass (as "
                                "`eval loss --key-context`).", panel=_E)
    eval_key_stride: int = opt(1024, "Key tokens: stride of the short windows (as `eval loss "
                               "--key-stride`).", panel=_E)
    eval_needle: str = opt("ruler", "Needle of the grid (as `eval needle --needle`): ruler | "
                           "paper.", panel=_E)
    eval_needle_lengths: list[int] = opt(factory=lambda: [0], help="Needle prompt lengths in "
                                         "tokens, 0 = seq_len; empty ('') = no needle grid.",
                                         panel=_E)
    eval_needle_depths: list[int] = opt(factory=lambda: [0, 50, 100], help="Needle depths in "
                                        "percent (0..100).", panel=_E)
    eval_haystack: str = opt("", "Needle haystack (as `eval needle --haystack`).", panel=_E,
                             show="the Python reference manual")
    tensorboard: bool = opt(False, "Also log to OUT/tensorboard (needs tensorboard).")
    export_dtype: str = opt("fp32", "Dtype of OUT/final: fp32 | bf16 (float32 and bfloat16 "
                            "are read as these).")
    tiny_layers: int = opt(2, "tiny: decoder layers.", panel=_T)
    tiny_hidden: int = opt(64, "tiny: hidden size.", panel=_T)
    tiny_heads: int = opt(4, "tiny: attention heads.", panel=_T)
    tiny_kv_heads: int = opt(2, "tiny: key/value heads.", panel=_T)
    tiny_intermediate: int = opt(128, "tiny: MLP size.", panel=_T)

    # ------------------------------------------------------------------ derived values
    @property
    def data_manifest(self) -> dict[str, Any]:
        from longctx.stage import read_manifest

        return (read_manifest(self.data) or {}) if self.data else {}

    @property
    def model_is_folder(self) -> bool:
        from longctx.embedded import EMBEDDED_NAME

        return self.model not in (TINY, EMBEDDED_NAME)

    def resolved_seq_len(self) -> int:
        """``seq_len`` or, when 0, the data's row length."""
        return self.seq_len or int(self.data_manifest.get("seq_len", 0))

    def resolved_batch_tokens(self) -> int:
        """Global tokens per optimizer step (default: one sequence)."""
        if not self.batch_tokens:
            return self.resolved_seq_len()
        return parse_count(self.batch_tokens, name="batch_tokens")

    def resolved_steps(self) -> int:
        if self.steps:
            return self.steps
        return -(-parse_count(self.tokens, name="tokens") // self.resolved_batch_tokens())

    def resolved_eval_buckets(self) -> list[str]:
        """``eval_buckets`` or, when empty, the quarters 0-S/4, S/4-S/2, S/2-S of seq_len."""
        if self.eval_buckets:
            return list(self.eval_buckets)
        s = self.resolved_seq_len()
        cuts = sorted({0, s // 4, s // 2, s})
        return [f"{a}-{b}" for a, b in zip(cuts[:-1], cuts[1:], strict=False)]

    def resolved_needle_lengths(self) -> list[int]:
        """Needle lengths with 0 read as seq_len (sorted, no repeats)."""
        return sorted({n or self.resolved_seq_len() for n in self.eval_needle_lengths})

    def resume_view(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: d[k] for k in RESUME_KEYS}

    def resume_key(self) -> dict[str, Any]:
        """What must match to resume: the settings above plus the *content* identity of the
        data (its manifest's config hash and shard checksums) and of a model folder (the
        sha256 of its files). Moving the data elsewhere resumes; rebuilding it does not."""
        from longctx.stage import path_identity

        key = self.resume_view()
        key["data_identity"] = path_identity(self.data)
        key["model"] = "folder" if self.model_is_folder else self.model
        key["model_identity"] = path_identity(self.model) if self.model_is_folder else None
        return key

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Fail fast, naming the key and value, before any model or data is loaded."""
        self._validate_values()
        self._validate_paths()
        self._validate_data()

    def _validate_values(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"config key {key!r}: {why} (got {getattr(self, key)!r})")

        if not self.data:
            raise ConfigError("config key 'data': required (a packed folder from `data build`)")
        if not self.out:
            raise ConfigError("config key 'out': required (the output folder)")
        for key, (lo, hi, lo_open, hi_open, why) in FLOAT_RANGES.items():
            v = getattr(self, key)
            if v is None and key in ("rope_theta", "rope_factor", "gpu_memory_gb"):
                continue
            ok = isinstance(v, (int, float)) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                raise bad(key, f"{why}, a finite number")
        if self.steps < 0:
            raise bad("steps", "must be >= 0")
        if not self.steps and not self.tokens:
            raise ConfigError("config keys 'steps'/'tokens': give one of them (e.g. --steps 100)")
        if self.tokens:
            parse_count(self.tokens, name="tokens")
        if self.batch_tokens:
            parse_count(self.batch_tokens, name="batch_tokens")
        if not 0 <= self.seq_len <= MAX_SEQ_LEN:
            raise bad("seq_len", f"must be in [0, {MAX_SEQ_LEN}] (0 = the data's row length)")
        for key in ("micro_batch", "tiny_layers", "tiny_hidden", "tiny_heads", "tiny_kv_heads",
                    "tiny_intermediate", "keep_checkpoints", "eval_rows"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be positive")
        for key in ("tiny_layers", "tiny_hidden", "tiny_heads", "tiny_kv_heads",
                    "tiny_intermediate"):
            if getattr(self, key) > MAX_TINY:
                raise bad(key, f"must be at most {MAX_TINY}")
        if self.micro_batch > MAX_ROWS_PER_STEP:
            raise bad("micro_batch", f"must be at most {MAX_ROWS_PER_STEP}")
        for key in ("warmup_steps", "save_every", "eval_every", "ce_chunk"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        self._validate_eval()
        if self.rope_original_max_positions is not None and not (
            0 < self.rope_original_max_positions <= MAX_SEQ_LEN
        ):
            raise bad("rope_original_max_positions", f"must be in [1, {MAX_SEQ_LEN}]")
        for key, allowed in {"precision": PRECISIONS, "export_dtype": EXPORT_DTYPES}.items():
            try:  # normalised in place: old YAML's float32/bfloat16 become fp32/bf16
                setattr(self, key, normalize_dtype(getattr(self, key), allowed, what=key))
            except DtypeError:
                raise bad(key, f"must be one of {', '.join(allowed)}") from None
        choices = {"rope_type": ROPE_TYPES, "schedule": SCHEDULES, "doc_mask": DOC_MASKS,
                   "device": DEVICES, "ce_impl": CE_IMPLS,
                   "checkpoint_policy": CHECKPOINT_POLICIES, "attention": ATTENTIONS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise bad(key, f"must be one of {', '.join(allowed)}")
        self._validate_fast_paths()
        if self.rope_type != "default":
            if self.rope_factor is None or not self.rope_factor >= 1:
                raise ConfigError(
                    f"config key 'rope_factor': rope_type {self.rope_type!r} needs a factor >= 1 "
                    f"(got {self.rope_factor!r})"
                )
        if self.rope_type in ("yarn", "llama3") and not self.rope_original_max_positions:
            raise ConfigError(
                f"config key 'rope_original_max_positions': rope_type {self.rope_type!r} needs the "
                f"pre-training context length (got {self.rope_original_max_positions!r})"
            )
        if self.tiny_hidden % self.tiny_heads or self.tiny_heads % self.tiny_kv_heads:
            raise ConfigError(
                f"config keys 'tiny_hidden'/'tiny_heads'/'tiny_kv_heads': hidden must divide by "
                f"heads and heads by kv heads (got {self.tiny_hidden}/{self.tiny_heads}/"
                f"{self.tiny_kv_heads})"
            )

    def _validate_fast_paths(self) -> None:
        """Refuse, in one line, a fast path this machine cannot run (not installed, or CUDA
        only while ``device`` is cpu, or auto with no GPU visible)."""
        from longctx.train.fastpaths import FastPathError, check_fast_paths, resolved_device_type

        if self.ce_impl != "liger" and not self.activation_offload and self.attention != "flash":
            return  # nothing device-bound asked for; keeps validate() free of the torch import
        try:
            check_fast_paths(self, resolved_device_type(self))
        except FastPathError as e:
            raise ConfigError(str(e)) from None

    def _validate_eval(self) -> None:
        """The evaluation-during-training keys, with the meaning `eval loss`/`eval needle` give them."""
        from longctx.eval.generate import EvalError
        from longctx.eval.loss import parse_buckets

        if self.eval_attention not in ("doc", "row"):
            raise ConfigError(f"config key 'eval_attention': must be doc or row "
                              f"(got {self.eval_attention!r})")
        if self.eval_needle not in ("paper", "ruler"):
            raise ConfigError(f"config key 'eval_needle': must be ruler or paper "
                              f"(got {self.eval_needle!r})")
        if self.eval_buckets:
            try:
                parse_buckets(self.eval_buckets)
            except EvalError as e:
                raise ConfigError(f"config key 'eval_buckets': {e}") from None
        if any(not 0 <= n <= MAX_SEQ_LEN for n in self.eval_needle_lengths):
            raise ConfigError(f"config key 'eval_needle_lengths': lengths must be in "
                              f"[0, {MAX_SEQ_LEN}] (0 = seq_len) (got {self.eval_needle_lengths!r})")
        if self.eval_needle_lengths and (
                not self.eval_needle_depths
                or any(not 0 <= x <= 100 for x in self.eval_needle_depths)):
            raise ConfigError(f"config key 'eval_needle_depths': need percentages in 0..100 "
                              f"(got {self.eval_needle_depths!r})")
        if self.eval_key_context <= 0 or self.eval_key_stride <= 0:
            raise ConfigError(f"config keys 'eval_key_context'/'eval_key_stride': must be "
                              f"positive (got {self.eval_key_context}/{self.eval_key_stride})")
        if self.eval_haystack and not Path(self.eval_haystack).exists():
            raise ConfigError(f"config key 'eval_haystack': not found: {self.eval_haystack!r}")

    def _validate_paths(self) -> None:
        """``out`` may not be an input, nor inside or around one (checked before any write)."""
        out = Path(self.out).resolve()
        inputs = {"data": self.data, "eval_data": self.eval_data,
                  "model": self.model if self.model_is_folder else None}
        for key, value in inputs.items():
            if not value or not Path(value).exists():
                continue
            p = Path(value).resolve()
            if p == out or out in p.parents or p in out.parents:
                raise ConfigError(
                    f"config keys 'out'/{key!r}: --out {self.out} overlaps the {key} folder "
                    f"{value}; write the run to another folder"
                )

    def _validate_data(self) -> None:
        folder = Path(self.data)
        if not folder.is_dir():
            raise ConfigError(f"config key 'data': folder not found: {self.data!r}")
        manifest = _packed_manifest("data", self.data, (DATA_STAGE,))
        if manifest.get("status", "done") != "done":
            raise ConfigError(
                f"config key 'data': build in {self.data!r} did not finish "
                f"(status {manifest.get('status')!r})"
            )
        data_len = int(manifest.get("seq_len", 0))
        if self.seq_len:
            if self.seq_len > data_len or data_len % self.seq_len:
                raise ConfigError(
                    f"config key 'seq_len': {self.seq_len} must divide the data's row length "
                    f"{data_len} (rows of {self.data!r} are split into seq_len pieces)"
                )
        seq = self.resolved_seq_len()
        bt = self.resolved_batch_tokens()
        if bt // seq > MAX_ROWS_PER_STEP:
            raise ConfigError(
                f"config key 'batch_tokens': {bt} tokens = {bt // seq} rows per step, more than "
                f"{MAX_ROWS_PER_STEP}"
            )
        if bt % (seq * self.micro_batch):
            raise ConfigError(
                f"config key 'batch_tokens': {bt} must be a multiple of seq_len x micro_batch = "
                f"{seq} x {self.micro_batch}"
            )
        if self.eval_every and self.eval_data is None:
            self.eval_data = self._default_eval_data()
        if self.eval_data is not None:
            if not Path(self.eval_data).is_dir():
                raise ConfigError(
                    f"config key 'eval_data': {self.eval_data!r} is not a packed folder with "
                    f"manifest.json"
                )
            eval_manifest = _packed_manifest("eval_data", self.eval_data, EVAL_STAGES)
            eval_len = int(eval_manifest.get("seq_len", 0))
            if eval_len % seq:
                raise ConfigError(
                    f"config key 'eval_data': rows of {self.eval_data!r} hold {eval_len} tokens, "
                    f"not a multiple of seq_len {seq}"
                )
        if self.model_is_folder:
            from longctx.models import check_model_dir, resolve_model_dir

            check_model_dir(resolve_model_dir(self.model))
        self.check_tokenizer()

    def _default_eval_data(self) -> str:
        """The data build's held-out split (``DATA/heldout``), which --eval-every needs."""
        from longctx.eval.loss import resolve_split

        folder, split = resolve_split(self.data)
        if split != "heldout":
            raise ConfigError(
                f"config key 'eval_every': {self.eval_every} needs held-out rows: {self.data!r} "
                f"has no held-out split (build it with --eval-tokens) and --eval-data is not set"
            )
        return str(folder)

    def check_tokenizer(self) -> None:
        """Refuse a model whose tokenizer differs from the one the data was packed with."""
        from longctx.data.tokenizer import load_tokenizer
        from longctx.pack.shards import check_tokenizer_match

        tok_dir = tokenizer_dir_for(self.model, self.data_manifest)
        model_sha = load_tokenizer(tok_dir).fingerprint
        data_sha = (self.data_manifest.get("tokenizer") or {}).get("sha256")
        try:
            check_tokenizer_match(data_sha, model_sha, data_dir=self.data, model=self.model)
        except Exception as e:
            raise ConfigError(f"config keys 'model'={self.model!r} / 'data'={self.data!r}: {e}") from None
        if self.eval_data:
            from longctx.stage import read_manifest

            eval_sha = ((read_manifest(self.eval_data) or {}).get("tokenizer") or {}).get("sha256")
            if eval_sha != model_sha:
                raise ConfigError(
                    f"config key 'eval_data': {self.eval_data!r} was packed with another tokenizer "
                    f"(sha256 {str(eval_sha)[:12]}… vs model {model_sha[:12]}…)"
                )


class TrainModelError(LongctxError):
    pass


def tokenizer_dir_for(model: str, data_manifest: dict[str, Any]) -> Path:
    """The folder holding the tokenizer of ``model`` (for ``tiny``: the data's tokenizer)."""
    from longctx.data.tokenizer import resolve_tokenizer_dir
    from longctx.models import resolve_model_dir

    if model == TINY:
        name = (data_manifest.get("tokenizer") or {}).get("name")
        try:
            return resolve_tokenizer_dir(name)[1]
        except LongctxError as e:
            raise TrainModelError(
                f"model 'tiny' uses the data's tokenizer {name!r}, which cannot be found: {e}"
            ) from None
    folder = resolve_model_dir(model)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        raise TrainModelError(f"model {model}: folder {folder} has no tokenizer files")
    return folder


def _packed_manifest(key: str, folder: str, stages: tuple[str, ...]) -> dict[str, Any]:
    """The manifest of a packed folder, or one line saying why ``folder`` is not one."""
    from longctx.stage import MANIFEST, read_manifest

    manifest = read_manifest(folder)
    if manifest is None:
        if (Path(folder) / MANIFEST).exists():
            raise ConfigError(
                f"config key {key!r}: {folder}/{MANIFEST} is torn or not a JSON object; rebuild "
                f"it with `longctx data build`"
            )
        raise ConfigError(
            f"config key {key!r}: {folder!r} has no manifest.json (run `longctx data build`)"
        )
    stage = manifest.get("stage")
    if stage not in stages:
        raise ConfigError(
            f"config key {key!r}: {folder} is not a packed data build (its manifest.json says "
            f"stage {stage!r}); point it at the output of `longctx data build`"
        )
    seq_len = manifest.get("seq_len")
    if (not isinstance(seq_len, int) or isinstance(seq_len, bool) or not 0 < seq_len <= MAX_SEQ_LEN
            or not isinstance(manifest.get("shards"), list)):
        raise ConfigError(
            f"config key {key!r}: {folder}/{MANIFEST} has no valid seq_len or shard list "
            f"(seq_len {seq_len!r}); rebuild it with `longctx data build`"
        )
    return manifest
