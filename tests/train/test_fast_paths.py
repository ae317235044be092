"""The training fast paths (train/fastpaths.py, ce_impl fused) give the plain path's loss and
gradients; the CUDA-only ones are refused in one line on CPU; a run with every CPU-possible
fast path on resumes exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from longctx.config import ConfigError, build_config
from longctx.train import fastpaths as fp
from longctx.train.config import TrainConfig
from longctx.train.loader import TrainRows
from longctx.train.loop import train
from longctx.train.loss import chunked_cross_entropy, fused_cross_entropy
from longctx.train.model import CausalLMWithLoss

from .train_fixtures import write_packed

LLAMA = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    use_cache=False, tie_word_embeddings=True)
RTOL = 1e-5


# ------------------------------------------------------------------ fused cross-entropy
def _problem(n: int = 100, vocab: int = 97, hidden: int = 16):
    torch.manual_seed(0)
    h = torch.randn(2, n // 2, hidden, requires_grad=True)
    w = torch.randn(vocab, hidden, requires_grad=True)
    t = torch.randint(0, vocab, (2, n // 2))
    t[0, :5] = -100
    t[1, -1] = -100
    return h, w, t


@pytest.mark.parametrize("chunk", [0, 7, 10, 25, 1000])
def test_fused_equals_cross_entropy_value_and_grads(chunk):
    h, w, t = _problem()
    ref = F.cross_entropy((h @ w.t()).reshape(-1, 97), t.reshape(-1), ignore_index=-100,
                          reduction="sum")
    (ref * 0.25).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    total, count = fused_cross_entropy(h, w, t, chunk)
    (total * 0.25).backward()  # backward scales the saved gradients by grad_output
    assert int(count) == 94
    torch.testing.assert_close(total, ref, rtol=RTOL, atol=1e-4)
    torch.testing.assert_close(h.grad, gh, rtol=RTOL, atol=1e-6)
    torch.testing.assert_close(w.grad, gw, rtol=RTOL, atol=1e-6)
    assert bool((h.grad[0, :5] == 0).all())  # ignored rows get no gradient


def test_fused_with_tied_weight_adds_to_embedding_grad():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(53, 12)
    ids = torch.randint(0, 53, (3, 21))
    t = torch.randint(0, 53, (3, 21))
    t[:, 0] = -100

    def grads(loss_fn):
        emb.weight.grad = None
        h = torch.tanh(emb(ids))  # hidden states made from the same weight the head uses
        loss_fn(h, emb.weight, t).backward()
        return emb.weight.grad.clone()

    ref = grads(lambda h, w, t: F.cross_entropy((h @ w.t()).reshape(-1, 53), t.reshape(-1),
                                                ignore_index=-100, reduction="sum"))
    got = grads(lambda h, w, t: fused_cross_entropy(h, w, t, 8)[0])
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=1e-6)


def test_fused_without_grad_is_the_plain_loss():
    h, w, t = _problem()
    with torch.no_grad():
        total, count = fused_cross_entropy(h, w, t, 7)
        ref, _ = chunked_cross_entropy(h, w, t, 7)
    assert total.grad_fn is None and int(count) == 94
    torch.testing.assert_close(total, ref)


def test_fused_keeps_no_logits_for_backward():
    torch.manual_seed(0)
    L, V, H = 512, 1000, 8
    h = torch.randn(1, L, H, requires_grad=True)
    w = torch.randn(V, H, requires_grad=True)
    t = torch.randint(0, V, (1, L))
    saved: list[torch.Size] = []

    def pack(x):
        saved.append(x.shape)
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fused_cross_entropy(h, w, t, 64)
    assert sorted(saved) == sorted([h.shape, w.shape])  # the two gradients, nothing else


def test_fused_under_bf16_autocast():
    """Same numerics as the chunked path under autocast; saved grads in the inputs' dtypes."""
    h, w, t = _problem()
    for hidden in (h, h.detach().bfloat16().requires_grad_()):
        results = []
        for fn in (chunked_cross_entropy, fused_cross_entropy):
            hidden.grad = w.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16):
                total, _ = fn(hidden, w, t, 7)
            total.backward()
            results.append((total.detach(), hidden.grad.clone(), w.grad.clone()))
        (ref, ref_h, ref_w), (got, got_h, got_w) = results
        assert got.dtype == torch.float32 and got_h.dtype == hidden.dtype
        assert got_w.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-2)
        torch.testing.assert_close(got_h.float(), ref_h.float(), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(got_w, ref_w, rtol=2e-2, atol=5e-2)


# ------------------------------------------------------------------ refusals on CPU
def _cfg(packed_dir: Path, tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig(data=str(packed_dir), out=str(tmp_path / "o"), steps=1, seq_len=64, **kw)


def test_liger_is_refused_naming_the_install_or_cuda(packed_dir, tmp_path):
    cfg = _cfg(packed_dir, tmp_path, ce_impl="liger", device="cpu")
    with pytest.raises(ConfigError, match="ce_impl") as e:
        cfg.validate()
    assert "\n" not in str(e.value)
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        assert "pip install liger-kernel" in str(e.value)
        with pytest.raises(fp.FastPathError, match="pip install liger-kernel"):
            fp.liger_loss()
    else:
        assert "CUDA" in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
@pytest.mark.parametrize("key, value, words", [
    ("ce_impl", "liger", "liger"), ("activation_offload", True, "host memory"),
    ("attention", "flash", "flash"),
])
def test_cuda_only_paths_refused_on_cpu_with_one_line(packed_dir, tmp_path, key, value, words):
    for device in ("cpu", "auto"):
        cfg = _cfg(packed_dir, tmp_path, device=device, **{key: value})
        with pytest.raises(ConfigError, match=f"config key '{key}'.*{words}") as e:
            cfg.validate()
        assert "\n" not in str(e.value)
    with pytest.raises(fp.FastPathError, match=key):  # and again where the run resolved cpu
        fp.prepare_model(LlamaForCausalLM(LLAMA), _cfg(packed_dir, tmp_path, **{key: value}),
                         device_type="cpu")


def test_flash_is_refused_naming_the_install(packed_dir, tmp_path):
    import importlib.util

    if any(importlib.util.find_spec(m) for m in ("flash_attn", "flash_attn_interface")):
        pytest.skip("FlashAttention is installed here")
    with pytest.raises(ConfigError, match="attention.*pip install flash-attn"):
        _cfg(packed_dir, tmp_path, attention="flash", device="cuda").validate()
    with pytest.raises(fp.FastPathError, match="pip install flash-attn"):
        fp.flash_implementation("cuda")


def test_bad_choices_name_the_key(packed_dir, tmp_path):
    for key in ("ce_impl", "checkpoint_policy", "attention"):
        with pytest.raises(ConfigError, match=f"config key '{key}': must be one of"):
            _cfg(packed_dir, tmp_path, **{key: "fast"}).validate()


# ------------------------------------------------------------------ model-level equality
@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(LLAMA, attn_implementation="sdpa").state_dict()


@pytest.fixture(scope="module")
def doc_rows(tmp_path_factory) -> TrainRows:
    folder = write_packed(tmp_path_factory.mktemp("fp") / "d", rows=2, seq_len=96, shards=1,
                          vocab_lo=10, vocab_hi=290)
    return TrainRows(folder, 96, doc_mask="mask")


def _step(weights, doc_rows, *, attn="sdpa", ce_impl="chunked", offload=None, shard=None,
          saved=None, **keys):
    """(loss, {name: grad}) of one forward+backward of the tiny LLaMA prepared with ``keys``
    (sharded with FSDP2 on ``shard``'s device; ``saved`` collects the sizes of the
    activations the forward saved)."""
    from longctx.train import distributed as distrib

    model = LlamaForCausalLM._from_config(LLAMA, attn_implementation=attn)
    model.load_state_dict(weights)
    model.train()
    cfg = TrainConfig(**{"checkpointing": False, **keys})
    fp.prepare_model(model, cfg, device_type="cpu")
    if offload is not None:  # the offload hooks, run with host-to-host copies
        offload.attach(fp.decoder_layers(model))
    wrapper = CausalLMWithLoss(model, 16, ce_impl)
    if shard is not None:
        distrib.shard(wrapper, list(model.model.layers), bf16=False, cpu_offload=False,
                      device=shard)
    batch = doc_rows.batch([0, 1])

    def pack(t):
        if saved is not None and not (t.is_leaf and t.requires_grad):
            saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total, _ = wrapper(torch.from_numpy(batch.input_ids),
                           torch.from_numpy(batch.position_ids), torch.from_numpy(batch.targets))
    (total / 100).backward()
    grads = {n: getattr(p.grad, "full_tensor", lambda g=p.grad: g)().clone()
             for n, p in model.named_parameters()}
    return total.detach(), grads


def _assert_same(got, ref):
    torch.testing.assert_close(got[0], ref[0], rtol=RTOL, atol=0)
    assert got[1].keys() == ref[1].keys()
    for name in ref[1]:
        torch.testing.assert_close(got[1][name], ref[1][name], rtol=RTOL, atol=1e-7, msg=name)


@pytest.fixture(scope="module")
def plain(weights, doc_rows):
    return _step(weights, doc_rows)


@pytest.mark.parametrize("keys", [
    {"ce_impl": "fused"},
    {"checkpointing": True},
    {"checkpointing": True, "checkpoint_policy": "selective"},
], ids=["fused", "full-ac", "selective-ac"])
def test_fast_path_equals_plain(weights, doc_rows, plain, keys):
    _assert_same(_step(weights, doc_rows, **keys), plain)


class _CountMatmuls(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default,
                    torch.ops.aten.bmm.default):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("policy, recomputed", [("full", True), ("selective", False)])
def test_selective_checkpointing_does_not_recompute_matmuls(weights, doc_rows, policy, recomputed):
    def backward_matmuls(**keys) -> int:
        model = LlamaForCausalLM._from_config(LLAMA, attn_implementation="sdpa").train()
        fp.prepare_model(model, TrainConfig(**keys), device_type="cpu")
        ids = torch.from_numpy(doc_rows.batch([0]).input_ids)
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        with _CountMatmuls() as mode:
            hidden.sum().backward()
        return mode.count

    without = backward_matmuls(checkpointing=False)
    with_ac = backward_matmuls(checkpointing=True, checkpoint_policy=policy)
    assert (with_ac > without) == recomputed, (policy, with_ac, without)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_offload_hooks_give_the_same_gradients(weights, doc_rows, plain, checkpointing):
    offload = fp.LayerOffload("cpu", min_bytes=0)  # every saved tensor takes the offload path
    _assert_same(_step(weights, doc_rows, checkpointing=checkpointing, offload=offload), plain)
    stats = offload.stats
    assert stats["offloaded"] > 0 and stats["prefetched"] == stats["offloaded"], stats
    assert stats["copied_on_demand"] == 0, stats  # each layer came back ahead of its backward


def test_offload_keeps_small_tensors_and_parameters(weights, doc_rows):
    offload = fp.LayerOffload("cpu")  # 1 MiB threshold: nothing of the tiny model moves
    _step(weights, doc_rows, offload=offload)
    assert offload.stats["offloaded"] == 0 and offload.stats["kept"] > 0
    leaf = torch.zeros(1 << 19, requires_grad=True)  # 2 MiB, but a parameter-like leaf
    big = torch.zeros(1 << 19) + 1
    offload._enter(None, ())
    try:
        assert offload.pack(leaf) is leaf
        packed = offload.pack(big)
    finally:
        offload._exit(None, (), None)
    assert packed is not big and torch.equal(offload.unpack(packed), big)


def _compile_works() -> str | None:
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as e:  # a missing C compiler or inductor failure on this machine
        return f"torch.compile does not run here: {type(e).__name__}: {e}"
    return None


NO_COMPILE = _compile_works()


@pytest.mark.skipif(NO_COMPILE is not None, reason=NO_COMPILE or "")
@pytest.mark.parametrize("keys", [{"compile": True}, {"compile": True, "checkpointing": True}],
                         ids=["compile", "compile+full-ac"])
def test_compiled_layers_equal_plain(weights, doc_rows, plain, keys):
    # inductor on CPU reorders float sums: the loss agrees to rtol 1e-5, the gradients too
    _assert_same(_step(weights, doc_rows, **keys), plain)


@pytest.mark.skipif(NO_COMPILE is not None, reason=NO_COMPILE or "")
def test_compiled_layers_keep_checkpointing_after_fsdp_sharding(weights, doc_rows, plain):
    """FSDP2 swaps each layer's class; the compiled forward must still take the checkpoint."""
    from longctx.train import distributed as distrib

    d = distrib.setup("cpu", need_group=True)  # one gloo process
    try:
        sizes: dict[bool, list[int]] = {True: [], False: []}
        for checkpointing in (True, False):
            got = _step(weights, doc_rows, shard=d.device, saved=sizes[checkpointing],
                        compile=True, checkpointing=checkpointing)
            _assert_same(got, plain)
    finally:
        distrib.teardown(d)
    assert 2 * sum(sizes[True]) < sum(sizes[False]), {k: sum(v) for k, v in sizes.items()}


@pytest.mark.skipif(NO_COMPILE is not None, reason=NO_COMPILE or "")
def test_all_fast_paths_together(weights, doc_rows, plain):
    offload = fp.LayerOffload("cpu", min_bytes=0)
    got = _step(weights, doc_rows, ce_impl="fused", offload=offload, checkpointing=True,
                checkpoint_policy="selective", compile=True)
    _assert_same(got, plain)
    assert offload.stats["offloaded"] > 0


def test_flex_equals_sdpa_with_document_mask(weights, doc_rows):
    """The loss only: FlexAttention has no backward on CPU (torch raises NotImplementedError)."""
    losses = []
    for attn in ("sdpa", "flex_attention"):
        model = LlamaForCausalLM._from_config(LLAMA, attn_implementation=attn)
        model.load_state_dict(weights)
        batch = doc_rows.batch([0, 1])
        with torch.no_grad():
            total, _ = CausalLMWithLoss(model, 16)(torch.from_numpy(batch.input_ids),
                                                   torch.from_numpy(batch.position_ids),
                                                   torch.from_numpy(batch.targets))
        losses.append(total)
    torch.testing.assert_close(losses[1], losses[0], rtol=RTOL, atol=0)
    with torch.no_grad():  # without position resets no mask is built: another loss
        unmasked, _ = CausalLMWithLoss(model, 16)(torch.from_numpy(batch.input_ids), None,
                                                  torch.from_numpy(batch.targets))
    assert not torch.allclose(unmasked, losses[0])


def test_attention_key_picks_the_implementation():
    from longctx.train.model import attention_implementation as impl

    assert impl("cuda", "mask") == "flex_attention" and impl("cpu", "mask") == "sdpa"
    assert impl("cuda", "none") == "sdpa"
    assert impl("cpu", "none", "flex") == "flex_attention"
    assert impl("cuda", "mask", "sdpa") == "sdpa"


# ------------------------------------------------------------------ a whole run, resumed
FAST = dict(ce_impl="fused", checkpointing=True, checkpoint_policy="selective",
            compile=NO_COMPILE is None)
BASE = dict(model="tiny", seq_len=64, batch_tokens="128", lr=3e-3, seed=1, grad_clip=1.0)


def _run(data: Path, out: Path, **kw) -> dict:
    return train(build_config(TrainConfig, cli={"data": str(data), "out": str(out), **BASE,
                                                **FAST, **kw}))


def _losses(out: Path) -> dict[int, float]:
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs}


def test_fast_run_resumes_exactly_and_records_its_paths(packed_dir, tmp_path):
    from safetensors.torch import load_file

    full = _run(packed_dir, tmp_path / "full", steps=4)
    _run(packed_dir, tmp_path / "half", steps=2)
    _run(packed_dir, tmp_path / "half", steps=4)
    ref, got = _losses(tmp_path / "full"), _losses(tmp_path / "half")
    assert sorted(got) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert abs(got[step] - ref[step]) / abs(ref[step]) < 1e-4, (step, got[step], ref[step])
    wa = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "half" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6, msg=name)
    assert full["fast_paths"] == {"ce_impl": "fused", "checkpointing": "selective",
                                  "activation_offload": False, "compile": FAST["compile"],
                                  "attention": "sdpa"}
    config = full["config"]
    for key in ("ce_impl", "checkpoint_policy", "activation_offload", "compile", "attention"):
        assert key in config
    assert config["ce_impl"] == "fused" and config["attention"] == "auto"
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"ce_impl", "checkpoint_policy", "activation_offload", "compile", "attention"} <= fields
