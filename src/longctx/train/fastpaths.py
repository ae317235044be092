"""Faster training steps, each behind a config key whose default is today's behaviour.

:func:`prepare_model` applies them to an HF causal LM in place, before FSDP sharding, in
this order (each wraps what the previous one built):

1. activation checkpointing per decoder layer (``checkpointing``): ``full`` recomputes the
   whole layer in backward; ``selective`` keeps the outputs of matmuls and attention (the
   expensive ops) and recomputes the elementwise rest (norms, activations, RoPE);
2. activation offload (``activation_offload``, CUDA): each layer's saved tensors go to
   pinned host memory on a side stream and come back, one layer ahead, in backward
   (:class:`LayerOffload`);
3. regional compilation (``compile``): ``torch.compile`` of each decoder layer's forward,
   with the checkpoint *inside* the compiled region (as torchtitan does: the compiler then
   sees the checkpoint's tags and plans the recompute itself), the offload hooks and FSDP's
   outside it (they run eagerly around the compiled layer).

:func:`check_fast_paths` refuses, in one line, the paths this machine cannot run (Liger and
FlashAttention not installed, CUDA-only paths without a GPU); ``TrainConfig.validate`` calls
it, and :func:`prepare_model` again with the device the run resolved to. (``cfg`` below is a
``TrainConfig``; it is not imported, since config.py imports this module.)
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from longctx.errors import LongctxError

LIGER_INSTALL = "pip install liger-kernel"
FLASH_INSTALL = "pip install flash-attn (or flash-attn-3 / flash-attn-4)"


class FastPathError(LongctxError):
    pass


def check_fast_paths(cfg: Any, device_type: str) -> None:
    """Refuse the fast paths that cannot run on ``device_type`` ("cpu" or "cuda")."""
    if cfg.ce_impl == "liger":
        if importlib.util.find_spec("liger_kernel") is None:
            raise FastPathError(f"config key 'ce_impl': liger needs Liger-Kernel, which is not "
                                f"installed ({LIGER_INSTALL}); or use ce_impl fused")
        if device_type != "cuda":
            raise FastPathError(f"config key 'ce_impl': liger runs on CUDA only (device "
                                f"{cfg.device!r} is {device_type} here); use ce_impl fused")
    if cfg.activation_offload and device_type != "cuda":
        raise FastPathError(f"config key 'activation_offload': moves activations from the GPU "
                            f"to host memory; device {cfg.device!r} is {device_type} here, where "
                            f"activations are already in host memory (drop the key)")
    if cfg.attention == "flash":
        flash_implementation(device_type)


def flash_implementation(device_type: str) -> str:
    """transformers' name of the best FlashAttention installed (3, then 2, then 4)."""
    from transformers.utils import import_utils as iu

    if not any(importlib.util.find_spec(m) for m in ("flash_attn", "flash_attn_interface")):
        raise FastPathError(f"config key 'attention': flash needs FlashAttention, which is not "
                            f"installed ({FLASH_INSTALL}); or use sdpa / flex")
    if device_type != "cuda":
        raise FastPathError(f"config key 'attention': flash runs on CUDA only (the device is "
                            f"{device_type} here); use sdpa or flex")
    for name, available in (("flash_attention_3", "is_flash_attn_3_available"),
                            ("flash_attention_2", "is_flash_attn_2_available"),
                            ("flash_attention_4", "is_flash_attn_4_available")):
        check = getattr(iu, available, None)
        if check is not None and check():
            return name
    raise FastPathError("config key 'attention': flash: FlashAttention is installed but "
                        "transformers can use none of it (flash-attn >= 2.3.3, flash-attn-3 or "
                        "flash-attn-4 on a CUDA GPU)")


@functools.cache
def liger_loss() -> Any:
    """Liger-Kernel's fused linear cross-entropy module (sum over scored tokens)."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as e:
        raise FastPathError(f"config key 'ce_impl': liger needs Liger-Kernel ({LIGER_INSTALL}): "
                            f"{e}") from None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="sum")


def liger_cross_entropy(hidden: Any, weight: Any, targets: Any, chunk: int) -> tuple[Any, Any]:
    """(sum of token losses, scored tokens) through Liger-Kernel's fused linear cross-entropy;
    without grad (eval) the chunked loss, as :func:`longctx.train.loss.fused_cross_entropy`
    does."""
    import torch

    from longctx.train.loss import IGNORE, chunked_cross_entropy

    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        return chunked_cross_entropy(hidden, weight, targets, chunk)
    t = targets.reshape(-1)
    loss = liger_loss()(weight, hidden.reshape(-1, hidden.shape[-1]), t)
    return loss, (t != IGNORE).sum()


def prepare_model(model: Any, cfg: Any, *, device_type: str | None = None) -> None:
    """Checkpointing (with ``checkpoint_policy``), activation offload and compilation.

    ``device_type`` is where the run trains (default: ``cfg.device``, auto = cuda when one is
    visible); a path that cannot run there is refused (:func:`check_fast_paths`).
    """
    device_type = device_type or resolved_device_type(cfg)
    check_fast_paths(cfg, device_type)
    if cfg.checkpointing:
        enable_checkpointing(model, cfg.checkpoint_policy)
    if cfg.activation_offload:
        LayerOffload(device_type).attach(decoder_layers(model))
    if cfg.compile:
        compile_layers(decoder_layers(model))


def resolved_device_type(cfg: Any) -> str:
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def decoder_layers(model: Any) -> list[Any]:
    """The repeated decoder blocks of an HF causal LM (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise FastPathError(f"{type(model).__name__}: no model.layers to apply the fast paths to")
    return list(layers)


def enable_checkpointing(model: Any, policy: str = "full") -> None:
    """Non-reentrant activation checkpointing per decoder layer (API renamed in transformers 5.2x).

    ``selective`` passes a ``context_fn`` so the checkpoint keeps the outputs of the ops in
    :func:`saved_ops` and recomputes the rest.
    """
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if policy == "selective":
        kwargs["context_fn"] = selective_context
    elif policy != "full":
        raise FastPathError(f"config key 'checkpoint_policy': must be full or selective "
                            f"(got {policy!r})")
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@functools.cache
def saved_ops() -> frozenset[Any]:
    """The ops whose outputs selective checkpointing keeps: matmuls and attention kernels."""
    import torch

    aten = torch.ops.aten
    names = ("mm", "addmm", "bmm", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_fused_attention_overrideable")
    ops = {getattr(aten, n).default for n in names if hasattr(aten, n)}
    flex = getattr(torch.ops.higher_order, "flex_attention", None)
    if flex is not None:
        ops.add(flex)
    return frozenset(ops)


def _keep_expensive(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in saved_ops() else CheckpointPolicy.PREFER_RECOMPUTE


def selective_context() -> Any:
    """The (forward, recompute) context pair of one selectively checkpointed layer call."""
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(_keep_expensive)


def compile_layers(layers: list[Any]) -> None:
    """``torch.compile`` each layer's forward in place (parameter names are unchanged).

    The compiled function looks the forward up on the layer's *current* class at each call:
    FSDP2 swaps the class when sharding, and transformers checkpoints only in the outermost
    class's forward, so a forward bound before sharding would silently stop checkpointing.
    Module hooks (FSDP's, the offload's) stay outside the compiled region.
    """
    import torch

    for layer in layers:
        layer.forward = torch.compile(functools.partial(_class_forward, layer))


def _class_forward(layer: Any, *args: Any, **kwargs: Any) -> Any:
    return type(layer).forward(layer, *args, **kwargs)


MIN_OFFLOAD_BYTES = 1 << 20  # smaller saved tensors stay on the device: not worth a copy


class LayerOffload:
    """Saved tensors of each decoder layer call in pinned host memory, prefetched in backward.

    A forward pre-hook opens a group and enters ``saved_tensors_hooks`` for the layer's call;
    the forward hook leaves it. :meth:`pack` copies a saved tensor of at least ``min_bytes``
    (not a parameter: those stay put) to pinned host memory on a side stream; :meth:`unpack`
    brings it back. When backward first unpacks a tensor of a group, the rest of that group
    and the whole group before it (the layer backward reaches next) are copied back on the
    side stream, so the copies overlap the layer's backward compute.

    ``device_type="cpu"`` runs the same bookkeeping with host-to-host copies (no streams): it
    exists so the tests can check the hook logic on a machine without a GPU; ``prepare_model``
    refuses offload on CPU.
    """

    def __init__(self, device_type: str, min_bytes: int = MIN_OFFLOAD_BYTES) -> None:
        import torch

        self.cuda = device_type == "cuda"
        self.min_bytes = min_bytes
        self.stream = torch.cuda.Stream() if self.cuda else None
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._current: _Group | None = None
        self._last: Any = None  # weakref to the group opened before the current one
        self.stats = {"offloaded": 0, "kept": 0, "prefetched": 0, "copied_on_demand": 0}

    def attach(self, layers: list[Any]) -> None:
        for layer in layers:
            layer.register_forward_pre_hook(self._enter)
            layer.register_forward_hook(self._exit, always_call=True)

    def _enter(self, module: Any, args: Any) -> None:
        import weakref

        import torch

        if not torch.is_grad_enabled():
            return
        self._current = _Group(self._last)
        self._last = weakref.ref(self._current)
        self._hooks.__enter__()

    def _exit(self, module: Any, args: Any, output: Any) -> None:
        if self._current is not None:
            self._current = None
            self._hooks.__exit__(None, None, None)

    def pack(self, t: Any) -> Any:
        import torch

        if (self._current is None or t.layout != torch.strided or (t.is_leaf and t.requires_grad)
                or t.numel() * t.element_size() < self.min_bytes):
            self.stats["kept"] += 1
            return t
        import weakref

        saved = _Saved(self._current, t.device)
        if self.cuda:
            saved.host = torch.empty_like(t, device="cpu", pin_memory=True)
            self.stream.wait_stream(torch.cuda.current_stream(t.device))
            with torch.cuda.stream(self.stream):
                saved.host.copy_(t, non_blocking=True)
            t.record_stream(self.stream)  # its memory is not reused before the copy is done
        else:
            saved.host = t.detach().clone()
        self._current.saved.append(weakref.ref(saved))  # freed with autograd's reference
        self.stats["offloaded"] += 1
        return saved

    def unpack(self, saved: Any) -> Any:
        if not isinstance(saved, _Saved):
            return saved
        group = saved.group
        if not group.reached:
            group.reached = True
            self._prefetch(group)
            previous = group.previous() if group.previous is not None else None
            if previous is not None:
                self._prefetch(previous)
        return self._take(saved)

    def _prefetch(self, group: _Group) -> None:
        import torch

        for ref in group.saved:
            saved = ref()
            if saved is None or saved.device_copy is not None:
                continue
            if self.cuda:
                with torch.cuda.stream(self.stream):
                    saved.device_copy = saved.host.to(saved.device, non_blocking=True)
                    saved.ready = torch.cuda.Event()
                    saved.ready.record(self.stream)
            else:
                saved.device_copy = saved.host.clone()
            self.stats["prefetched"] += 1

    def _take(self, saved: _Saved) -> Any:
        import torch

        t, saved.device_copy = saved.device_copy, None
        if t is None:  # not prefetched (or unpacked a second time): copy now
            self.stats["copied_on_demand"] += 1
            if not self.cuda:
                return saved.host.clone()
            current = torch.cuda.current_stream(saved.device)
            current.wait_stream(self.stream)  # the copy to the host is done
            return saved.host.to(saved.device, non_blocking=True)
        if self.cuda:
            current = torch.cuda.current_stream(saved.device)
            current.wait_event(saved.ready)
            t.record_stream(current)  # allocated on the side stream, used on this one
        return t


class _Group:
    """Weakrefs to the tensors one layer call saved, and one to the group opened before it."""

    __slots__ = ("previous", "reached", "saved", "__weakref__")

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.reached = False
        self.saved: list[Any] = []


class _Saved:
    """One offloaded tensor: its host copy and, once prefetched, its copy back on the device."""

    __slots__ = ("group", "device", "host", "device_copy", "ready", "__weakref__")

    def __init__(self, group: _Group, device: Any) -> None:
        self.group = group
        self.device = device
        self.host: Any = None
        self.device_copy: Any = None
        self.ready: Any = None
