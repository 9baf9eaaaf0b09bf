"""CausalWan LoRA node: a file from models/loras on the loader's model; the sampler runs exactly its model's LoRAs
(bypassing or re-queueing leaves nothing behind), chained nodes stack, a LoRA that does not fit fails at the node."""
import pytest
import torch

from causalwan.causal.sampling.stream import Stream, StreamOptions
from causalwan.nodes.chunk_sampler import CausalWanChunkSampler
from causalwan.nodes.lora import CausalWanLoRA
from causalwan.nodes.model_loader import CausalWanModelLoader
from causalwan.causal.weights.lora_keys import read_lora
from causalwan.causal.weights.lora import activate
from causalwan.nodes.values import StartLatent
from node_models import conditioning
from weight_writers import lora_factors, write_lora

FAST = "1000, 500"


@pytest.fixture
def loaded(models):
    model = CausalWanModelLoader().load("tiny_high.safetensors", "tiny_low.safetensors", "none", "auto", -1.0,
                                        "resident")[0]
    (models / "loras").mkdir(exist_ok=True)
    write_lora(models / "loras" / "style.safetensors", lora_factors(model.experts.low, rank=2, seed=1), "kohya",
               alpha=1.0)
    write_lora(models / "loras" / "other.safetensors", lora_factors(model.experts.low, rank=2, seed=2), "diffusers")
    write_lora(models / "loras" / "wide.safetensors", {"blocks.0.ffn.0.weight": (
        torch.zeros(64, 2), torch.zeros(2, 256))}, "original")
    return model


def video(model, seed=3):
    start = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = CausalWanChunkSampler().sample(model, StartLatent(start, 32, 32), conditioning(), 2, seed, steps=FAST,
                                         shift=0.0, frames_per_chunk=3, window_frames=0, sink_frames=0)
    return out[1].latent


def engine_video(model, uses, seed=3):
    """The same stream through the engine with the LoRAs activated directly."""
    activate(model.experts, uses)
    stream = Stream(model.experts, seed=seed, options=StreamOptions(steps=(1000, 500), max_frames=7), latent_hw=(4, 4))
    stream.set_prompt(conditioning()[0][0][:, :7])
    start = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    stream.prime(start)
    z = torch.cat([start] + list(stream.chunks(2)), 2)
    activate(model.experts, [])
    return z


def test_lora_node_stacks_and_bypass_or_requeue_leaves_nothing(loaded, models):
    model = loaded
    base = video(model)
    styled, info = CausalWanLoRA().apply(model, "style.safetensors", 1.0, 0.5)
    assert "style.safetensors (high 1, low 0.5, rank 2)" in info and "high:" in info and "low:" in info
    both = CausalWanLoRA().apply(styled, "other.safetensors", 0.0, 1.0)[0]
    assert model.loras == () and len(styled.loras) == 1 and len(both.loras) == 2  # upstream values untouched

    v_styled, v_both = video(styled), video(both)
    assert (v_styled - base).abs().max() > 1e-3 and (v_both - v_styled).abs().max() > 1e-3
    style, other = read_lora(models / "loras" / "style.safetensors"), read_lora(models / "loras" / "other.safetensors")
    torch.testing.assert_close(v_both, engine_video(model, [(style, 1.0, 0.5), (other, 0.0, 1.0)]))
    assert torch.equal(video(model), base)  # LoRA nodes bypassed: the base model, bit for bit
    zero = CausalWanLoRA().apply(model, "style.safetensors", 0.0, 0.0)[0]
    assert torch.equal(video(zero), base)
    assert torch.equal(video(styled), v_styled)  # queued again: the same video


def test_lora_that_does_not_fit_fails_at_the_node(loaded):
    model = loaded
    with pytest.raises(ValueError, match="does not fit this model.*another size"):
        CausalWanLoRA().apply(model, "wide.safetensors", 1.0, 1.0)
    with pytest.raises(FileNotFoundError, match="loras folders"):
        CausalWanLoRA().apply(model, "missing.safetensors", 1.0, 1.0)


def test_a_lora_copy_of_a_released_model_says_so(loaded):
    model = loaded
    styled = CausalWanLoRA().apply(model, "style.safetensors", 1.0, 1.0)[0]
    model.release()  # the loader ran again
    with pytest.raises(ValueError, match="released because its CausalWan Model Loader ran again"):
        styled.use()
