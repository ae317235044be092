#!/usr/bin/env bash
# One-shot GPU check of the training stage (<= 8 minutes, results as JSON in $OUT).
#
#   OUT=gpu_results bash benchmarks/gpu_train_check.sh
#
# Needs only torch, transformers, pyarrow, numpy, typer, rich, pyyaml, tokenizers (no weights,
# no network): models are built from configs with random weights. Runs, in order (group time
# caps 105 + 110 + 175 + 60 s, the whole under `timeout 475`):
#   1. MFU and peak memory of a 1B-class LLaMA at 16K/32K (with and without activation
#      checkpointing), SmolLM2-135M's architecture at 32K, a flex_attention document-mask run
#      at 32K and a packed-vs-separate logits parity check of the flex path
#   2. the fast paths on the 1B class at 32K: fused CE, selective checkpointing, activation
#      offload, regional torch.compile
#   3. an 8B-class LLaMA at 128K on one GPU with the combination `longctx plan` recommends
#      (FSDP2 CPU offload, bf16 weights), then its next ones only if that one fails
#   4. `python -m longctx.train` end to end on CUDA (tiny model, --doc-mask mask, export)
# Each group runs in its own process with a time cap; OOMs and errors are recorded, not fatal.
# Every case records the planner's prediction; $OUT/plan_accuracy.txt compares them (with the
# runs in benchmarks/results/) and says which peaks are not valid.
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
[ -f "$OUT/results.json" ] && "$PY" benchmarks/plan_accuracy.py --include "$OUT/results.json" \
  --out "$OUT/plan_accuracy.json" > "$OUT/plan_accuracy.txt" 2>&1
echo "results: $OUT/results.json ($(wc -l < "$OUT/results.jsonl" 2>/dev/null || echo 0) cases)"
