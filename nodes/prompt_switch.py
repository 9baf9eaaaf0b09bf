"""CausalWan Prompt Switch: up to four CONDITIONINGs, each taking over at a chunk -> CAUSALWAN_PROMPTS."""
from __future__ import annotations

from ..causal.sampling.prompts import SWITCH_MODES
from .conditioning import conditioning_tensor
from .values import CATEGORY, PROMPTS, PromptEntry, PromptList

SLOTS = 4
MAX_CHUNK = 10000
DEFAULT_STARTS = {2: 2, 3: 4, 4: 6}


class CausalWanPromptSwitch:
    DESCRIPTION = ("A prompt timeline for a stream: conditioning_1 from the first chunk, then conditioning_2..4 "
                   "from the chunks you choose (counted from 0 = the first chunk the sampler makes). The "
                   "switch mode says how the model moves to the new text.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (PROMPTS,)
    RETURN_NAMES = ("prompts",)
    OUTPUT_TOOLTIPS = ("The prompt timeline, for the prompts input of CausalWan Chunk Sampler or Continue.",)

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for k in range(2, SLOTS + 1):
            optional[f"conditioning_{k}"] = ("CONDITIONING", {"tooltip": f"Prompt {k} (optional)."})
            optional[f"start_chunk_{k}"] = ("INT", {
                "default": DEFAULT_STARTS[k], "min": 1, "max": MAX_CHUNK,
                "tooltip": f"Chunk at which prompt {k} takes over (0 = the first chunk); ignored while "
                           f"conditioning_{k} is not connected. Must come after the previous prompt's chunk."})
        return {"required": {
            "conditioning_1": ("CONDITIONING", {"tooltip": "Prompt 1, from the first chunk on "
                                                           "(CLIPTextEncode with a CLIPLoader of type 'wan')."}),
            "switch_mode": (list(SWITCH_MODES), {"default": "cut", "tooltip": (
                "cut: the next chunk reads the new text, the cached frames stay as they were. recache: the "
                "cached recent frames are re-encoded under the new text first (smoother, one extra pass). "
                "blend: the text fades from the old prompt to the new one over blend_chunks chunks.")}),
            "blend_chunks": ("INT", {"default": 2, "min": 1, "max": 64, "tooltip": (
                "Chunks over which a 'blend' switch fades to the new prompt; unused by cut and recache.")}),
        }, "optional": optional}

    def build(self, conditioning_1, switch_mode="cut", blend_chunks=2, **slots):
        if switch_mode not in SWITCH_MODES:
            raise ValueError(f"unknown switch mode {switch_mode!r}; choose one of {', '.join(SWITCH_MODES)}")
        entries = [PromptEntry(0, conditioning_tensor(conditioning_1), switch_mode, slot=1)]
        previous = (1, 0)
        for k in range(2, SLOTS + 1):
            cond = slots.get(f"conditioning_{k}")
            if cond is None:
                continue
            chunk = int(slots.get(f"start_chunk_{k}", DEFAULT_STARTS[k]))
            if chunk <= previous[1]:
                raise ValueError(f"prompt {k} starts at chunk {chunk}, which is not after prompt {previous[0]} "
                                 f"(chunk {previous[1]}); give each prompt a later start chunk than the one "
                                 "before it")
            entries.append(PromptEntry(chunk, conditioning_tensor(cond), switch_mode, slot=k))
            previous = (k, chunk)
        return (PromptList(entries, blend_chunks=int(blend_chunks)),)
