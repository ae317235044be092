"""Process group setup and FSDP2 sharding; one code path for 1 process and for torchrun.

Under ``torchrun --nproc-per-node N`` the environment carries RANK/WORLD_SIZE/LOCAL_RANK
(multi-node through torchrun's rendezvous). FSDP2 ``fully_shard`` is applied per decoder
layer and then to the root, which shards parameters, gradients and optimizer state
(ZeRO-3 class); ``cpu_offload`` keeps them in host memory. A single process that asks for
FSDP or offload gets a one-rank process group, so the same code runs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: Any  # torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()


def setup(device: str = "auto", need_group: bool = False) -> Dist:
    """Init the process group when launched by torchrun (or when FSDP needs one)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    here = False
    if (world > 1 or need_group) and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if world > 1:
            dist.init_process_group(backend=backend, device_id=dev if use_cuda else None)
        else:
            store = tempfile.NamedTemporaryFile(prefix="longctx-pg-", delete=False).name
            dist.init_process_group(backend=backend, init_method=f"file://{store}", rank=0,
                                    world_size=1)
        here = True
    return Dist(rank, world, local_rank, dev, here)


def teardown(d: Dist) -> None:
    import torch.distributed as dist

    if d.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def shard(module: Any, layers: list[Any], *, bf16: bool, cpu_offload: bool, device: Any) -> Any:
    """FSDP2: shard each decoder layer, then the root (embeddings, norm, head)."""
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {}
    if bf16:
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32
        )
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(module, **kwargs)
    on_meta = any(p.is_meta for p in module.parameters())
    if not cpu_offload and not on_meta:  # meta-initialised modules are moved by to_empty()
        module.to(device)
    return module


def all_reduce_sum(value: float, d: Dist) -> float:
    """Sum a Python number over ranks (identity for one process)."""
    if not d.sharded:
        return float(value)
    import torch
    import torch.distributed as dist

    dev = d.device if d.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return float(t.item())


def barrier(d: Dist) -> None:
    if d.sharded:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: Any, d: Dist) -> Any:
    if not d.sharded:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
