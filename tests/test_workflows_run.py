"""Every shipped workflow, converted to the API format, runs through our node classes on the tiny model files:
a small executor calls each node's FUNCTION with the converted inputs; the core nodes are stand-ins that keep
their socket types (LoadImage -> IMAGE, CLIPTextEncode -> a wan-style CONDITIONING, SaveVideo records)."""
import json
import zlib
from pathlib import Path

import pytest
import torch

import causalwan
from core_nodes import CORE_NODES
from workflow_format import object_info, ui_to_api
from node_models import FOLDER, TEXT_DIM, conditioning
from shipped_workflows import all_workflows

ROOT = Path(causalwan.__file__).parent
INFO = {**CORE_NODES, **object_info(causalwan.NODE_CLASS_MAPPINGS, causalwan.NODE_DISPLAY_NAME_MAPPINGS)}
TINY_FILES = {
    "causalwan2.2_i2v_a14b_high_noise_bf16.safetensors": "tiny_high.safetensors",
    "causalwan2.2_i2v_a14b_low_noise_bf16.safetensors": "tiny_low.safetensors",
    "self_forcing_dmd.pt": "tiny_dense.safetensors",
    "CausalWan2.2-I2V-A14B-Diffusers/": FOLDER,
    "wan_2.1_vae.safetensors": "tiny_vae.safetensors",
}
SIZE = 32


class Core:
    """Stand-ins for the core nodes, with their socket types."""

    def __init__(self):
        self.saved = []

    def LoadImage(self, image):
        return torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(1, 48, 64)

    def CLIPLoader(self, clip_name, type, device="default"):
        assert type == "wan"
        return ("clip", clip_name)

    def CLIPTextEncode(self, text, clip):
        return (conditioning(zlib.crc32(text.encode()), tokens=6, dim=TEXT_DIM),)

    def CreateVideo(self, images, fps, audio=None):
        return ({"images": images, "fps": fps},)

    def SaveVideo(self, video, filename_prefix, format, codec):
        self.saved.append((video, filename_prefix))
        return ()


def run(prompt: dict, core: Core, shown: dict | None = None) -> dict:
    """Execute an API-format prompt in dependency order; returns every node's outputs (and fills `shown` with
    what nodes show on themselves, their "ui" dicts)."""
    outputs, pending, shown = {}, dict(prompt), {} if shown is None else shown
    while pending:
        ready = [k for k, v in pending.items()
                 if all(not isinstance(x, list) or x[0] in outputs for x in v["inputs"].values())]
        assert ready, f"cycle or missing source among {sorted(pending)}"
        for key in sorted(ready, key=int):
            node = pending.pop(key)
            kwargs = {n: outputs[x[0]][x[1]] if isinstance(x, list) else x for n, x in node["inputs"].items()}
            kind = node["class_type"]
            if kind in causalwan.NODE_CLASS_MAPPINGS:
                cls = causalwan.NODE_CLASS_MAPPINGS[kind]
                if "unique_id" in cls.INPUT_TYPES().get("hidden", {}):
                    kwargs["unique_id"] = key
                result = getattr(cls(), cls.FUNCTION)(**kwargs)
                if isinstance(result, dict):  # {"ui": shown on the node, "result": the outputs}
                    shown[key] = result["ui"]
                    result = result["result"]
            else:
                result = getattr(core, kind)(**kwargs)
            outputs[key] = result
    return outputs


def tiny(prompt: dict) -> dict:
    for node in prompt.values():
        ins = node["inputs"]
        for name, value in ins.items():
            if isinstance(value, str) and value in TINY_FILES:
                ins[name] = TINY_FILES[value]
        if node["class_type"] == "CausalWanImageConditioner":
            ins["width"] = ins["height"] = SIZE
    return prompt


def by_class(prompt, kind):
    return [k for k, v in prompt.items() if v["class_type"] == kind]


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_workflow_runs_on_tiny_models(path, models):
    prompt = tiny(ui_to_api(json.loads(path.read_text()), INFO))
    core, shown = Core(), {}
    outputs = run(prompt, core, shown)
    (saved, prefix), = core.saved
    assert prefix.startswith("video/causalwan") and saved["fps"] == 16.0
    sampler = prompt[by_class(prompt, "CausalWanChunkSampler")[0]]["inputs"]
    continued = [prompt[k]["inputs"]["num_chunks"] for k in by_class(prompt, "CausalWanContinue")]
    chunks = sampler["num_chunks"] + sum(continued)
    image_start = any("image" in prompt[k]["inputs"] for k in by_class(prompt, "CausalWanImageConditioner"))
    latent_frames = (1 if image_start else 0) + 3 * chunks
    assert saved["images"].shape == (1 + 4 * (latent_frames - 1), SIZE, SIZE, 3)
    (decoder,) = by_class(prompt, "CausalWanDecode")
    assert torch.equal(outputs[decoder][0], saved["images"])
    model_key = by_class(prompt, "CausalWanModelLoader")[0]
    assert isinstance(outputs[model_key][1], str) and "offload" in outputs[model_key][1]
    assert shown[model_key] == {"text": [outputs[model_key][1]]}  # the memory plan, on the node itself
    (start_key,) = by_class(prompt, "CausalWanImageConditioner")
    assert shown[start_key]["text"][0].startswith("image to video, 32x32" if image_start else "text to video")
