"""umT5 from a diffusers folder, the original Wan .pth + google/umt5-xxl/, and a ComfyUI file with an embedded
SentencePiece model: each gives the embeddings of the transformers model it was written from."""
import json

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel  # noqa: E402

from causalwan.causal.weights.checkpoint_files import WeightsError  # noqa: E402
from causalwan.causal.model.fp8 import quantize  # noqa: E402
from causalwan.causal.weights.text_encoder import TextEncoder, hf_to_wan, wan_to_hf  # noqa: E402
from causalwan.causal.weights.umt5_tokenizer import UMT5Tokenizer  # noqa: E402
from weight_writers import tiny_spiece  # noqa: E402

WORDS = "a cat walks on the beach at sunset while waves roll in slowly and the sky turns orange red purple".split()
PROMPTS = ["a cat walks on the beach", "the sky turns  orange &amp; red at sunset", "waves"]


@pytest.fixture(scope="module")
def parts():
    """(spiece model bytes, tokenizer.json folder writer, tiny UMT5 encoder)."""
    proto = tiny_spiece(WORDS, 64)
    torch.manual_seed(0)
    cfg = UMT5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = UMT5EncoderModel(cfg).eval()
    return proto, model


def write_tokenizer_folder(proto: bytes, folder):
    """A tokenizer/ folder as releases ship it: tokenizer.json built from the SentencePiece vocabulary."""
    sp = spm.SentencePieceProcessor(model_proto=proto)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(str(folder))
    return folder


def reference(model, proto, prompts):
    """What the text encoder must give: the transformers model on the tokenizer's ids, trimmed."""
    tok = UMT5Tokenizer.from_sentencepiece(proto)
    from causalwan.causal.weights.text_encoder import clean_prompt
    ids, mask = tok([clean_prompt(p) for p in prompts], 512)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return [o[: int(n)] for o, n in zip(out, mask.sum(1))]


def check(enc, model, proto):
    got = enc.encode(PROMPTS)
    want = reference(model, proto, PROMPTS)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert got[2].shape[0] < got[0].shape[0] < 512 and got[0].shape[1] == 16  # trimmed to the real tokens
    for g, w in zip(got, want):
        assert torch.allclose(g.float(), w, atol=1e-5)
    assert (got[0][0] - got[1][0]).abs().max() > 1e-3  # different prompts, different embeddings


def test_tokenizer_json_and_sentencepiece_agree(parts, tmp_path):
    proto, _ = parts
    folder = write_tokenizer_folder(proto, tmp_path / "tokenizer")
    a = UMT5Tokenizer.from_folder(folder)(PROMPTS, 16)
    b = UMT5Tokenizer.from_sentencepiece(proto)(PROMPTS, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ids, mask = b
    n = int(mask[0].sum())
    assert ids[0, n - 1] == 1 and ids[0, n:].eq(0).all()  # text, </s>, then <pad>
    # truncation keeps the </s>
    long_ids, long_mask = UMT5Tokenizer.from_sentencepiece(proto)([" ".join(WORDS * 5)], 8)
    assert long_mask.sum() == 8 and long_ids[0, -1] == 1


def test_diffusers_release_folder(parts, tmp_path):
    proto, model = parts
    model.save_pretrained(str(tmp_path / "text_encoder"))
    write_tokenizer_folder(proto, tmp_path / "tokenizer")
    enc = TextEncoder.load(tmp_path)
    assert enc.model.encoder.embed_tokens.weight is enc.model.shared.weight
    check(enc, model, proto)
    check(TextEncoder.load(tmp_path / "text_encoder"), model, proto)  # tokenizer/ found beside it


def test_original_wan_pth_and_tokenizer_folder(parts, tmp_path):
    proto, model = parts
    sd = {hf_to_wan(k): v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    assert None not in sd
    # the names of Wan's own T5 (wan/modules/t5.py)
    for name in ("token_embedding.weight", "norm.weight", "blocks.1.attn.o.weight", "blocks.0.ffn.gate.0.weight",
                 "blocks.0.ffn.fc1.weight", "blocks.0.ffn.fc2.weight", "blocks.1.pos_embedding.embedding.weight",
                 "blocks.0.norm1.weight", "blocks.0.norm2.weight"):
        assert name in sd
    assert wan_to_hf("blocks.3.ffn.gate.0.weight") == "encoder.block.3.layer.1.DenseReluDense.wi_0.weight"
    torch.save(sd, str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"))
    write_tokenizer_folder(proto, tmp_path / "google" / "umt5-xxl")
    check(TextEncoder.load(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"), model, proto)
    check(TextEncoder.load(tmp_path), model, proto)  # the release folder itself


@pytest.mark.parametrize("fp8", [False, True])
def test_comfy_file_with_embedded_spiece_model(parts, tmp_path, fp8):
    proto, model = parts
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    ref = model
    if fp8:  # ComfyUI umt5_xxl_fp8_e4m3fn_scaled layout: fp8 Linear weights + scale_weight + scaled_fp8 marker
        ref = UMT5EncoderModel(model.config).eval()
        new = dict(model.state_dict())
        for k in [k for k in sd if k.startswith("encoder.block.") and ("SelfAttention.q" in k or "wo" in k)]:
            q, s = quantize(sd[k])
            sd[k], sd[k[: -len("weight")] + "scale_weight"] = q, s
            new[k] = q.float() * s
        ref.load_state_dict(new)
        sd["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    sd["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    path = tmp_path / "umt5_xxl.safetensors"
    save_file(sd, str(path))
    enc = TextEncoder.load(path, dtype=torch.float32)
    assert "embedded spiece_model" in enc.tokenizer.source
    check(enc, ref, proto)


def test_text_encoder_errors(parts, tmp_path):
    proto, model = parts
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(sd, str(tmp_path / "no_tokenizer.safetensors"))
    with pytest.raises(WeightsError, match="no tokenizer for the text encoder.*embed no spiece_model.*tokenizer="):
        TextEncoder.load(tmp_path / "no_tokenizer.safetensors")
    save_file({"patch_embedding.weight": torch.zeros(8, 16, 1, 2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(WeightsError, match="is not a umT5 text encoder: it looks like a Wan video transformer"):
        TextEncoder.load(tmp_path / "dit.safetensors")
    del sd["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match="1 missing keys.*block.1.layer.1.DenseReluDense.wo.weight"):
        TextEncoder.load(tmp_path / "partial.safetensors", tokenizer=write_tokenizer_folder(proto, tmp_path / "t"))
    enc = TextEncoder.load(tmp_path / "no_tokenizer.safetensors", tokenizer=tmp_path / "t")
    with pytest.raises(TypeError, match="list of prompts"):
        enc.encode("a cat")
    json.dumps(enc.tokenizer.source)
