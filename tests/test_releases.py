"""The field's causal Wan releases: a tiny file in each release's own layout loads through the one entry point,
gives the output of the model it was written from, and brings the release's sampling defaults; wrong or partial
files name the layout they should have."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causalwan.causal.sampling.defaults import MODEL
from causalwan.causal.sampling.stream import Stream, StreamOptions
from causalwan.causal.weights.checkpoint_files import WeightsError
from causalwan.causal.weights.lora import activate
from causalwan.causal.weights.lora_keys import read_lora
from causalwan.causal.weights.loader import load_experts
from weight_writers import lora_factors, merged_reference, ref_model, run, write_comfy, write_pt

SF = (1000, 750, 500, 250)


@pytest.fixture(scope="module")
def ema():
    return ref_model(seed=11)


@pytest.fixture(scope="module")
def other():
    return ref_model(seed=12)


def training_pt(path, ema, other, entries=("generator", "generator_ema", "critic")):
    """A Self-Forcing-family training checkpoint: entries of 'model.'-prefixed state dicts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    models = {"generator_ema": ema, "generator": other, "critic": other}
    return write_pt(path, **{e: models[e] for e in entries})


# (relative path, writer, which model's weights the loader must pick, expected defaults)
CASES = {
    "self_forcing": ("checkpoints/self_forcing_dmd.pt", "pt", "ema",
                     dict(name="Self-Forcing", steps=SF, shift=5.0, chunk_frames=3, window=None, sink=0)),
    "causvid": ("autoregressive_checkpoint/model.pt", "pt_generator", "generator",
                dict(name="CausVid", steps=(1000, 757, 522), shift=1.0, chunk_frames=3, window=None)),
    "causal_forcing_chunkwise": ("chunkwise/causal_forcing.pt", "pt", "ema",
                                 dict(name="Causal Forcing chunk-wise", steps=SF, chunk_frames=3)),
    "causal_forcing_framewise": ("framewise/causal_forcing.pt", "pt", "ema",
                                 dict(name="Causal Forcing frame-wise", steps=SF, chunk_frames=1)),
    "causal_forcing_pp_2step": ("causal-forcing++/framewise-2step.pt", "pt", "ema",
                                dict(name="Causal Forcing++ frame-wise 2-step", steps=(1000, 500), chunk_frames=1,
                                     first_steps=SF)),
    "causal_forcing_pp_1step": ("causal-forcing++/framewise-1step.pt", "pt", "ema",
                                dict(name="Causal Forcing++ frame-wise 1-step", steps=(1000,), chunk_frames=1,
                                     first_steps=SF)),
    "comfy_ar_convert": ("diffusion_models/causal_forcing-framewise.safetensors", "bare", "ema",
                         dict(name="Causal Forcing frame-wise", chunk_frames=1)),
    "krea": ("krea-realtime-video-14b.safetensors", "prefixed", "ema",
             dict(name="Krea Realtime 14B", steps=(1000, 937, 833, 625), shift=1.0, chunk_frames=3)),
    "longlive": ("longlive_models/models/longlive_base.pt", "pt_longlive", "generator",
                 dict(name="LongLive", steps=SF, shift=5.0, chunk_frames=3, window=12, sink=3)),
    "reward_forcing": ("Reward-Forcing-T2V-1.3B/rewardforcing.pt", "pt", "ema",
                       dict(name="Reward Forcing", steps=SF, chunk_frames=3, window=9, sink=3)),
    "unknown_dense": ("my_finetune.safetensors", "bare", "ema",
                      dict(name="Self-Forcing-style dense model", steps=SF, shift=5.0, chunk_frames=3, window=None)),
}


def write_case(root: Path, case: str, ema, other) -> Path:
    rel, how, _, _ = CASES[case]
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "pt":
        return training_pt(path, ema, other)
    if how == "pt_generator":
        return write_pt(path, generator=other)
    if how == "pt_longlive":  # its inference reads generator even where generator_ema is present
        return write_pt(path, generator=other, generator_ema=ema, critic=ema)
    if how == "bare":
        return write_comfy(ema, path, dtype=torch.float32, prefix="")
    return write_comfy(ema, path, dtype=torch.float32, prefix="model.")


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_release_layout_loads_with_its_defaults(tmp_path, case, ema, other):
    path = write_case(tmp_path, case, ema, other)
    pair = load_experts(low=path)
    source = ema if CASES[case][2] == "ema" else other
    assert torch.equal(run(pair.low), run(source))  # the same model, bit for bit (fp32 file, fp32 model)
    d = pair.defaults
    for key, want in CASES[case][3].items():
        got = getattr(d, key)
        assert (got.startswith(want) if key == "name" else got == want), (key, got, want)
    if d.shift is not None:
        assert pair.shift == d.shift
    stream = Stream(pair, options=StreamOptions(chunk_frames=MODEL, window=MODEL, sink=MODEL), latent_hw=(8, 8))
    assert (stream.options.chunk_frames, stream.options.window, stream.options.sink) == (d.chunk_frames, d.window,
                                                                                          d.sink)
    assert stream.options.steps == d.steps and stream.options.first_steps == d.first_steps
    text = d.describe(pair.shift)
    assert d.name in text and ("frame-wise" in text) == (d.chunk_frames == 1)


def test_longlive_base_plus_its_lora(tmp_path, ema, other):
    base = write_case(tmp_path, "longlive", ema, other)
    factors = lora_factors(other, rank=4, seed=7, targets=[k for k in other.state_dict() if k.startswith("blocks.")
                                                           and k.endswith(".weight") and other.state_dict()[k].dim() == 2])
    peft = {}
    for k, (up, down) in factors.items():  # LongLive's lora.pt: peft keys, alpha = rank (scale 1)
        layer = "base_model.model." + k[: -len(".weight")]
        peft[f"{layer}.lora_A.weight"], peft[f"{layer}.lora_B.weight"] = down, up
    torch.save({"generator_lora": peft, "critic_lora": {"base_model.model.x.lora_A.weight": torch.zeros(1, 1)},
                "step": 3000}, str(base.parent / "lora.pt"))
    pair = load_experts(low=base)
    activate(pair, [(read_lora(base.parent / "lora.pt"), 0.0, 1.0)])
    got = run(pair.low)
    activate(pair, [])
    torch.testing.assert_close(got, run(merged_reference(other, [(1.0, factors, None, None)])), rtol=1e-4, atol=1e-4)


def test_metadata_in_the_file_says_the_values(tmp_path, ema):
    path = tmp_path / "converted.safetensors"
    sd = {k: v.contiguous() for k, v in ema.state_dict().items()}
    save_file(sd, str(path), metadata={"num_frame_per_block": "1", "local_attn_size": "12", "sink_size": "3",
                                       "denoising_step_list": "[1000, 500, 0]", "timestep_shift": "3.0"})
    d = load_experts(low=path).defaults
    assert (d.chunk_frames, d.window, d.sink, d.steps, d.shift) == (1, 12, 3, (1000.0, 500.0), 3.0)
    assert "metadata" in d.name


def test_wrong_or_partial_files_name_the_expected_layout(tmp_path, ema, other):
    partial = tmp_path / "checkpoints" / "self_forcing_dmd.pt"
    partial.parent.mkdir(parents=True)
    sd = {f"model.{k}": v for k, v in ema.state_dict().items() if not k.startswith("blocks.1.")}
    sd.update({f"model.{k}": v for k, v in ema.state_dict().items() if k.startswith("blocks.1.") and "ffn" in k})
    torch.save({"generator_ema": sd}, str(partial))
    with pytest.raises(WeightsError, match=r"blocks\.1\..* Self-Forcing: expected a torch \.pt whose generator_ema"):
        load_experts(low=partial)

    wrong = tmp_path / "chunkwise" / "causal_forcing.pt"
    wrong.parent.mkdir(parents=True)
    torch.save({"optimizer": {"lr": 1.0}, "step": 5}, str(wrong))
    with pytest.raises(WeightsError, match="holds no tensors.*Causal Forcing chunk-wise: expected a torch .pt"):
        load_experts(low=wrong)

    lora_as_model = tmp_path / "longlive_models" / "lora.pt"
    lora_as_model.parent.mkdir(parents=True)
    torch.save({"generator_lora": {"base_model.model.blocks.0.ffn.0.lora_A.weight": torch.zeros(2, 256)}},
               str(lora_as_model))
    with pytest.raises(WeightsError, match="LoRA .*not a full model.*LongLive: expected longlive_base.pt"):
        load_experts(low=lora_as_model)


def test_loader_node_shows_the_defaults_and_the_sampler_follows_them(tmp_path, ema, other):
    from causalwan.nodes import comfy_adapter as adapter
    from causalwan.nodes.chunk_sampler import CausalWanChunkSampler
    from causalwan.nodes.model_loader import CausalWanModelLoader
    from causalwan.nodes.values import StartLatent

    dm = tmp_path / "diffusion_models"
    write_case(dm / "x", "longlive", ema, other)  # longlive_models/models/... under a subfolder
    fw = dm / "causal_forcing-framewise.safetensors"
    write_comfy(ema, fw, dtype=torch.float32, prefix="")
    adapter.set_model_folders({"diffusion_models": [str(dm)]})
    try:
        model, text = CausalWanModelLoader().load("none", fw.name, "none", "auto", -1.0, "resident")
        assert text.startswith("Causal Forcing frame-wise: 4 steps (1000, 750, 500, 250), shift 5, frame-wise")
        cond = [[torch.randn(1, 7, ema.config.text_dim), {}]]
        start = StartLatent(None, 64, 64)
        state = CausalWanChunkSampler().sample(model, start, cond, 3, 0, steps="1000, 500")[1]  # widgets "model"
        assert state.pieces == [1, 1, 1] and state.stream.options.window is None
        state = CausalWanChunkSampler().sample(model, start, cond, 2, 0, steps="1000", frames_per_chunk=2)[1]
        assert state.pieces == [2, 2]  # a value given on the node wins

        ll = next(p for p in adapter.model_files("diffusion_models") if "longlive_base" in p)
        model, text = CausalWanModelLoader().load("none", ll, "none", "auto", -1.0, "resident")
        assert "LongLive" in text and "window 12 + 3 sink frames" in text and "'generator' entry" in text
        state = CausalWanChunkSampler().sample(model, start, cond, 1, 0, steps="1000")[1]
        assert (state.stream.options.window, state.stream.options.sink, state.pieces) == (12, 3, [3])
    finally:
        adapter.set_model_folders(None)


@pytest.mark.parametrize("name, given, want", [
    ("framewise/causal_forcing.pt", [], (1, 0, 0)),
    ("longlive_models/models/longlive_base.pt", [], (3, 12, 3)),
    ("longlive_models/models/longlive_base.pt", ["--window", "0", "--sink", "0"], (3, 0, 0)),
    ("self_forcing_dmd.pt", ["--frames-per-chunk", "2"], (2, 0, 0)),
])
def test_cli_takes_the_release_values_it_was_not_given(tmp_path, ema, other, name, given, want):
    from causalwan import cli
    from causalwan.causal.weights.loader import prepare_experts
    from causalwan.cli_checks import check_model_files, fill_model_values

    path = training_pt(tmp_path / name, ema, other)
    a = cli.parse_args(["--model", str(path), "--vae", str(path), "--text-encoder", str(path)] + given)
    files = check_model_files(a)
    files.experts = prepare_experts(low=files.low)  # what the checks read of the headers (the text encoder aside)
    fill_model_values(a, files)
    assert (a.frames_per_chunk, a.window, a.sink) == want


def test_first_chunk_steps_of_causal_forcing_pp(tmp_path, ema, other):
    from causalwan.causal.sampling.schedule import warp

    pair = load_experts(low=write_case(tmp_path, "causal_forcing_pp_2step", ema, other))
    stream = Stream(pair, options=StreamOptions(chunk_frames=MODEL), latent_hw=(8, 8))
    stream.set_prompt(torch.randn(1, 7, ema.config.text_dim))
    for _ in range(3):
        stream.next_chunk()
    ts = [round(t, 3) for _, t in stream.expert_calls]
    sf = [round(warp(s, 5.0), 3) for s in SF]
    two = [round(warp(s, 5.0), 3) for s in (1000, 500)]
    assert ts == sf + [0.0] + two + [0.0] + two + [0.0]  # 4 steps for the first frame, then 2; each + context
    given = Stream(pair, options=StreamOptions(chunk_frames=MODEL, steps=(1000, 500)), latent_hw=(8, 8))
    assert given.first_plan is None  # steps given: every chunk uses them
    assert "first chunk 1000, 750, 500, 250" in pair.defaults.describe()
