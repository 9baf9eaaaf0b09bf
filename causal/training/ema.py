"""Exponential moving average of the generator's weights (float32 shadow copies, sharded like the weights)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .sharding import full, like


class EMA:
    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.shadow = {f"{n}.{k}": p.detach().float().clone() for n, m in modules.items()
                       for k, p in m.named_parameters()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], copy: bool = False) -> None:
        """shadow = decay * shadow + (1 - decay) * weights; `copy` sets shadow = weights (before the EMA starts)."""
        for n, m in modules.items():
            for k, p in m.named_parameters():
                s = self.shadow[f"{n}.{k}"]
                if copy:
                    s.copy_(p.detach().float())
                else:
                    s.lerp_(p.detach().float(), 1 - self.decay)

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        """Shadow weights of expert `name`, keyed like its state dict."""
        pre = name + "."
        return {k[len(pre):]: full(v) for k, v in self.shadow.items() if k.startswith(pre)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Whole tensors (a collective for sharded ones)."""
        return {k: full(v) for k, v in self.shadow.items()}

    def load_state_dict(self, d: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(d)
        if missing:
            raise ValueError(f"the checkpoint's EMA lacks {len(missing)} weights (e.g. {sorted(missing)[0]}); it "
                             "belongs to another model")
        for k in self.shadow:
            self.shadow[k] = like(self.shadow[k], d[k].float())
