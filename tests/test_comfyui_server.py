"""The pack inside a REAL ComfyUI server (skipped unless $COMFYUI_DIR points at a ComfyUI checkout).

One server (tests/comfy_server.py) is started for the module with this repository linked into a temporary
custom_nodes folder as "causalwan-stream" and a temporary models folder holding tiny model files written here
in the real formats: two experts as ComfyUI single files, a dense Self-Forcing-style .pt training checkpoint,
a diffusers release folder (transformer/, transformer_2/, vae/, model_index.json) and a Wan2.1 VAE file. The
experts are tiny (dim 128, 2 layers) but read text of width 4096, like the real umT5 conditioning.

Then: GET /object_info lists every CausalWan node (and the log has no IMPORT FAILED for the pack); each shipped
workflow is converted to API form with tests/workflow_format.py against the server's own /object_info, its file
widgets are pointed at the tiny files and its sizes/chunk counts made small, and it is queued over POST /prompt
while the websocket /ws?clientId=... is followed: execution_success, one progress message (and one
"causalwan.chunk" event, and one preview image) per chunk from the sampler, and the video SaveVideo wrote,
decoded frame by frame. POST /interrupt mid-run ends a run with execution_interrupted and the next run succeeds.

The text encoder -- a stand-in, said plainly: the workflows use ComfyUI's CLIPLoader (type "wan") +
CLIPTextEncode. ComfyUI builds that umT5 from its own comfy/text_encoders/umt5_config_xxl.json whatever the
file holds, so a tiny *file* loads (a SentencePiece model under "spiece_model" and block 23's wi_1 weight, by
which ComfyUI recognises umT5-XXL), but ComfyUI then allocates the full 5.7B-parameter encoder (the missing
weights left uninitialised: 11 GB of address space, 1.5 GB resident) and one CLIPTextEncode takes about two
minutes on a 2-core CPU. So by default each CLIPTextEncode is replaced by the test-only node
CausalWanTestTextConditioning (a custom node folder written by this test, never shipped) that returns a
CONDITIONING shaped exactly like ComfyUI's Wan encoder output ([[tensor [1, 512, 4096], {"pooled_output":
None}]], zero rows after the prompt's tokens), and the CLIPLoader is dropped. With COMFYUI_REAL_UMT5=1,
test_real_umt5_text_encoder_feeds_the_sampler also runs the dense workflow with the real CLIPLoader(type "wan")
+ CLIPTextEncode on the tiny umT5 file (about two minutes more).
"""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

import comfy_server

_reason = comfy_server.skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import causalwan  # noqa: E402
from core_nodes import CORE_NODES, FILE_LISTS  # noqa: E402
from workflow_check import check_workflow, file_inputs_of  # noqa: E402
from workflow_format import input_specs, ui_to_api, widget_slots  # noqa: E402
from causalwan.vae.random_init import random_vae  # noqa: E402
from node_models import write_release_folder  # noqa: E402
from tiny_models import tiny_model  # noqa: E402

PACK = comfy_server.PACK_NAME
WORKFLOWS = comfy_server.REPO / "workflows"
SIZE = 32  # pixels per side of every test video (latent 4x4)
TEXT_DIM = 4096  # umT5-XXL width, what ComfyUI's Wan CONDITIONING carries
EXPERT = dict(dim=128, num_heads=1, ffn_dim=64, text_dim=TEXT_DIM)  # head dim 128, as the loader infers it
FOLDER = "TinyCausalWan-Diffusers/"
STUB_NODE = "CausalWanTestTextConditioning"
STUB_FOLDER = "causalwan_test_conditioning"
REAL_UMT5 = os.environ.get("COMFYUI_REAL_UMT5") == "1"
RUN_TIMEOUT = 300.0

# shipped file widget value -> the tiny file standing in for it
TINY_FILES = {
    "causalwan2.2_i2v_a14b_high_noise_bf16.safetensors": "tiny_high.safetensors",
    "causalwan2.2_i2v_a14b_low_noise_bf16.safetensors": "tiny_low.safetensors",
    "self_forcing_dmd.pt": "tiny_self_forcing_dmd.pt",
    "CausalWan2.2-I2V-A14B-Diffusers/": FOLDER,
    "wan_2.1_vae.safetensors": "tiny_vae.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "tiny_umt5.safetensors",
    "none": "none",
}

# The test-only node: CONDITIONING like ComfyUI 0.3.64's Wan text encoder returns (umT5 with attention mask and
# zeroed padding: [1, max(512, tokens), 4096], real rows first), seeded by the text so prompts differ.
STUB_SOURCE = f'''"""Test-only stand-in for CLIPLoader(type wan) + CLIPTextEncode, written by causalwan's
tests/test_comfyui_server.py into a temporary custom_nodes folder. Not part of the pack."""
import hashlib

import torch


class {STUB_NODE}:
    CATEGORY = "testing"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"text": ("STRING", {{"multiline": True}})}}}}

    def encode(self, text):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        tokens = min(len(text.split()) + 1, 512)  # words + the end token
        cond = torch.zeros(1, 512, {TEXT_DIM})
        cond[:, :tokens] = 0.5 * torch.randn(1, tokens, {TEXT_DIM}, generator=torch.Generator().manual_seed(seed))
        return ([[cond, {{"pooled_output": None}}]],)


NODE_CLASS_MAPPINGS = {{"{STUB_NODE}": {STUB_NODE}}}
'''


# ------------------------------------------------------------------------------------------------ tiny files
def expert_state(seed: int, **kw) -> dict:
    return {k: v.contiguous() for k, v in tiny_model(seed, **{**EXPERT, **kw}).state_dict().items()}


def write_tiny_models(models: Path) -> None:
    """Tiny random models in the formats users have, in a ComfyUI models folder."""
    dm, vae_dir = models / "diffusion_models", models / "vae"
    high, low = expert_state(2), expert_state(1)
    # ComfyUI single files, as ComfyUI saves diffusion models (original Wan names under model.diffusion_model.)
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16) for k, v in high.items()},
              str(dm / "tiny_high.safetensors"))
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16) for k, v in low.items()},
              str(dm / "tiny_low.safetensors"))
    # a Self-Forcing training checkpoint: {"generator_ema": {"model.<original name>": tensor}, ...}
    dense = expert_state(3)
    torch.save({"generator_ema": {"model." + k: v for k, v in dense.items()}, "step": 600},
               str(dm / "tiny_self_forcing_dmd.pt"))
    vae_sd = {k: v.contiguous() for k, v in random_vae(base_dim=8, seed=0).state_dict().items()}
    save_file(vae_sd, str(vae_dir / "tiny_vae.safetensors"))
    write_release_folder(dm / FOLDER.rstrip("/"), high, low, vae_sd)  # the same pair and VAE as a diffusers folder


def write_tiny_umt5(path: Path) -> None:
    """A umT5 file ComfyUI's CLIPLoader(type "wan") loads: its SentencePiece model as the uint8 tensor
    "spiece_model" (as in Comfy-Org's umt5_xxl files), block 23's wi_1 weight [10240, 4096] (how ComfyUI tells
    umT5-XXL from other T5s; stored as zeros in fp8, 42 MB) and every norm and relative-attention bias (small,
    so those are defined). ComfyUI sizes the model from its own json; the other weights stay unset."""
    import sentencepiece as spm

    corpus = [line for p in sorted(WORKFLOWS.glob("*.json")) for n in json.loads(p.read_text())["nodes"]
              if n["type"] == "CLIPTextEncode" for line in n["widgets_values"][:1]] * 8
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, vocab_size=100,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    sd = {"spiece_model": torch.tensor(list(buf.getvalue()), dtype=torch.uint8),
          "encoder.final_layer_norm.weight": torch.ones(4096, dtype=torch.float16)}
    for i in range(24):
        pre = f"encoder.block.{i}.layer."
        sd[pre + "0.layer_norm.weight"] = torch.ones(4096, dtype=torch.float16)
        sd[pre + "1.layer_norm.weight"] = torch.ones(4096, dtype=torch.float16)
        sd[pre + "0.SelfAttention.relative_attention_bias.weight"] = torch.zeros(32, 64, dtype=torch.float16)
    sd["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] = torch.zeros(10240, 4096,
                                                                           dtype=torch.float8_e4m3fn)
    save_file(sd, str(path))


def write_start_image(path: Path) -> None:
    """The LoadImage file of the workflows ("example.png"), a 56x40 gradient (cropped to 32x32 by Start)."""
    y, x = np.mgrid[0:40, 0:56]
    rgb = np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)


# ------------------------------------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui")
    srv = comfy_server.ComfyServer(root, extra_node_folders={STUB_FOLDER: STUB_SOURCE})
    write_tiny_models(srv.models)
    if REAL_UMT5:
        write_tiny_umt5(srv.models / "text_encoders" / "tiny_umt5.safetensors")
    write_start_image(srv.input / "example.png")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        print(f"\nComfyUI {comfy_server.comfyui_commit(srv.comfy_dir)} log: {srv.log_path}")


@pytest.fixture(scope="module")
def info(server):
    return server.get("/object_info", timeout=60)


_seeds = iter(range(1000, 100000))


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def prepare(name: str, info: dict, chunks: dict | None = None, real_text: bool = False, size: int = SIZE):
    """API prompt of a shipped workflow, converted against the live /object_info, with the file widgets on the
    tiny files, a small size, a fresh seed (so no run is answered from ComfyUI's cache) and `chunks`
    ({class_type: {input: value}}) applied. Returns (prompt, {class_type: [node ids]})."""
    prompt = ui_to_api(load_workflow(name), info)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        for key in ("high_noise_model", "low_noise_model", "diffusers_folder", "vae_name", "clip_name"):
            if key in inputs:
                assert inputs[key] in TINY_FILES, f"{name}: no tiny stand-in for {key}={inputs[key]!r}"
                inputs[key] = TINY_FILES[inputs[key]]
        if kind == "CausalWanImageConditioner":
            inputs.update(width=size, height=size)
        if kind in ("CausalWanChunkSampler",):
            inputs["seed"] = next(_seeds)
        inputs.update((chunks or {}).get(kind, {}))
    if not real_text:
        for nid in [k for k, v in prompt.items() if v["class_type"] == "CLIPLoader"]:
            del prompt[nid]
        for node in prompt.values():
            if node["class_type"] == "CLIPTextEncode":
                node["class_type"] = STUB_NODE
                node["inputs"] = {"text": node["inputs"]["text"]}
    ids: dict[str, list[str]] = {}
    for nid, node in prompt.items():
        ids.setdefault(node["class_type"], []).append(nid)
    return prompt, ids


def saved_video(server, run, save_id: str) -> Path:
    outputs = server.history(run.prompt_id).get("outputs", {})
    assert save_id in outputs, f"SaveVideo wrote nothing: {outputs}"
    (entry,) = outputs[save_id]["images"]
    assert entry["type"] == "output"
    path = server.output / entry["subfolder"] / entry["filename"]
    assert path.is_file() and path.stat().st_size > 0
    return path


def video_frames(path: Path) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of a video file, frames counted by decoding."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return n, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


def chunk_events(run, node: str) -> list[dict]:
    return [d for d in run.of("causalwan.chunk") if d.get("node") == node]


def assert_success(run, server):
    assert run.status == "execution_success", (
        f"run ended with {run.status or 'nothing within the timeout'}: {run.error()}\n{server.log_tail()}")


# ------------------------------------------------------------------------------------------------ loading
def test_object_info_lists_every_causalwan_node(server, info):
    log = server.log()
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK in line]
    assert not failed, failed
    assert f"custom_nodes/{PACK}" in log  # listed among the imported custom nodes
    for name, display in causalwan.NODE_DISPLAY_NAME_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info"
        node = info[name]
        assert node["display_name"] == display and node["category"].startswith("CausalWan")
        assert PACK in node["python_module"]
        for input_name, spec in input_specs(node):
            assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    assert set(causalwan.NODE_CLASS_MAPPINGS) == {k for k in info if k.startswith("CausalWan")} - {STUB_NODE}
    # the frontend extension is served to the browser
    scripts = server.get("/extensions")
    assert f"/extensions/{PACK}/causalwan_preview.js" in scripts


def test_loaders_list_the_tiny_files_from_comfyui_folders(info):
    spec = info["CausalWanModelLoader"]["input"]["required"]
    assert spec["high_noise_model"][0] == ["none", "tiny_high.safetensors", "tiny_low.safetensors",
                                           "tiny_self_forcing_dmd.pt"]
    assert spec["diffusers_folder"][0] == ["none", FOLDER]
    assert info["CausalWanVAELoader"]["input"]["required"]["vae_name"][0] == ["tiny_vae.safetensors", FOLDER]


def test_core_node_table_and_shipped_workflows_fit_the_real_server(info):
    """tests/core_nodes.py (the offline table of core nodes) matches this ComfyUI, and every shipped workflow
    passes the checker against the server's own definitions."""
    for kind, table in CORE_NODES.items():
        assert kind in info, f"core node {kind} is not in this ComfyUI"
        live = [(n, extra) for n, _, extra in widget_slots(info[kind])]
        assert [(n, extra) for n, _, extra in widget_slots(table)] == live, kind
        assert list(table["output"]) == list(info[kind]["output"]), kind
    files = set(FILE_LISTS) | file_inputs_of(causalwan.NODE_CLASS_MAPPINGS)
    for path in sorted(WORKFLOWS.glob("*.json")):
        assert check_workflow(json.loads(path.read_text()), info, files) == [], path.name


def test_server_refuses_a_bad_step_list_before_running(server, info):
    prompt, ids = prepare("causalwan_t2v_dense_1.3b.json", info)
    prompt[ids["CausalWanChunkSampler"][0]]["inputs"]["steps"] = "1000, fast"
    answer = server.post("/prompt", {"prompt": prompt, "client_id": server.client_id})
    assert answer.get("http_error") == 400, answer
    assert "could not read the step list" in json.dumps(answer)


# ------------------------------------------------------------------------------------------------ running
# name -> (overrides, expected pixel frames); each queued with a fresh seed
RUNS = {
    "causalwan_i2v_comfy_files.json": ({"CausalWanChunkSampler": {"num_chunks": 3}}, 1 + 12 * 3),
    "causalwan_i2v_diffusers_folder.json": ({"CausalWanChunkSampler": {"num_chunks": 2}}, 1 + 12 * 2),
    # as shipped: 7 chunks, prompt 2 from chunk 3, prompt 3 from chunk 5 (recache), then 4 more chunks
    "causalwan_prompt_switch_and_continue.json": ({}, 1 + 12 * (7 + 4)),
    # window 12 / sink 3 as shipped; 5 chunks = 15 latent frames, so the window rolls
    "causalwan_t2v_dense_1.3b.json": ({"CausalWanChunkSampler": {"num_chunks": 5}}, 12 * 5 - 3),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_shipped_workflow_runs_on_the_server(server, info, name):
    overrides, frames = RUNS[name]
    prompt, ids = prepare(name, info, overrides)
    (sampler,) = ids["CausalWanChunkSampler"]
    (save,) = ids["SaveVideo"]
    chunks = prompt[sampler]["inputs"]["num_chunks"]
    start = time.monotonic()
    run = server.run(prompt, RUN_TIMEOUT)
    assert_success(run, server)
    # one progress message per chunk from the sampler, in order, and one chunk event (with a preview) each
    assert run.progress(sampler) == [(k, chunks) for k in range(1, chunks + 1)]
    events = chunk_events(run, sampler)
    assert [(e["chunk"], e["chunks"]) for e in events] == [(k, chunks) for k in range(1, chunks + 1)]
    assert all(e["image"].startswith("data:image/jpeg;base64,") for e in events)
    assert run.binary >= chunks  # the preview images themselves (the sampler has a VAE connected)
    executed = {d["node"] for d in run.of("executing", prompt_id=run.prompt_id)}
    assert set(prompt) <= executed | {n for d in run.of("execution_cached") for n in d.get("nodes", [])}
    if "CausalWanContinue" in ids:
        (cont,) = ids["CausalWanContinue"]
        more = prompt[cont]["inputs"]["num_chunks"]
        assert run.progress(cont) == [(k, more) for k in range(1, more + 1)]
        assert [e["prompt"] for e in events] == [1, 1, 1, 2, 2, 3, 3]  # the switches at chunks 3 and 5
    n, width, height, fps = video_frames(saved_video(server, run, save))
    assert (n, width, height) == (frames, SIZE, SIZE) and fps == 16.0
    print(f"{name}: {time.monotonic() - start:.1f} s, {n} frames")


def test_interrupt_mid_run_ends_cleanly_and_the_next_run_succeeds(server, info):
    # window 12 / sink 3: flat memory however long (without a window, 400 chunks would pass the RoPE table and
    # be refused before the first chunk)
    long_run = {"CausalWanChunkSampler": {"num_chunks": 400, "window_frames": 12, "sink_frames": 3}}
    prompt, ids = prepare("causalwan_t2v_dense_1.3b.json", info, long_run, size=64)
    (sampler,) = ids["CausalWanChunkSampler"]
    sent = []

    def interrupt_after_first_chunk(run, kind, data):
        if kind == "progress" and data.get("node") == sampler and not sent:
            sent.append(server.post("/interrupt"))

    run = server.run(prompt, RUN_TIMEOUT, on_message=interrupt_after_first_chunk)
    assert sent, "the sampler never reported progress"
    assert run.status == "execution_interrupted", f"{run.status}: {run.error()}\n{server.log_tail()}"
    assert not run.of("execution_success", prompt_id=run.prompt_id)
    done = run.progress(sampler)
    assert 1 <= len(done) < 400 and done[0] == (1, 400)  # stopped between chunks, long before the end
    assert server.wait_idle(), "the queue did not empty after the interrupt"
    status = server.history(run.prompt_id).get("status", {})
    assert not status.get("completed", False)

    # the next run (fewer chunks, same models: the loaders come from ComfyUI's cache) succeeds
    short = {"CausalWanChunkSampler": {"num_chunks": 2}}
    prompt2, ids2 = prepare("causalwan_t2v_dense_1.3b.json", info, short, size=64)
    run2 = server.run(prompt2, RUN_TIMEOUT)
    assert_success(run2, server)
    cached = {n for d in run2.of("execution_cached", prompt_id=run2.prompt_id) for n in d.get("nodes", [])}
    assert ids2["CausalWanModelLoader"][0] in cached  # the model survived the interrupt and is reused
    assert run2.progress(sampler) == [(1, 2), (2, 2)]
    n, width, height, _ = video_frames(saved_video(server, run2, ids2["SaveVideo"][0]))
    assert (n, width, height) == (12 * 2 - 3, 64, 64)


@pytest.mark.skipif(not REAL_UMT5, reason="set COMFYUI_REAL_UMT5=1 to run ComfyUI's own umT5 (CLIPLoader type "
                    "wan + CLIPTextEncode) on a tiny file: it builds the full 5.7B encoder, about 2 min per prompt "
                    "on 2 CPU cores")
def test_real_umt5_text_encoder_feeds_the_sampler(server, info):
    prompt, ids = prepare("causalwan_t2v_dense_1.3b.json", info, {"CausalWanChunkSampler": {"num_chunks": 2}},
                          real_text=True)
    assert prompt[ids["CLIPLoader"][0]]["inputs"] == {"clip_name": "tiny_umt5.safetensors", "type": "wan",
                                                      "device": "default"}
    run = server.run(prompt, 900.0)
    assert_success(run, server)
    (sampler,) = ids["CausalWanChunkSampler"]
    assert run.progress(sampler) == [(1, 2), (2, 2)]
    n, *_ = video_frames(saved_video(server, run, ids["SaveVideo"][0]))
    assert n == 12 * 2 - 3


def test_switching_workflows_under_cache_lru(tmp_path):
    """A, B, A again with `--cache-lru`: the third run gets A's loader output from the LRU cache, so the
    loader must not have released it when B's loader (the same node id 2) ran (nodes/node_memory.py)."""
    srv = comfy_server.ComfyServer(tmp_path / "lru", extra_node_folders={STUB_FOLDER: STUB_SOURCE},
                                   args=("--cache-lru", "50"))
    write_tiny_models(srv.models)
    write_start_image(srv.input / "example.png")
    try:
        srv.start()
        info = srv.get("/object_info", timeout=60)
        one = {"CausalWanChunkSampler": {"num_chunks": 1}}
        runs = [srv.run(prepare(name, info, one)[0], RUN_TIMEOUT)
                for name in ("causalwan_t2v_dense_1.3b.json", "causalwan_i2v_comfy_files.json",
                             "causalwan_t2v_dense_1.3b.json")]
    finally:
        srv.stop()
    for run in runs[:2]:
        assert_success(run, srv)
    assert_success(runs[2], srv)
