"""``longctx plan``: the memory and time arithmetic against hand computations, the
recommendation, the command line it prints, and agreement with train's preflight."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest

from longctx.train.archs import ARCHS, Shape, resolve_shape
from longctx.train.memory import (
    OVERHEAD,
    GiB,
    MemoryPreflightError,
    calibration,
    estimate,
    preflight,
)
from longctx.train.plan import (
    Combo,
    Gpu,
    hardware_flops_per_token,
    model_flops_per_token,
    plan,
    predict,
    recommend,
)

from ..cli_helpers import assert_one_line_error, run_main

# The toy: V=100, H=8, I=16, 2 layers, 2 heads of 4 (Q=8), 1 kv head (KV=4), tied head.
#   layer params = H*Q + 2*H*KV + Q*H + 3*H*I + 2H = 64 + 64 + 64 + 384 + 16 = 592
#   params = V*H + 2 * 592 + H (final norm) = 800 + 1184 + 8 = 1992; root (embedding, norm) 808
TOY = Shape(vocab_size=100, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
FIT = {"activation_factor": 1.0, "efficiency": {"sdpa": 0.5}, "width_half": 8.0}
TOY_GPU = Gpu("toy", memory_gib=1.0, peak_flops=1e6, pcie_bytes_s=1e3, nvlink_bytes_s=1e4)


def toy_estimate(**kw):
    args = dict(params=TOY.params, seq_len=32, micro_batch=1, world=1, fsdp=False,
                cpu_offload=False, checkpointing=False, ce_chunk=16, activation_factor=1.0)
    return estimate(TOY, **{**args, **kw})


def test_toy_parameter_counts():
    assert TOY.layer_params == 592 and TOY.params == 1992 and TOY.root_params == 808
    assert TOY.matmul_params == 1992  # tied: the embedding matrix is used once, as the head


def test_memory_without_checkpointing_by_hand():
    e = toy_estimate()
    # states: 16 bytes x 1992 (fp32 weights, grads, two Adam moments) + autocast's bf16 copy 2N
    assert e.model_states == 16 * 1992 + 2 * 1992 == 35856
    assert e.gathered == 0
    # per layer per token, autocast (fp32 residual): norms 26H = 208, attention 6Q + 4KV =
    # 48 + 16, MLP 8I = 128 -> 400; two layers + final hidden and its grad (2 x 4H = 64)
    assert e.activations == 32 * (2 * 400 + 64) == 27648
    # chunked CE: chunk 16 x V 100 x 4 bytes x 3
    assert e.logits == 16 * 100 * 12 == 19200
    assert e.overhead == OVERHEAD and e.total == 35856 + 27648 + 19200 + OVERHEAD
    assert e.allocated == e.total - OVERHEAD and e.host == 0


def test_memory_fsdp_checkpointing_policies_by_hand():
    # FSDP over 2 ranks: 16N / 2 = 15936; gathered bf16 root + two layers: 2 x (808 + 1184)
    full = toy_estimate(world=2, fsdp=True, checkpointing=True, checkpoint_policy="full")
    assert full.model_states == 15936 and full.gathered == 2 * (808 + 2 * 592) == 3984
    # bf16 residual: full keeps the layer input 2H = 16 per layer; one layer recomputed at
    # 16H + 6Q + 4KV + 8I = 128 + 48 + 16 + 128 = 320; final hidden + grad 2 x 2H = 32
    assert full.activations == 32 * (2 * 16 + 320 + 32) == 12288
    # selective keeps input 2H + q 2Q + k, v 4KV + attention out 2Q + o, down 4H + gate, up 4I
    #   = 16 + 16 + 16 + 16 + 32 + 64 = 160
    sel = toy_estimate(world=2, fsdp=True, checkpointing=True, checkpoint_policy="selective")
    assert sel.activations == 32 * (2 * 160 + 320 + 32) == 21504
    # the activation factor scales the activations only
    half = toy_estimate(world=2, fsdp=True, checkpointing=True, activation_factor=0.5)
    assert half.activations == 12288 / 2 and half.logits == full.logits


def test_offloads_and_fused_ce_by_hand():
    # CPU offload (one rank, sharded): states on the host, bf16 weights + grads in flight
    off = toy_estimate(cpu_offload=True, checkpointing=True)
    assert off.model_states == 0 and off.host == 16 * 1992
    assert off.gathered == 2 * 3984
    # activation offload on 4 layers: 2 layers' saved tensors stay, the other 2 go to the host
    four = dataclasses.replace(TOY, num_hidden_layers=4)
    act = estimate(four, params=four.params, seq_len=32, micro_batch=1, world=1, fsdp=False,
                   cpu_offload=False, checkpointing=True, ce_chunk=16, activation_offload=True,
                   activation_factor=1.0)
    # autocast: input 4H = 32 saved per layer; recompute 400; final 64
    assert act.activations == 32 * (2 * 32 + 400 + 64)
    assert act.host == 32 * 2 * 32
    # fused CE: chunk logits and their gradient (16 x 100 x 4 x 2) + grad of hidden (32 x 8 x 4)
    # + the head's fp32 gradient accumulator (100 x 8 x 4)
    fused = toy_estimate(ce_impl="fused")
    assert fused.logits == 12800 + 1024 + 3200
    # micro-batch 2 doubles the tokens; ce_chunk 0 = the whole micro-batch at once
    whole = toy_estimate(micro_batch=2, ce_chunk=0)
    assert whole.logits == 64 * 100 * 12 and whole.activations == 2 * 27648


def test_time_by_hand():
    # model FLOPs per token at L=32: 6N + 6 x layers x L x Q = 11952 + 3072
    assert model_flops_per_token(TOY, 32) == 15024
    # full recompute: one more decoder forward 2 x 2 x 592 + 2 x 2 x 32 x 8 = 2368 + 1024;
    # chunked CE recomputes the head forward 2 x V x H = 1600
    assert hardware_flops_per_token(TOY, 32, policy="full", ce_impl="chunked") == 20016
    assert hardware_flops_per_token(TOY, 32, policy="selective", ce_impl="fused") == (
        pytest.approx(15024 + 0.1 * 3392))
    combo = Combo(1, "full", False, False, 1, 16, "chunked")
    p = predict(TOY, combo, seq_len=32, batch_tokens=64, gpu=TOY_GPU, fit=FIT)
    # efficiency 0.5 x H / (H + H0) = 0.25; micro-step 32 x 20016 / (1e6 x 0.25) = 2.562048 s;
    # 64 tokens per step = 2 micro-steps
    assert p.step_s == pytest.approx(2 * 2.562048)
    assert p.tokens_per_s == pytest.approx(64 / (2 * 2.562048))
    # CPU offload moves 3 x 4 bytes x N = 23904 bytes over a 1e3 B/s PCIe: 23.904 s > compute
    off = predict(TOY, dataclasses.replace(combo, cpu_offload=True), seq_len=32,
                  batch_tokens=32, gpu=TOY_GPU, fit=FIT)
    assert off.step_s == pytest.approx(23.904)
    # two GPUs: (2 x 2 + 4) bytes x N x 1/2 = 7968 bytes over 1e4 B/s NVLink < compute
    two = predict(TOY, dataclasses.replace(combo, gpus=2), seq_len=32, batch_tokens=64,
                  gpu=TOY_GPU, fit=FIT)
    assert two.step_s == pytest.approx(2.562048) and two.tokens_per_s == pytest.approx(64 / 2.562048)


def test_named_shapes_count_what_transformers_builds():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from longctx.train.archs import llama_kwargs
    from longctx.train.model import count_parameters

    for name in ("tiny", "llama-1b", "llama-8b", "smollm2-135m"):
        with torch.device("meta"):
            m = LlamaForCausalLM(LlamaConfig(**llama_kwargs(name)))
        assert count_parameters(m) == ARCHS[name].params, name
    assert ARCHS["llama-8b"].params == 8_030_261_248  # as the H200 benchmark counted


def test_the_recommendation_is_the_fastest_that_fits():
    shape = ARCHS["llama-1b"]
    preds = plan(shape, seq_len=32768, gpus=2, batch_tokens=65536, gpu=Gpu(
        "g", 40.0, 989.4e12, 64e9, 450e9), host_available=64 * GiB)
    best = recommend(preds)
    assert best is not None and best.fits
    fitting = [p for p in preds if p.fits]
    assert best.tokens_per_s == max(p.tokens_per_s for p in fitting)
    assert any(not p.fits for p in preds)  # 40 GiB rules some out
    # ties: fewer offloads first (their unmodelled overheads), then the least memory
    offloads = lambda p: p.combo.activation_offload + p.combo.cpu_offload  # noqa: E731
    ties = [p for p in fitting if p.tokens_per_s == best.tokens_per_s]
    assert offloads(best) == min(offloads(p) for p in ties)
    assert best.memory.total == min(p.memory.total for p in ties if offloads(p) == offloads(best))
    # the table's order: fitting first, fastest first
    assert preds[0] is best or preds[0].tokens_per_s == best.tokens_per_s
    # a host too small for CPU offload's 16N of states rules out every offloaded combination
    small = plan(shape, seq_len=32768, gpus=1, batch_tokens=32768,
                 gpu=Gpu("g", 40.0, 989.4e12, 64e9, 450e9), host_available=1 * GiB)
    assert all(not p.fits for p in small if p.combo.cpu_offload)


def test_preflight_agrees_with_the_planner():
    """train's preflight (estimate with TrainConfig's keys + preflight) gives the planner's
    number for the same combination, and refuses exactly what the planner says does not fit."""
    shape = ARCHS["llama-1b"]
    gpu = Gpu("g", 40.0, 989.4e12, 64e9, 450e9)
    for p in plan(shape, seq_len=32768, gpus=2, batch_tokens=65536, gpu=gpu):
        c = p.combo
        # what loop.py passes: world, sharded (torchrun or --cpu-offload), the config's keys
        est = estimate(shape, params=shape.params, seq_len=32768, micro_batch=c.micro_batch,
                       world=c.gpus, fsdp=c.gpus > 1 or c.cpu_offload, cpu_offload=c.cpu_offload,
                       checkpointing=c.policy != "none",
                       checkpoint_policy="full" if c.policy == "none" else c.policy,
                       activation_offload=c.activation_offload, ce_impl=c.ce_impl,
                       ce_chunk=c.ce_chunk)
        assert est.total == p.memory.total
        if p.fits_gpu:
            preflight(est, 40.0 * GiB, what="x")
        else:
            with pytest.raises(MemoryPreflightError, match="longctx plan"):
                preflight(est, 40.0 * GiB, what="x")


def test_calibration_marks_carried_over_peaks_invalid():
    cal = calibration()
    cases = {c["name"]: c for c in cal["cases"]}
    for c in cases.values():
        assert c["gpu"] and c["torch"] and c["transformers"] and c["config"]["arch"] in ARCHS
    # the H200 file: only the first case of the shared process and the 8B case have real peaks
    valid = {n for n, c in cases.items() if c["measured"]["peak_valid"]}
    assert {"llama1b-32k", "llama8b-64k-offload"} <= valid
    assert not cases["llama1b-32k-ckpt"]["measured"]["peak_valid"]
    assert "not reset" in cases["smollm2-32k"]["measured"]["peak_invalid_reason"]
    fit = cal["fit"]
    assert 0.5 < fit["activation_factor"] < 1.5 and 0 < fit["efficiency"]["sdpa"] < 1


# ----------------------------------------------------------------------------- command
def _recommended(out: str) -> list[str]:
    line = [x for x in out.splitlines() if x.startswith("recommended: ")]
    assert len(line) == 1, out
    return shlex.split(line[0][len("recommended: "):])


def test_plan_prints_a_command_that_longctx_train_parses(capsys):
    from longctx.train.config import TrainConfig

    code, out, err = run_main(["plan", "--model", "llama-1b", "--seq-len", "32768",
                               "--gpu-memory", "h100", "--host-memory", "64"], capsys)
    assert code == 0, err
    assert "GiB/GPU" in out and "tokens/s" in out
    argv = _recommended(out)
    assert argv[:2] == ["longctx", "train"]
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = {"ce_impl", "checkpoint_policy", "activation_offload"} - keys
    if missing:
        pytest.skip(f"TrainConfig has no {sorted(missing)} yet (the iface12.md keys)")
    # the flags through `longctx train`'s own click command and config builder; DATA, OUT
    # and the step count are the user's (validated later, against real folders), and the
    # command is meant for a GPU machine (activation offload is refused on a CPU one)
    import typer

    from longctx.cli import app
    from longctx.cliopts import cli_values
    from longctx.config import build_config

    train = typer.main.get_command(app).commands["train"]
    ctx = train.make_context("train", [*argv[2:], "--steps", "1", "--device", "cuda"])
    cfg = build_config(TrainConfig, cli=cli_values(ctx, TrainConfig, ctx.params),
                       validate=False)
    cfg._validate_values()
    assert (cfg.model, cfg.seq_len, cfg.batch_tokens) == ("llama-1b", 32768, "32768")
    flags = {a for a in argv if a.startswith("--")}
    assert cfg.checkpointing == ("--checkpointing" in flags)
    assert cfg.cpu_offload == ("--cpu-offload" in flags)
    assert cfg.ce_impl == argv[argv.index("--ce-impl") + 1]
    assert cfg.ce_chunk == int(argv[argv.index("--ce-chunk") + 1])
    if cfg.checkpointing:
        assert cfg.checkpoint_policy == argv[argv.index("--checkpoint-policy") + 1]


def test_plan_json_and_the_recommendation_in_it(capsys):
    code, out, err = run_main(["plan", "--model", "smollm2-135m", "--seq-len", "16384",
                               "--gpu-memory", "24", "--gpus", "2", "--host-memory", "32",
                               "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["batch_tokens"] == 32768 and doc["gib_per_gpu"] == 24
    rows = doc["combinations"]
    assert {r["gpus"] for r in rows} == {1, 2}
    assert {r["policy"] for r in rows} == {"none", "full", "selective"}
    assert {r["ce_chunk"] for r in rows} == {2048, 4096, 8192, 16384}
    best = doc["recommended"]
    assert best["fits"] and best["tokens_per_s"] == max(r["tokens_per_s"] for r in rows
                                                       if r["fits"])
    assert best["command"].startswith(("longctx train", "torchrun --nproc-per-node 2"))


def test_nothing_fits_is_one_line(capsys):
    code, out, err = run_main(["plan", "--model", "llama-8b", "--seq-len", "1048576",
                               "--gpu-memory", "a100", "--host-memory", "64"], capsys)
    assert_one_line_error(code, err, "nothing fits", "llama-8b", "GiB per GPU")
    assert "recommended" not in out


def test_host_limited_names_host_memory(capsys):
    # 8B at 128K fits an H200 only with CPU offload: 16 bytes x 8.03B params ~ 120 GiB of host
    code, out, err = run_main(["plan", "--model", "llama-8b", "--seq-len", "131072",
                               "--gpu-memory", "h200", "--host-memory", "64"], capsys)
    assert_one_line_error(code, err, "nothing fits", "of host memory", "64.0 GiB is available")


def test_model_folder_reads_config_json_only(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 100,
        "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}))
    (folder / "model.safetensors").write_bytes(b"not read")
    assert resolve_shape(str(folder)) == TOY
    code, out, err = run_main(["plan", "--model", str(folder), "--seq-len", "64",
                               "--gpu-memory", "4"], capsys)
    assert code == 0, err
    assert f"recommended: longctx train --model {folder} " in out
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"x")
    code, _, err = run_main(["plan", "--model", str(folder), "--seq-len", "64"], capsys)
    assert_one_line_error(code, err, "pickle")
    code, _, err = run_main(["plan", "--model", "no-such-model", "--seq-len", "64"], capsys)
    assert_one_line_error(code, err, "no-such-model", "llama-1b")
