"""What a user gets wrong ends in one readable ValueError (the text ComfyUI shows in its error dialog)."""
import pytest
import torch

from causalwan.nodes import comfy_adapter as adapter
from causalwan.nodes.chunk_sampler import CausalWanChunkSampler
from causalwan.nodes.conditioning import conditioning_tensor, to_context
from causalwan.nodes.continue_stream import CausalWanContinue
from causalwan.nodes.decode import CausalWanDecode
from causalwan.nodes.model_loader import CausalWanModelLoader
from causalwan.nodes.prompt_switch import CausalWanPromptSwitch
from causalwan.nodes.start_image import CausalWanImageConditioner, snap
from causalwan.nodes.vae_loader import CausalWanVAELoader
from node_models import conditioning


def load(high="none", low="none", folder="none", **kw):
    return CausalWanModelLoader().load(high, low, folder, **kw)


@pytest.fixture
def dense(models):
    return load(low="tiny_dense.safetensors", offload="resident")[0]


def t2v_start():
    return CausalWanImageConditioner().start(32, 32)[0]


def sample(model, prompts, chunks=2, **kw):
    opts = dict(steps="1000", shift=0.0, frames_per_chunk=3, window_frames=0, sink_frames=0)
    opts.update(kw)
    return CausalWanChunkSampler().sample(model, t2v_start(), prompts, chunks, 0, **opts)


def test_a_file_that_is_not_a_wan_model(models):
    with pytest.raises(ValueError, match=r"not a Wan video transformer: it looks like a VAE"):
        load(low="not_a_model.safetensors")


def test_experts_that_do_not_match(models):
    with pytest.raises(ValueError, match=r"the experts do not match: .*dim 128 vs 256"):
        load("tiny_high.safetensors", "tiny_wide_low.safetensors")


def test_loader_choices_that_cannot_work(models):
    with pytest.raises(ValueError, match="the low-noise expert is missing"):
        load(high="tiny_high.safetensors")
    with pytest.raises(ValueError, match="no model chosen"):
        load()
    with pytest.raises(ValueError, match="either a diffusers folder or model files, not both"):
        load(low="tiny_low.safetensors", folder="TinyCausalWan-Diffusers/")
    with pytest.raises(ValueError, match="are the same file"):
        load("tiny_low.safetensors", "tiny_low.safetensors")
    with pytest.raises(FileNotFoundError, match="'gone.safetensors' was not found in the diffusion_models folders"):
        load(low="gone.safetensors")
    with pytest.raises(ValueError, match="unknown offload mode 'gpu'"):
        load(low="tiny_low.safetensors", offload="gpu")


def test_vae_loader_refuses_a_transformer(models):
    adapter.set_model_folders({"vae": [str(models / "diffusion_models")]})  # a transformer in the vae list
    assert "tiny_low.safetensors" in CausalWanVAELoader.INPUT_TYPES()["required"]["vae_name"][0]
    with pytest.raises(ValueError, match="does not look like a Wan2.1 VAE"):
        CausalWanVAELoader().load("tiny_low.safetensors")
    with pytest.raises(ValueError, match="unknown VAE dtype 'fp64'"):
        CausalWanVAELoader().load("tiny_low.safetensors", "fp64")


def test_sizes_are_snapped_to_multiples_of_16_with_a_note(models):
    start, note = CausalWanImageConditioner().start(40, 33)
    assert (start.width, start.height, start.latent_hw) == (48, 32, (4, 6))
    assert note == "width 40 snapped to 48 (a multiple of 16); height 33 snapped to 32 (a multiple of 16)"
    assert snap(832, "width") == (832, "")
    with pytest.raises(ValueError, match="height 8 cannot be used: it must be between 16 and 8192"):
        CausalWanImageConditioner().start(32, 8)


def test_start_image_needs_a_vae_and_extra_images_are_noted(models):
    with pytest.raises(ValueError, match="a start image needs a VAE"):
        CausalWanImageConditioner().start(32, 32, "crop", torch.rand(1, 32, 32, 3))
    vae = CausalWanVAELoader().load("tiny_vae.safetensors")[0]
    start, note = CausalWanImageConditioner().start(32, 32, "stretch", torch.rand(3, 20, 30, 4), vae)
    assert start.latent.shape == (1, 16, 1, 4, 4) and note == "3 images given; the first one starts the video"


def test_a_prompt_switch_beyond_the_last_chunk(dense):
    prompts = CausalWanPromptSwitch().build(conditioning(0), "cut", 2, conditioning_2=conditioning(1),
                                            start_chunk_2=2)[0]
    with pytest.raises(ValueError, match=r"prompt 2 starts at chunk 2, but this run makes only 2 chunks \(0 to 1\)"):
        sample(dense, prompts, chunks=2)


def test_prompt_switch_chunks_must_increase():
    with pytest.raises(ValueError, match=r"prompt 4 starts at chunk 3, which is not after prompt 2 \(chunk 3\)"):
        CausalWanPromptSwitch().build(conditioning(0), "cut", 2, conditioning_2=conditioning(1), start_chunk_2=3,
                                      conditioning_4=conditioning(2), start_chunk_4=3)
    built = CausalWanPromptSwitch().build(conditioning(0), "blend", 3, start_chunk_2=1)[0]  # 2 not connected
    assert [e.chunk for e in built.entries] == [0] and built.blend_chunks == 3
    with pytest.raises(ValueError, match="unknown switch mode 'fade'"):
        CausalWanPromptSwitch().build(conditioning(0), "fade")


def test_conditioning_that_does_not_fit(dense):
    with pytest.raises(ValueError, match=r"holds 2 prompts \(from Conditioning Combine\?\)"):
        conditioning_tensor(conditioning(0) + conditioning(1))
    with pytest.raises(ValueError, match=r"text conditioning must be \[batch, tokens, 32\] for this model, got "
                                         r"\[1, 7, 4096\]"):
        sample(dense, conditioning(0, dim=4096))


def test_long_text_is_cut_to_the_model_length_and_padding_dropped():
    text = conditioning(0, tokens=600, length=600)[0][0]
    assert to_context(text, 512).shape == (1, 512, 32)
    padded = conditioning(0, tokens=9)[0][0]
    assert torch.equal(to_context(padded, 512), padded[:, :9])
    assert to_context(padded, 512, batch=2).shape == (2, 9, 32)


def test_sampler_settings_that_cannot_work(dense):
    assert CausalWanChunkSampler.VALIDATE_INPUTS(steps="1000, 750") is True
    assert CausalWanChunkSampler.VALIDATE_INPUTS(steps="") is True
    assert "strictly decreasing" in CausalWanChunkSampler.VALIDATE_INPUTS(steps="500, 750")
    with pytest.raises(ValueError, match="sink_frames 3 needs an attention window"):
        sample(dense, conditioning(), sink_frames=3)
    with pytest.raises(ValueError, match="cannot hold a chunk of 3 frames"):
        sample(dense, conditioning(), window_frames=4, sink_frames=2)
    with pytest.raises(ValueError, match="goes past the 1024-frame RoPE table.*set an attention window"):
        sample(dense, conditioning(), chunks=400)  # refused before the first chunk, not at frame 1024


def test_continue_and_decode_refuse_wrong_inputs(models):
    with pytest.raises(ValueError, match="must come from CausalWan Chunk Sampler or CausalWan Continue"):
        CausalWanContinue().go_on({"samples": torch.zeros(1, 16, 1, 4, 4)}, 2)
    vae = CausalWanVAELoader().load("tiny_vae.safetensors")[0]
    with pytest.raises(ValueError, match=r"expected a Wan video latent \[batch, 16, frames, h, w\], got \[1, 4, 8, 8\]"):
        CausalWanDecode().decode(vae, {"samples": torch.zeros(1, 4, 8, 8)})
