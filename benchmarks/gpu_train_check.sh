#!/usr/bin/env bash
# One-shot GPU check of the training stage (<= 8 minutes, results as JSON in $OUT).
#
#   OUT=gpu_results bash benchmarks/gpu_train_check.sh
#
# Needs only torch, transformers, pyarrow, numpy, typer, rich, pyyaml, tokenizers (no weights,
# no network): models are built from configs with random weights. Runs, in order:
#   1. MFU of a 1B-class LLaMA at 16K/32K/64K and of SmolLM2-135M's architecture at 16K-64K
#      (fp32 master weights + bf16 autocast, sdpa/flash, chunked CE; with and without
#      activation checkpointing), a flex_attention document-mask run at 32K and a
#      packed-vs-separate logits parity check of the flex path
#   2. an 8B-class LLaMA at 64K with checkpointing + chunked CE + FSDP2 CPU offload (fits?)
#   3. `python -m longctx.train` end to end on CUDA (tiny model, --doc-mask mask, export)
# Each group runs in its own process with a time cap; OOMs and errors are recorded, not fatal.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)" 2>&1
} > "$OUT/environment.txt"
timeout 475 "$PY" benchmarks/train_throughput.py --gpu --out "$OUT" 2>&1 | tee "$OUT/log.txt"
[ -f "$OUT/results.jsonl" ] && "$PY" benchmarks/train_throughput.py --gpu --out "$OUT" --summarize > /dev/null 2>&1
echo "results: $OUT/results.json ($(wc -l < "$OUT/results.jsonl" 2>/dev/null || echo 0) cases)"
