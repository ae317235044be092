"""Training throughput and memory of the longctx training path (not a test; prints + JSON).

CPU mode (default): tokens/s and peak RSS per sequence length for ``tiny`` and a
SmolLM2-135M-architecture model (random init, fp32 and bf16 autocast).

GPU mode (``--gpu``): MFU and peak memory of a 1B-class LLaMA at 16K/32K (with and without
checkpointing, flex_attention document mask) and of SmolLM2-135M's architecture at 32K; the
fast paths of ``train/fastpaths.py`` on the 1B class at 32K (fused CE, selective
checkpointing, activation offload, regional compile); an 8B-class LLaMA at 128K on one GPU
with the combination ``longctx plan`` recommends (then its next ones if that fails); a
flex_attention parity check and a short end-to-end ``longctx train`` run on CUDA. Every case
records the planner's predicted peak memory and tokens/s next to the measurement, and the
allocated memory at its start (``peak_valid``: the cases of a group share a process, so a
case's peak is its own only when nothing of the previous case was left).
The architectures are ``longctx.train.archs.ARCHS``.

    MFU = (6 * N * tokens + attention FLOPs) / (seconds * bf16 peak)
    N = parameters that take part in matmuls (all but the input embedding; a tied head counts once)
    attention FLOPs (causal, fwd + bwd) = 6 * layers * L * (heads * head_dim) per token
    (``mfu_full_attn`` counts the full L x L instead, as PaLM's appendix does: 12 * ...)

Everything is built from configs with random weights and random token ids: no weights,
tokenizer, datasets, accelerate or network are needed. Each case runs in a child process
(CPU: one per case, so peak RSS is per case; GPU: a few groups) with a time cap; CUDA OOMs
and errors are recorded, and results are appended to ``OUT/results.jsonl`` as they come, then
summarised in ``OUT/results.json``.

    PYTHONPATH=src python benchmarks/train_throughput.py            # CPU
    PYTHONPATH=src python benchmarks/train_throughput.py --gpu --out gpu_results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

K = 1024
CPU_CASES = [
    *[dict(name=f"tiny-{n}-fp32", arch="tiny", seq_len=n, steps=3) for n in (256, 1024, 4096)],
    *[
        dict(name=f"smollm2-{n}-fp32", arch="smollm2-135m", seq_len=n, steps=2)
        for n in (256, 512, 1024, 2048)
    ],
    dict(name="smollm2-1024-bf16", arch="smollm2-135m", seq_len=1024, steps=2, bf16=True),
]
# GPU groups run in order, each in its own process; the most important results come first.
# Every case records the planner's prediction (longctx plan) next to its measurement. The
# whole stays under gpu_train_check.sh's 475 s: 105 + 110 + 175 + 60 s of group time caps.
GPU_GROUPS: list[dict[str, Any]] = [
    dict(
        timeout=105,
        cases=[  # the calibration cases again, each with a peak of its own
            dict(name="llama1b-32k", arch="llama-1b", seq_len=32 * K, checkpointing=False),
            dict(name="llama1b-32k-ckpt", arch="llama-1b", seq_len=32 * K),
            dict(name="llama1b-16k", arch="llama-1b", seq_len=16 * K, checkpointing=False),
            dict(name="smollm2-32k", arch="smollm2-135m", seq_len=32 * K, checkpointing=False),
            dict(
                name="llama1b-32k-docmask-flex",
                arch="llama-1b",
                seq_len=32 * K,
                checkpointing=False,
                doc_mask=True,
            ),
            dict(name="flex-docmask-parity", kind="parity"),
        ],
    ),
    dict(
        timeout=110,
        cases=[  # the fast paths (train/fastpaths.py) on the 1B class at 32K
            dict(name="llama1b-32k-fused", arch="llama-1b", seq_len=32 * K, ce_impl="fused"),
            dict(
                name="llama1b-32k-selective-fused",
                arch="llama-1b",
                seq_len=32 * K,
                checkpoint_policy="selective",
                ce_impl="fused",
            ),
            dict(
                name="llama1b-32k-actoffload-fused",
                arch="llama-1b",
                seq_len=32 * K,
                activation_offload=True,
                ce_impl="fused",
            ),
            dict(
                name="llama1b-32k-selective-fused-compile",
                arch="llama-1b",
                seq_len=32 * K,
                checkpoint_policy="selective",
                ce_impl="fused",
                compile=True,
            ),
        ],
    ),
    dict(
        timeout=175,
        cases=[  # 8B class at 128K on one GPU: the planner's pick, then its next ones
            *[
                dict(
                    name=f"llama8b-128k-plan{rank}",
                    arch="llama-8b",
                    seq_len=128 * K,
                    planned=rank,
                    steps=0,  # one step (the warm-up) is ~1 minute: it is the timing
                    cap=0,
                    **({"fallback_of": f"llama8b-128k-plan{rank - 1}"} if rank else {}),
                )
                for rank in range(3)
            ],
        ],
    ),
    dict(timeout=60, cases=[dict(name="e2e-longctx-train-cuda", kind="e2e")]),
]
# 8B on one GPU trains bf16 weights (fp32 master copies + Adam, 16 bytes a parameter, would
# not fit the 128 GB host either): 4 x 2 bytes a parameter in pinned host memory.
BF16_WEIGHT_ARCHS = ("llama-8b",)

PEAK_LEFTOVER_GB = 0.25  # allocated at a case's start above this: its peak is not its own
PEAK_BF16 = [  # dense bf16 tensor-core peak, FLOP/s (vendor datasheets)
    ("H100 PCIE", 756e12),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10", 125e12),
]


# ------------------------------------------------------------------------------ one case
def matmul_params(model: Any) -> int:
    """Parameters used in matmuls: everything but the input embedding (tied head counted once)."""
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    head = model.get_output_embeddings().weight
    return total - emb.numel() + (head.numel() if head is emb else 0)


def flops_per_step(model: Any, seq_len: int, tokens: int) -> tuple[float, float]:
    c = model.config
    n = matmul_params(model)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    d_attn = c.num_attention_heads * head_dim
    dense = 6.0 * n * tokens
    attn_causal = 6.0 * c.num_hidden_layers * seq_len * d_attn * tokens
    return dense + attn_causal, dense + 2 * attn_causal


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    up = name.upper()
    for key, val in PEAK_BF16:
        if key in up:
            return val
    return None


def plan_config(case: dict) -> dict[str, Any]:
    """The case in the planner's terms (the keys of calibration.json's cases)."""
    offload = bool(case.get("offload"))
    ckpt = case.get("checkpointing", True) or offload
    return {
        "arch": case["arch"],
        "seq_len": case["seq_len"],
        "micro_batch": 1,
        "gpus": 1,
        "policy": case.get("checkpoint_policy", "full") if ckpt else "none",
        "activation_offload": bool(case.get("activation_offload")),
        "cpu_offload": offload,
        "ce_chunk": case.get("ce_chunk", 4096),
        "ce_impl": case.get("ce_impl", "chunked"),
        "attention": "flex" if case.get("doc_mask") else "sdpa",
        "param_bytes": 2 if offload and case["arch"] in BF16_WEIGHT_ARCHS else 4,
        "compile": bool(case.get("compile")),
    }


def planned_case(case: dict, device: Any) -> dict:
    """``case`` with the settings of the planner's ``case["planned"]``-th fastest fitting
    combination (0 = the one ``longctx plan`` recommends) on this GPU and host, counting
    combinations that differ in more than the CE chunk, among those build() can run."""
    import torch

    from longctx.train.archs import ARCHS
    from longctx.train.plan import GPUS, gpu_named, host_memory_bytes, plan

    gpu = gpu_named(torch.cuda.get_device_name(device)) or GPUS["h100"]
    total = float(torch.cuda.get_device_properties(device).total_memory)
    preds = plan(ARCHS[case["arch"]], seq_len=case["seq_len"], gpus=1,
                 batch_tokens=case["seq_len"], gpu=gpu, gpu_bytes=total,
                 host_available=host_memory_bytes(),
                 param_bytes=2 if case["arch"] in BF16_WEIGHT_ARCHS else 4)
    picked, seen = [], set()
    for p in preds:
        c = p.combo
        key = (c.policy, c.activation_offload, c.cpu_offload, c.ce_impl)
        # bf16 weights are built for the offload path only (build()): plan only those
        buildable = c.cpu_offload or case["arch"] not in BF16_WEIGHT_ARCHS
        if p.fits and buildable and key not in seen:
            seen.add(key)
            picked.append(c)
    if case["planned"] >= len(picked):
        raise RuntimeError(f"the planner has only {len(picked)} fitting combinations")
    c = picked[case["planned"]]
    return {**case, "checkpointing": c.policy != "none",
            "checkpoint_policy": c.policy if c.policy != "none" else "full",
            "activation_offload": c.activation_offload, "offload": c.cpu_offload,
            "ce_chunk": c.ce_chunk, "ce_impl": c.ce_impl}


def fast_path_config(case: dict, device: Any) -> Any:
    """The TrainConfig keys ``prepare_model`` reads, from the case."""
    from longctx.train.config import TrainConfig

    offload = bool(case.get("offload"))
    return TrainConfig(
        device=device.type,
        checkpointing=bool(case.get("checkpointing", True) or offload),
        checkpoint_policy=case.get("checkpoint_policy", "full"),
        activation_offload=bool(case.get("activation_offload")),
        compile=bool(case.get("compile")),
        ce_impl=case.get("ce_impl", "chunked"),
    )


def build(case: dict, device: Any) -> tuple[Any, Any, str]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from longctx.train.archs import llama_kwargs
    from longctx.train.fastpaths import prepare_model
    from longctx.train.model import CausalLMWithLoss

    seq_len = case["seq_len"]
    attn = "flex_attention" if case.get("doc_mask") and device.type == "cuda" else "sdpa"
    cfg = LlamaConfig(
        **llama_kwargs(case["arch"]),
        max_position_embeddings=seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        use_cache=False,
    )
    fast = fast_path_config(case, device)
    ce = dict(ce_chunk=case.get("ce_chunk", 4096), ce_impl=fast.ce_impl)
    mode = "fp32 master + bf16 autocast" if case.get("bf16", device.type == "cuda") else "fp32"
    if case.get("offload"):
        # 8B on one GPU: bf16 weights (fp32 master copies + Adam would not fit in 128 GB host
        # RAM either), FSDP2 with CPU offload: params, grads, Adam live in pinned host memory.
        from longctx.train.distributed import setup, shard

        setup(device.type, need_group=True)
        with torch.device("meta"):
            model = LlamaForCausalLM._from_config(
                cfg, attn_implementation=attn, dtype=torch.bfloat16
            )
        prepare_model(model, fast, device_type=device.type)
        wrapper = CausalLMWithLoss(model, **ce)
        # (offload needs CUDA; on CPU the same meta-init + sharding flow runs without it)
        shard(
            wrapper,
            list(model.model.layers),
            bf16=False,
            cpu_offload=device.type == "cuda",
            device=device,
        )
        wrapper.to_empty(device="cpu")
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in wrapper.parameters():
                local = p.to_local() if hasattr(p, "to_local") else p
                local.uniform_(-0.02, 0.02, generator=gen)
            # the RoPE buffer was on meta too: plain RoPE at base 5e5, on the GPU
            hd = cfg.hidden_size // cfg.num_attention_heads
            inv = 1.0 / 500000.0 ** (torch.arange(0, hd, 2, device=device).float() / hd)
            model.model.rotary_emb.inv_freq = inv
            model.model.rotary_emb.original_inv_freq = inv
        mode = "bf16 weights, FSDP2 CPU offload"
    else:
        with torch.device(device):
            model = LlamaForCausalLM._from_config(
                cfg, attn_implementation=attn, dtype=torch.float32
            )
        prepare_model(model, fast, device_type=device.type)
        wrapper = CausalLMWithLoss(model, **ce)
    return model, wrapper, mode


def make_inputs(case: dict, vocab: int, device: Any, step: int) -> tuple[Any, Any, Any]:
    import torch

    g = torch.Generator(device="cpu").manual_seed(step)
    L = case["seq_len"]
    ids = torch.randint(0, vocab, (1, L), generator=g)
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = -100
    pos = None
    if case.get("doc_mask"):
        doc = case.get("doc_len", 4096)
        pos = (torch.arange(L) % doc)[None]
    return ids.to(device), (pos.to(device) if pos is not None else None), targets.to(device)


def run_case(case: dict) -> dict:
    import gc
    import resource

    import torch

    from longctx.train.model import count_parameters
    from longctx.train.plan import predict_run

    if case.get("kind") == "parity":
        return flex_parity()
    if case.get("kind") == "e2e":
        return e2e_cli()
    on_gpu = torch.cuda.is_available() and case.get("device", "auto") != "cpu"
    device = torch.device("cuda") if on_gpu else torch.device("cpu")
    if "planned" in case:
        case = planned_case(case, device)
    mem_at_start = 0.0
    if on_gpu:  # cases of one group share a process: peak memory must be per case
        gc.collect()  # the previous case's model may sit in a reference cycle
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        mem_at_start = torch.cuda.memory_allocated(device) / 1024**3
    t_build = time.perf_counter()
    model, wrapper, mode = build(case, device)
    build_s = time.perf_counter() - t_build
    bf16 = on_gpu or case.get("bf16", False)
    offload = bool(case.get("offload"))
    opt_kwargs: dict[str, Any] = {"lr": 1e-5, "betas": (0.9, 0.95)}
    if on_gpu and not offload:
        opt_kwargs["fused"] = True
    opt = torch.optim.AdamW(wrapper.parameters(), **opt_kwargs)
    vocab = model.config.vocab_size
    L = case["seq_len"]
    steps = case.get("steps", 3)
    cap = case.get("cap", 45)
    times: list[float] = []

    def one_step(i: int) -> float:
        ids, pos, tgt = make_inputs(case, vocab, device, i)
        if on_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 and not offload else _null()
        with ctx:
            s, n = wrapper(ids, pos, tgt)
        (s / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()
        loss = float(s.detach()) / float(n)
        if loss != loss:
            raise RuntimeError("loss is NaN")
        return time.perf_counter() - t0

    started = time.perf_counter()
    warm = one_step(0)  # includes kernel selection / flex compile; its peak memory counts too
    for i in range(1, steps + 1):
        if time.perf_counter() - started > cap and times:
            break
        times.append(one_step(i))
    timed_warmup = not times
    if timed_warmup:
        times = [warm]
    sec = sorted(times)[len(times) // 2]
    tokens = L
    flops, flops_full = flops_per_step(model, L, tokens)
    rec: dict[str, Any] = {
        "name": case["name"],
        "arch": case["arch"],
        "seq_len": L,
        "mode": mode,
        "checkpointing": case.get("checkpointing", True) or offload,
        "checkpoint_policy": case.get("checkpoint_policy", "full"),
        "activation_offload": bool(case.get("activation_offload")),
        "compile": bool(case.get("compile")),
        "ce_chunk": case.get("ce_chunk", 4096),
        "ce_impl": case.get("ce_impl", "chunked"),
        "cpu_offload": offload,
        "doc_mask": bool(case.get("doc_mask")),
        "plan_config": plan_config(case),
        "params": count_parameters(model),
        "matmul_params": matmul_params(model),
        "build_s": round(build_s, 2),
        "warmup_s": round(warm, 3),
        "step_s": [round(t, 4) for t in times],
        "median_step_s": round(sec, 4),
        "timed_warmup": timed_warmup,
        "tokens_per_s": tokens / sec,
        "model_tflops_per_step": flops / 1e12,
    }
    name = torch.cuda.get_device_name(device) if on_gpu else "H100"
    pred = predict_run(rec["plan_config"], name)  # the model train's preflight uses too
    rec["preflight_estimate_gb"] = pred.memory.total / 1024**3
    if on_gpu:
        peak = peak_flops(name, float(os.environ.get("PEAK_TFLOPS", 0)) or None)
        rec["gpu"] = name
        rec["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
        rec["peak_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 1024**3
        rec["gpu_total_gb"] = torch.cuda.get_device_properties(device).total_memory / 1024**3
        rec["mem_at_start_gb"] = mem_at_start
        rec["peak_valid"] = mem_at_start < PEAK_LEFTOVER_GB
        rec["plan"] = {
            "predicted_peak_gb": pred.memory.allocated / 1024**3,
            "predicted_total_gb": pred.memory.total / 1024**3,
            "predicted_tokens_per_s": pred.tokens_per_s,
            "peak_error": pred.memory.allocated / 1024**3 / rec["peak_mem_gb"] - 1,
            "tokens_per_s_error": pred.tokens_per_s / rec["tokens_per_s"] - 1,
        }
        rec["achieved_tflops"] = flops / sec / 1e12
        if peak:
            rec["peak_tflops"] = peak / 1e12
            rec["mfu"] = flops / sec / peak
            rec["mfu_full_attn"] = flops_full / sec / peak
        rec["fits"] = True
    rec["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return rec


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def flex_parity() -> dict:
    """GPU document mask: packed-row logits (flex_attention, fp32) vs documents run alone."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        use_cache=False,
    )
    dev = torch.device("cuda")
    res: dict[str, Any] = {"name": "flex-docmask-parity"}
    cuts = [0, 300, 700, 1024]
    ids = torch.randint(0, 1000, (1, 1024), device=dev)
    pos = torch.cat([torch.arange(b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=False)])[
        None
    ].to(dev)
    for attn in ("flex_attention", "sdpa"):
        m = (
            LlamaForCausalLM._from_config(cfg, attn_implementation=attn, dtype=torch.float32)
            .to(dev)
            .eval()
        )
        m.load_state_dict(_PARITY_STATE.setdefault("sd", m.state_dict()))
        with torch.no_grad():
            packed = m(ids, position_ids=pos, use_cache=False).logits[0].float()
            diffs = []
            for a, b in zip(cuts[:-1], cuts[1:], strict=False):
                alone = m(ids[:, a:b], use_cache=False).logits[0].float()
                diffs.append(float((packed[a:b] - alone).abs().max()))
            plain = m(ids, use_cache=False).logits[0].float()
            leak = float((plain[300:700] - packed[300:700]).abs().max())
        res[attn] = {
            "max_abs_diff_vs_separate": max(diffs),
            "diff_without_mask": leak,
            "ok": max(diffs) < 1e-3 < leak,
        }
    return res


_PARITY_STATE: dict[str, Any] = {}


def e2e_cli() -> dict:
    """`longctx train` on CUDA end to end: tiny model, doc mask (flex), bf16, export, reload."""
    import tempfile

    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    from longctx.data.tokenizer import load_tokenizer
    from longctx.pack.shards import ShardWriter
    from longctx.stage import write_manifest

    tmp = Path(tempfile.mkdtemp(prefix="longctx-e2e-"))
    vocab = {f"w{i}": i for i in range(512)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp / "tok").mkdir()
    tok.save(str(tmp / "tok" / "tokenizer.json"))
    t = load_tokenizer(tmp / "tok")
    rng = np.random.default_rng(0)
    seq = 2048
    w = ShardWriter(tmp / "data" / "s0.arrow", seq, np.uint16)
    ids = rng.integers(0, 512, size=(8, seq)).astype(np.uint16)
    w.write(ids, [[0, 700, 1500, seq]] * 8, [[0, 0, 0]] * 8, [False] * 8)
    write_manifest(
        tmp / "data",
        {
            "stage": "data.build",
            "status": "done",
            "seq_len": seq,
            "domain_vocab": ["x"],
            "shards": [w.close()],
            "tokenizer": {"name": str(tmp / "tok"), "sha256": t.fingerprint},
        },
    )
    out = tmp / "out"
    cmd = [
        sys.executable,
        "-m",
        "longctx.train",
        "--data",
        str(tmp / "data"),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--steps",
        "3",
        "--batch-tokens",
        "4096",
        "--doc-mask",
        "mask",
        "--lr",
        "1e-3",
        "--tiny-hidden",
        "256",
        "--tiny-heads",
        "4",
        "--tiny-kv-heads",
        "2",
        "--tiny-intermediate",
        "512",
    ]
    t0 = time.perf_counter()
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=50,  # inside its group's 60 s cap
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    rec: dict[str, Any] = {
        "name": "e2e-longctx-train-cuda",
        "rc": p.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "stdout_tail": p.stdout[-1500:],
        "stderr_tail": p.stderr[-1500:],
    }
    if p.returncode == 0:
        from transformers import AutoModelForCausalLM

        m = json.loads((out / "manifest.json").read_text())
        rec["metrics"] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rec["manifest_status"] = m["status"]
        AutoModelForCausalLM.from_pretrained(str(out / "final"))
        rec["export_reloads"] = True
    return rec


def child(cases: list[dict], jsonl: Path) -> None:
    """Run cases in this process, appending one JSON line each (errors and OOMs included)."""
    import torch

    status: dict[str, str] = {}
    for case in cases:
        t0 = time.perf_counter()
        if status.get(case.get("fallback_of", "")) in ("ok", "skipped"):
            rec = {"name": case["name"], "status": "skipped",
                   "why": f"{case['fallback_of']} ran or was not needed: this fallback is not"}
            with open(jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")
            status[case["name"]] = "skipped"
            continue
        try:
            rec = run_case(case)
            rec["status"] = "ok"
        except torch.cuda.OutOfMemoryError as e:
            rec = {"name": case["name"], "status": "oom", "fits": False, "error": str(e)[:500]}
        except Exception as e:  # noqa: BLE001 - a benchmark records, it does not stop
            import traceback

            rec = {
                "name": case["name"],
                "status": "error",
                "error": repr(e)[:500],
                "traceback": traceback.format_exc()[-2000:],
            }
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        status[case["name"]] = rec["status"]
        with open(jsonl, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        print(
            json.dumps({k: v for k, v in rec.items() if k not in ("traceback",)}, default=str)[
                :600
            ],
            flush=True,
        )
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ driver
def spawn(cases: list[dict], jsonl: Path, timeout: float) -> None:
    """Run ``cases`` in a child process; cases it never reported get a record saying why."""
    done_before = _names(jsonl)
    cmd = [sys.executable, __file__, "--child", json.dumps(cases), "--jsonl", str(jsonl)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    err_file = jsonl.parent / f"stderr-{cases[0]['name']}.txt"
    t0 = time.perf_counter()
    with open(err_file, "w") as err:
        try:
            rc: int | str = subprocess.run(cmd, timeout=timeout, env=env, stderr=err).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    tail = err_file.read_text(errors="replace")[-1500:]
    got = _names(jsonl) - done_before
    for c in cases:
        if c["name"] not in got:
            why = "time cap" if rc == "timeout" else f"child exited {rc} (crash or host OOM?)"
            rec = {"name": c["name"], "status": f"not finished: {why}", "timeout_s": timeout,
                   "group_seconds": round(time.perf_counter() - t0, 1), "stderr_tail": tail}
            with open(jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")


def _names(jsonl: Path) -> set[str]:
    if not jsonl.is_file():
        return set()
    return {json.loads(x)["name"] for x in jsonl.read_text().splitlines() if x.strip()}


def summarize(out: Path, gpu: bool, started: float) -> dict:
    import platform

    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    env: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch
        import transformers

        env.update(torch=torch.__version__, transformers=transformers.__version__)
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    summary = {
        "mode": "gpu" if gpu else "cpu",
        "environment": env,
        "seconds": round(time.perf_counter() - started, 1),
        "cases": recs,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\n{'case':36} {'status':8} {'tok/s':>8} {'plan':>8} {'err':>7} {'MFU':>6} "
          f"{'peak GB':>8} {'plan':>6} {'err':>7}")
    for r in recs:
        mem = r.get("peak_mem_gb", r.get("peak_rss_gb"))
        mfu = f"{r['mfu'] * 100:5.1f}%" if r.get("mfu") is not None else "     -"
        p = r.get("plan", {})
        pct = lambda x: f"{x * 100:+6.1f}%" if x is not None else "      -"  # noqa: E731
        valid = r.get("peak_valid", True)
        print(
            f"{r['name']:36} {r.get('status', '?')[:8]:8} {r.get('tokens_per_s', 0):8.0f} "
            f"{p.get('predicted_tokens_per_s', 0):8.0f} {pct(p.get('tokens_per_s_error'))} "
            f"{mfu} {mem or 0:8.2f} {p.get('predicted_peak_gb', r.get('preflight_estimate_gb', 0)):6.1f} "
            f"{pct(p.get('peak_error') if valid else None)}"
            + ("" if valid else f"  (peak not this case's: {r['mem_at_start_gb']:.2f} GB "
                                f"allocated at its start)")
        )
    print("plan: the planner's prediction (longctx plan; peak excludes its 2 GiB overhead); "
          "err = predicted / measured - 1")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="GPU mode (MFU, 8B fit, flex, e2e)")
    ap.add_argument("--out", default=None, help="results folder [gpu_results | bench_results]")
    ap.add_argument("--only", default=None, help="comma-separated case names to run")
    ap.add_argument(
        "--summarize",
        action="store_true",
        help="only (re)write OUT/results.json from OUT/results.jsonl",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child), Path(args.jsonl))
        return
    started = time.perf_counter()
    out = Path(args.out or ("gpu_results" if args.gpu else "bench_results"))
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "results.jsonl"
    if args.summarize:
        summarize(out, args.gpu, started)
        return
    jsonl.unlink(missing_ok=True)
    only = set(args.only.split(",")) if args.only else None
    if args.gpu:
        for group in GPU_GROUPS:
            cases = [c for c in group["cases"] if not only or c["name"] in only]
            if cases:
                spawn(cases, jsonl, group["timeout"])
    else:
        for case in CPU_CASES:
            if not only or case["name"] in only:
                spawn([{**case, "device": "cpu"}], jsonl, 600)
    summarize(out, args.gpu, started)


if __name__ == "__main__":
    main()
