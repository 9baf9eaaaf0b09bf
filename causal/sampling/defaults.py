"""How a causal Wan release is sampled by default: steps, shift, frames per chunk, attention window and sinks.

The weights loader recognises the release (causal/weights/releases.py) and sets `ExpertPair.defaults`; a stream
option left at MODEL ("model") takes the release's value, one given explicitly wins. Experts built without the
loader fall back to the CausalWan2.2-I2V-A14B values for a pair and the Self-Forcing values for a dense model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .schedule import CAUSALWAN_A14B_STEPS, SELF_FORCING_STEPS

MODEL = "model"  # a StreamOptions value meaning "what the loaded model's release uses"


@dataclass(frozen=True)
class ModelDefaults:
    name: str  # what was recognised, e.g. "Self-Forcing (chunk-wise)"
    steps: tuple
    shift: float | None  # None: the checkpoint's scheduler (or 5)
    chunk_frames: int = 3
    window: int | None = None  # attention window in latent frames; None: attend to everything
    sink: int = 0
    note: str = ""  # what of the release's own sampler is not reproduced
    first_steps: tuple | None = None  # the first chunk's own step list, if the release has one

    def describe(self, shift: float | None = None) -> str:
        shift = self.shift if shift is None else shift
        wise = "frame-wise" if self.chunk_frames == 1 else f"chunk-wise, {self.chunk_frames} frames per chunk"
        window = f"window {self.window} + {self.sink} sink frames" if self.window else "no window"
        steps = ", ".join(f"{s:g}" for s in self.steps)
        if self.first_steps:
            steps += f"; first chunk {', '.join(f'{s:g}' for s in self.first_steps)}"
        text = (f"{self.name}: {len(self.steps)} steps ({steps}), shift {shift:g}, {wise}, {window}"
                if shift is not None else f"{self.name}: {len(self.steps)} steps ({steps}), {wise}, {window}")
        return f"{text}; {self.note}" if self.note else text


CAUSALWAN_A14B = ModelDefaults("CausalWan2.2-I2V-A14B (expert pair)", CAUSALWAN_A14B_STEPS, None)
SELF_FORCING = ModelDefaults("Self-Forcing-style dense model", SELF_FORCING_STEPS, 5.0)


def model_defaults(experts) -> ModelDefaults:
    own = getattr(experts, "defaults", None)
    if own is not None:
        return own
    return CAUSALWAN_A14B if experts.high is not None else SELF_FORCING


def resolve_options(options, experts):
    """`options` (StreamOptions) with every MODEL value, and steps None, replaced by the model's defaults (the
    release's first-chunk steps too, unless steps were given)."""
    d = model_defaults(experts)
    new = {}
    if options.steps is None:
        new["steps"] = tuple(d.steps)
        if options.first_steps is None and d.first_steps:
            new["first_steps"] = tuple(d.first_steps)
    for name in ("chunk_frames", "window", "sink"):
        if getattr(options, name) == MODEL:
            new[name] = getattr(d, name)
    return dataclasses.replace(options, **new) if new else options
