"""CausalWan Text Encode on a tiny ComfyUI-style umT5 file (embedded SentencePiece model): the CONDITIONING it
gives is the encoder's embedding, and it drives the sampler like CLIPTextEncode's."""

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from causalwan.causal.weights.text_encoder import TextEncoder  # noqa: E402
from causalwan.nodes import comfy_adapter as adapter  # noqa: E402
from causalwan.nodes import text_encode  # noqa: E402
from causalwan.nodes.chunk_sampler import CausalWanChunkSampler  # noqa: E402
from causalwan.nodes.model_loader import CausalWanModelLoader  # noqa: E402
from causalwan.nodes.start_image import CausalWanImageConditioner  # noqa: E402
from causalwan.nodes.text_encode import CausalWanTextEncode  # noqa: E402
from node_models import TEXT_DIM
from weight_writers import write_tiny_umt5

WORDS = "a red fox runs through fresh snow in a quiet forest at dawn with soft golden light".split()


@pytest.fixture
def umt5_file(models):
    path = write_tiny_umt5(models / "text_encoders" / "tiny_umt5.safetensors", WORDS, TEXT_DIM)
    yield path
    path.unlink()
    text_encode._cache.clear()


def test_text_encode_gives_the_encoder_embedding_and_drives_the_sampler(umt5_file):
    assert "tiny_umt5.safetensors" in CausalWanTextEncode.INPUT_TYPES()["required"]["text_encoder"][0]
    (cond,) = CausalWanTextEncode().encode("tiny_umt5.safetensors", "a red fox runs through snow", "cpu")
    (tensor, extra), = cond
    want = TextEncoder.load(umt5_file, dtype=torch.float32).encode(["a red fox runs through snow"])[0]
    assert tensor.shape == (1, want.shape[0], TEXT_DIM) and 2 < want.shape[0] < 512
    assert torch.allclose(tensor[0], want, atol=1e-6) and extra == {"pooled_output": None}
    other = CausalWanTextEncode().encode("tiny_umt5.safetensors", "golden light at dawn", "default")[0][0][0]
    assert other.shape[1] != tensor.shape[1] or (other - tensor).abs().max() > 1e-3

    model = CausalWanModelLoader().load("none", "tiny_dense.safetensors", "none", "auto", -1.0, "resident")[0]
    start = CausalWanImageConditioner().start(32, 32)[0]
    latent, state = CausalWanChunkSampler().sample(model, start, cond, 1, 0, "1000", 0.0, 3, 0, 0)
    assert latent["samples"].shape == (1, 16, 3, 4, 4)
    assert torch.equal(state.stream.prompt, tensor)  # the embedding reaches the engine unchanged


def test_text_encode_refuses_a_transformer(models):
    adapter.set_model_folders({"text_encoders": [str(models / "diffusion_models")]})
    with pytest.raises(ValueError, match="is not a umT5 text encoder: it looks like a Wan video transformer"):
        CausalWanTextEncode().encode("tiny_low.safetensors", "a fox", "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        CausalWanTextEncode().encode("tiny_low.safetensors", "a fox", "gpu")
