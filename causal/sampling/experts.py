"""A pair of Wan experts (high noise, low noise) split at a boundary timestep, or one dense expert."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..model.config import WanConfig
from ..model.transformer import CausalWanModel


class ExpertPair:
    """The denoisers of one model: `high` (t >= boundary) and `low`, or a single dense expert as `low`.

    `placement`, when set, is called with an expert's name before that expert runs, so an offload policy can move
    weights onto the compute device (see causal/memory/offload.py). `defaults`: how the release is sampled
    (causal/sampling/defaults.py; set by the weights loader, None: the A14B / Self-Forcing values).
    """

    def __init__(self, low: CausalWanModel, high: CausalWanModel | None = None, boundary: float | None = None,
                 shift: float = 5.0, share_cross_cache: bool = False, defaults=None):
        if high is not None:
            if boundary is None:
                raise ValueError("an expert pair needs a boundary timestep (e.g. 875 for CausalWan2.2-I2V-A14B)")
            if not 0 < boundary < 1000:
                raise ValueError(f"the boundary must be a timestep between 0 and 1000, got {boundary}")
            if high.config != low.config:
                raise ValueError("the high- and low-noise experts do not match: "
                                 f"high has {high.config.describe()}, low has {low.config.describe()}; "
                                 "load two experts of the same model")
        elif boundary is not None:
            raise ValueError("a boundary was given but there is only one expert; drop the boundary or add the "
                             "high-noise expert")
        self.high, self.low, self.boundary, self.shift = high, low, boundary, shift
        self.share_cross_cache = share_cross_cache and high is not None
        self.placement: Callable[[str], None] | None = None
        self.park_idle_caches = False  # set by swap/blocks offload: only the running expert's KV cache on the device
        self.defaults = defaults

    @property
    def config(self) -> WanConfig:
        return self.low.config

    @property
    def names(self) -> list[str]:
        """Expert names, the order in which they are primed."""
        return ["high", "low"] if self.high is not None else ["low"]

    def get(self, name: str) -> nn.Module:
        """The expert `name`, placed on the compute device by the offload policy if one is set."""
        if self.placement is not None:
            self.placement(name)
        model = self.high if name == "high" else self.low
        if model is None:
            raise KeyError(f"this model has no {name!r} expert")
        return model

    def modules(self) -> dict[str, nn.Module]:
        return {n: (self.high if n == "high" else self.low) for n in self.names}

    def parameters(self) -> list[nn.Parameter]:
        """Every expert's parameters, in the order of `names` (what an optimizer of the pair trains)."""
        return [p for m in self.modules().values() for p in m.parameters()]
