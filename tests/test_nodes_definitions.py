"""Node definitions as ComfyUI reads them: ids and names prefixed, every input with a tooltip, outputs described,
the package entry point exports the mappings and the web folder."""
from pathlib import Path

import pytest

import causalwan
from workflow_format import combo_options

MAPPINGS = causalwan.NODE_CLASS_MAPPINGS
EXPECTED = {
    "CausalWanModelLoader": (("CAUSALWAN_MODEL", "STRING"), ["high_noise_model", "low_noise_model", "diffusers_folder",
                                                             "weight_dtype", "boundary", "offload"]),
    "CausalWanLoRA": (("CAUSALWAN_MODEL", "STRING"), ["model", "lora_name", "strength_high", "strength_low"]),
    "CausalWanVAELoader": (("CAUSALWAN_VAE",), ["vae_name", "dtype"]),
    "CausalWanImageConditioner": (("CAUSALWAN_START", "STRING"), ["width", "height", "fit", "image", "vae"]),
    "CausalWanPromptSwitch": (("CAUSALWAN_PROMPTS",), ["conditioning_1", "switch_mode", "blend_chunks",
                                                       "conditioning_2", "start_chunk_2", "conditioning_3",
                                                       "start_chunk_3", "conditioning_4", "start_chunk_4"]),
    "CausalWanChunkSampler": (("LATENT", "CAUSALWAN_STREAM"), ["model", "start", "prompts", "num_chunks", "seed",
                                                               "steps", "shift", "frames_per_chunk", "window_frames",
                                                               "sink_frames", "kv_cache", "vae"]),
    "CausalWanContinue": (("LATENT", "CAUSALWAN_STREAM"), ["stream", "num_chunks", "prompts", "vae"]),
    "CausalWanDecode": (("IMAGE",), ["vae", "latent", "tile_size"]),
    "CausalWanTextEncode": (("CONDITIONING",), ["text_encoder", "text", "device"]),
    "CausalWanTrainDMD": (("CAUSALWAN_MODEL", "STRING"), ["model", "teacher", "save_name", "steps", "lr_generator",
                                                          "lr_critic", "guidance", "critic_steps_per_update", "width",
                                                          "height", "latent_frames", "seed",
                                                          "activation_checkpointing", "conditioning", "negative",
                                                          "prompts_file", "text_encoder", "negative_prompt",
                                                          "start_images_folder", "vae"]),
}


def inputs(cls):
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def test_entry_point_exports_the_nodes_and_the_web_folder():
    assert set(MAPPINGS) == set(EXPECTED) == set(causalwan.NODE_DISPLAY_NAME_MAPPINGS)
    assert causalwan.WEB_DIRECTORY == "./web"
    assert (Path(causalwan.__file__).parent / "web" / "causalwan.js").is_file()
    assert all(name.startswith("CausalWan ") for name in causalwan.NODE_DISPLAY_NAME_MAPPINGS.values())


@pytest.mark.parametrize("node_id", sorted(EXPECTED))
def test_node_definition(node_id):
    cls = MAPPINGS[node_id]
    returns, names = EXPECTED[node_id]
    assert node_id.startswith("CausalWan") and cls.CATEGORY == "CausalWan"
    assert cls.RETURN_TYPES == returns
    assert len(cls.OUTPUT_TOOLTIPS) == len(returns) == len(cls.RETURN_NAMES)
    assert all(len(t) > 10 for t in cls.OUTPUT_TOOLTIPS) and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    spec = inputs(cls)
    assert list(spec) == names
    for name, entry in spec.items():
        opts = entry[1] if len(entry) > 1 else {}
        assert len(opts.get("tooltip", "")) > 10, f"{node_id}.{name} has no tooltip"
        if "default" in opts:
            choices = combo_options(list(entry))
            assert opts["default"] in choices if choices is not None else opts.get("min", opts["default"]) <= opts["default"]
    hidden = cls.INPUT_TYPES().get("hidden", {})
    assert set(hidden) <= {"unique_id"}


def test_union_sockets_and_seed():
    sampler = inputs(MAPPINGS["CausalWanChunkSampler"])
    assert sampler["prompts"][0] == "CAUSALWAN_PROMPTS,CONDITIONING"
    assert sampler["seed"][1]["control_after_generate"] is True and sampler["seed"][1]["max"] == 2 ** 64 - 1
    assert inputs(MAPPINGS["CausalWanDecode"])["latent"][0] == "LATENT,CAUSALWAN_STREAM"
    assert inputs(MAPPINGS["CausalWanContinue"])["prompts"][0] == "CAUSALWAN_PROMPTS,CONDITIONING"
    loader = inputs(MAPPINGS["CausalWanModelLoader"])
    assert loader["weight_dtype"][0] == ["auto", "bf16", "fp16", "fp8_e4m3fn"]
    assert loader["offload"][0] == ["auto", "resident", "swap", "blocks"]
    assert loader["high_noise_model"][0][0] == "none" and loader["boundary"][1]["default"] == -1.0
    assert inputs(MAPPINGS["CausalWanPromptSwitch"])["switch_mode"][0] == ["cut", "recache", "blend"]


def test_requirements_for_comfyui_manager():
    lines = [ln.strip() for ln in (Path(causalwan.__file__).parent / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    names = [ln.split(">")[0].split("=")[0].split("<")[0].strip().lower() for ln in lines]
    assert {"safetensors", "numpy", "pillow", "av"} <= set(names)
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
