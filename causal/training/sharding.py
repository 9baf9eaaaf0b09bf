"""FSDP for training: PyTorch's fully_shard (FSDP2) over every expert of generator, critic and teacher, one shard
group per transformer block plus the rest, on the process group accelerate set up. Full (unsharded) tensors for
checkpoints are gathered with DTensor.full_tensor and put back with distribute_tensor.

The model projects text inside each block's forward (causal/model/transformer.py), and a sharded rollout keeps no
text cache (StreamOptions.text_cache=False), so a sharded block's weights are only ever used inside its forward.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def shard(model: nn.Module) -> None:
    """fully_shard every block, then the whole model (in place; parameters become DTensors). Everything is
    resharded after each forward, so between calls the parameters are always the sharded DTensors (which the
    optimizers and the EMA hold)."""
    from torch.distributed.fsdp import fully_shard
    for blk in getattr(model, "blocks", []):
        fully_shard(blk, reshard_after_forward=True)
    fully_shard(model, reshard_after_forward=True)


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (a collective for a sharded one: every process must call it)."""
    return t.full_tensor() if is_sharded(t) else t


def like(template: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` (whole) laid out as `template` (sharded or not)."""
    if is_sharded(template) and not is_sharded(value):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(value.to(template.dtype), template.device_mesh, template.placements)
    return value


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: full(v) for k, v in module.state_dict().items()}


def load_full_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    module.load_state_dict({k: like(own[k], v) if k in own else v for k, v in state.items()})


def optimizer_state(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    sd["state"] = {i: {k: full(v) if torch.is_tensor(v) else v for k, v in st.items()} for i, st in sd["state"].items()}
    return sd


def load_optimizer_state(opt: torch.optim.Optimizer, sd: dict) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, st in sd["state"].items():
        p = params[int(i)]
        for k, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape:
                st[k] = like(p, v)
    opt.load_state_dict(sd)
