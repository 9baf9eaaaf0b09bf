"""Predicted peak memory per GPU of DMD training (causal/training), with FSDP over N GPUs or without.

    plan = plan_training(A14B, 480, 832, frames=21, experts=2, gpus=32, activation_checkpointing=True)
    plan.total, plan.describe()

Parts, in bytes per GPU (FSDP divides everything held between steps by N):
- weights: generator, critic and teacher (each `experts` experts) at the parameter dtype, plus the generator's
  float32 EMA;
- optimizer: AdamW's two float32 moments for every generator and critic weight;
- gradients: the largest single update's gradients, at the parameter dtype: one expert (an update only ever
  reaches the expert that produced the sample, or the critic expert of the drawn timestep);
- gathered (FSDP only): the whole weights of the block being run and the next one (prefetch) plus the non-block
  part of the model being run;
- kv_cache: the generator rollout's KV caches (all experts, the whole video, in the compute dtype);
- activations: what the larger of the two updates keeps for its backward pass: the generator's exit-step forward
  of every chunk (plus the copy of the cached keys/values each chunk attended to) or the critic's forward over
  the whole video; per token and layer 96 dim + 8 ffn bytes (fitted to the saved-tensor bytes of small models,
  float32 and bf16 autocast alike), or with activation checkpointing the block inputs (float32 residual) plus
  one block recomputed; plus one block's temporaries over the whole video (the teacher's no-grad forward), from
  the sampling planner's model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.config import WanConfig
from ..sampling.stream import chunk_sizes
from .memory_plan import GIB, activation_bytes, base_bytes, block_bytes

SAVED_PER_TOKEN_DIM = 96  # bytes saved for backward per token and layer, per unit of dim
SAVED_PER_TOKEN_FFN = 8  # ... per unit of ffn_dim


@dataclass(frozen=True)
class TrainMemoryPlan:
    gpus: int
    fsdp: bool
    activation_checkpointing: bool
    weights: int
    optimizer: int
    gradients: int
    gathered: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.gradients + self.gathered + self.kv_cache + self.activations

    def describe(self) -> str:
        how = f"FSDP over {self.gpus} GPUs" if self.fsdp else f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}, " \
                                                               "unsharded"
        parts = ", ".join(f"{name} {getattr(self, name) / GIB:.1f}" for name in
                          ("weights", "optimizer", "gradients", "gathered", "kv_cache", "activations"))
        ac = "with" if self.activation_checkpointing else "without"
        return f"training peak per GPU {self.total / GIB:.1f} GiB ({how}, {ac} activation checkpointing): {parts} GiB"


def expert_bytes(cfg: WanConfig, dtype: torch.dtype) -> int:
    return base_bytes(cfg, dtype) + cfg.num_layers * block_bytes(cfg, dtype)


def plan_training(cfg: WanConfig, height: int, width: int, *, frames: int = 21, chunk_frames: int = 3,
                  experts: int = 2, teacher: WanConfig | None = None, gpus: int = 1, fsdp: bool | None = None,
                  batch: int = 1, param_dtype: torch.dtype = torch.float32, compute: torch.dtype = torch.bfloat16,
                  activation_checkpointing: bool = False, first_alone: bool = True) -> TrainMemoryPlan:
    """batch: samples per GPU. compute: bf16 under mixed precision (the trainer then keeps its KV caches in bf16),
    else the parameter dtype."""
    if height % 16 or width % 16 or height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive multiples of 16, got {height}x{width}")
    if gpus < 1 or batch < 1 or experts not in (1, 2):
        raise ValueError(f"need gpus >= 1, batch >= 1 and 1 or 2 experts, got {gpus}, {batch}, {experts}")
    teacher = teacher or cfg
    fsdp = gpus > 1 if fsdp is None else fsdp
    shard = gpus if fsdp else 1
    p = param_dtype.itemsize
    gen, tea = expert_bytes(cfg, param_dtype), expert_bytes(teacher, param_dtype)
    n_gen, n_tea = gen // p, tea // p  # parameter counts (the critic is a copy of the teacher)
    weights = experts * (gen + 2 * tea + 4 * n_gen)  # generator, critic, teacher, float32 EMA
    optimizer = experts * 8 * (n_gen + n_tea)
    gradients = max(gen, tea)
    gathered = 0
    if fsdp:
        big = cfg if gen >= tea else teacher
        gathered = 2 * block_bytes(big, param_dtype) + base_bytes(big, param_dtype)

    tpf = (height // 8 // cfg.patch_size[1]) * (width // 8 // cfg.patch_size[2])
    tokens = frames * tpf * batch
    c = compute.itemsize  # the rollout's KV cache is kept in the compute dtype
    kv_cache = experts * 2 * cfg.num_layers * tokens * cfg.dim * c
    sizes = chunk_sizes(frames, chunk_frames, first_alone)
    seen = [sum(sizes[:i + 1]) for i in range(len(sizes))]  # frames each chunk attends to
    held = sum(2 * cfg.num_layers * s * tpf * batch * cfg.dim * c for s in seen)  # cached k/v copies

    def saved(c: WanConfig, n_tokens: int) -> int:
        if activation_checkpointing:
            per_layer = 4 * c.dim * n_tokens  # the float32 residual entering each block
            one_block = (SAVED_PER_TOKEN_DIM * c.dim + SAVED_PER_TOKEN_FFN * c.ffn_dim) * n_tokens
            return c.num_layers * per_layer + one_block
        return c.num_layers * (SAVED_PER_TOKEN_DIM * c.dim + SAVED_PER_TOKEN_FFN * c.ffn_dim) * n_tokens

    gen_update = saved(cfg, tokens) + held
    critic_update = saved(teacher, tokens)
    temporaries = activation_bytes(teacher, frames * tpf, frames, frames * tpf, compute, compute, "absolute", batch)
    activations = max(gen_update, critic_update) + temporaries
    return TrainMemoryPlan(gpus, fsdp, activation_checkpointing, math.ceil(weights / shard),
                           math.ceil(optimizer / shard), math.ceil(gradients / shard), gathered, kv_cache, activations)
