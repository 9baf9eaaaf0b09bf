"""The pack inside a REAL ComfyUI server (skipped unless $COMFYUI_DIR points at a ComfyUI checkout).

One server (tests/comfy_server.py) is started for the module with this repository linked into a temporary
custom_nodes folder as "causalwan-stream" and a temporary models folder holding tiny model files written here
in the real formats: two experts as ComfyUI single files, a dense Self-Forcing-style .pt training checkpoint,
a diffusers release folder (transformer/, transformer_2/, vae/, model_index.json) and a Wan2.1 VAE file. The
experts are tiny (dim 128, 2 layers) but read text of width 4096, like the real umT5 conditioning.

Then: GET /object_info lists every CausalWan node (and the log has no IMPORT FAILED for the pack); each shipped
workflow is converted to API form with tests/workflow_format.py against the server's own /object_info, its file
widgets are pointed at the tiny files and its sizes/chunk counts made small, and it is queued over POST /prompt
while the websocket /ws?clientId=... is followed: execution_success, one progress message and one
"causalwan.stream" event carrying every frame of the chunk per chunk from the sampler (no preview image through
ComfyUI's progress bar), and the video SaveVideo wrote, decoded frame by frame. POST /interrupt mid-run ends a
run with execution_interrupted (the player's stream says "cancelled" first) and the next run succeeds. The tiny
models, the stand-in text node and `prepare` live in tests/comfy_home.py (shared with test_browser_editor.py).

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

import json
import time
from pathlib import Path

import pytest

import comfy_server

_reason = comfy_server.skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

import av  # noqa: E402
import numpy as np  # noqa: E402

import causalwan  # noqa: E402
from core_nodes import CORE_NODES, FILE_LISTS  # noqa: E402
from workflow_check import check_workflow, file_inputs_of  # noqa: E402
from workflow_format import input_specs, widget_slots  # noqa: E402
from shipped_workflows import I2V_FILES, I2V_FOLDER, PROMPT_SWITCH, T2V_DENSE, TINY_WORLD, all_workflows  # noqa: E402
from comfy_home import (FOLDER, REAL_UMT5, SIZE, STUB_FOLDER, STUB_NODE, STUB_SOURCE, load_workflow,  # noqa: E402
                        prepare, write_start_image, write_tiny_models, write_tiny_umt5)

PACK = comfy_server.PACK_NAME
RUN_TIMEOUT = 300.0


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


def stream_events(run, node: str, kind: str = "chunk") -> list[dict]:
    return [d for d in run.of("causalwan.stream") if d.get("node") == node and d.get("kind") == kind]


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
    web = sorted(p.name for p in (comfy_server.REPO / "web").glob("*.js"))
    assert "causalwan.js" in web and all(f"/extensions/{PACK}/{name}" in scripts for name in web)


def test_loaders_list_the_tiny_files_from_comfyui_folders(info):
    spec = info["CausalWanModelLoader"]["input"]["required"]
    assert spec["high_noise_model"][0] == ["none", "tiny_high.safetensors", "tiny_low.safetensors",
                                           "tiny_self_forcing_dmd.pt"]
    assert spec["diffusers_folder"][0] == ["none", FOLDER, "tinyworld/"]  # the pack's own assets/tinyworld too
    assert info["CausalWanVAELoader"]["input"]["required"]["vae_name"][0] == ["tiny_vae.safetensors", FOLDER,
                                                                            "tinyworld/"]


def test_core_node_table_and_shipped_workflows_fit_the_real_server(info):
    """tests/core_nodes.py (the offline table of core nodes) matches this ComfyUI, and every shipped workflow
    passes the checker against the server's own definitions."""
    for kind, table in CORE_NODES.items():
        assert kind in info, f"core node {kind} is not in this ComfyUI"
        live = [(n, extra) for n, _, extra in widget_slots(info[kind])]
        assert [(n, extra) for n, _, extra in widget_slots(table)] == live, kind
        assert list(table["output"]) == list(info[kind]["output"]), kind
    files = set(FILE_LISTS) | file_inputs_of(causalwan.NODE_CLASS_MAPPINGS)
    for path in all_workflows():
        assert check_workflow(json.loads(path.read_text()), info, files) == [], path.name


def test_server_refuses_a_bad_step_list_before_running(server, info):
    prompt, ids = prepare(T2V_DENSE, info)
    prompt[ids["CausalWanChunkSampler"][0]]["inputs"]["steps"] = "1000, fast"
    answer = server.post("/prompt", {"prompt": prompt, "client_id": server.client_id})
    assert answer.get("http_error") == 400, answer
    assert "could not read the step list" in json.dumps(answer)


# ------------------------------------------------------------------------------------------------ running
# name -> (overrides, expected pixel frames); each queued with a fresh seed
RUNS = {
    I2V_FILES: ({"CausalWanChunkSampler": {"num_chunks": 3}}, 1 + 12 * 3),
    I2V_FOLDER: ({"CausalWanChunkSampler": {"num_chunks": 2}}, 1 + 12 * 2),
    # as shipped: 7 chunks, prompt 2 from chunk 3, prompt 3 from chunk 5 (recache), then 4 more chunks
    PROMPT_SWITCH: ({}, 1 + 12 * (7 + 4)),
    # window 12 / sink 3 as shipped; 5 chunks = 15 latent frames, so the window rolls
    T2V_DENSE: ({"CausalWanChunkSampler": {"num_chunks": 5}}, 12 * 5 - 3),
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
    # one progress message per chunk from the sampler, in order, and every frame of every chunk to the player
    assert run.progress(sampler) == [(k, chunks) for k in range(1, chunks + 1)]
    events = stream_events(run, sampler)
    assert [(e["chunk"], e["chunks"]) for e in events] == [(k, chunks) for k in range(1, chunks + 1)]
    sent = [f for e in events for f in e["frames"]]
    assert all(f.startswith("data:image/jpeg;base64,") for f in sent)
    assert [e["first"] for e in events] == [sum(len(x["frames"]) for x in events[:i]) for i in range(len(events))]
    (end,) = stream_events(run, sampler, "end")
    assert end["state"] == "done" and end["frames"] == len(sent) == events[0]["total_frames"]
    assert run.binary == 0  # no second preview through ComfyUI's progress bar
    executed = {d["node"] for d in run.of("executing", prompt_id=run.prompt_id)}
    assert set(prompt) <= executed | {n for d in run.of("execution_cached") for n in d.get("nodes", [])}
    if "CausalWanContinue" in ids:
        (cont,) = ids["CausalWanContinue"]
        more = prompt[cont]["inputs"]["num_chunks"]
        assert run.progress(cont) == [(k, more) for k in range(1, more + 1)]
        assert [e["prompt"] for e in events] == [1, 1, 1, 2, 2, 3, 3]  # the switches at chunks 3 and 5
        assert [e["prompt"] for e in stream_events(run, cont)] == [0] * more  # its own CONDITIONING (prompt 4)
        assert len(sent) == frames - 12 * more  # the sampler's frames; Continue sent the rest
        assert sum(len(e["frames"]) for e in stream_events(run, cont)) == 12 * more
    n, width, height, fps = video_frames(saved_video(server, run, save))
    assert (n, width, height) == (frames, SIZE, SIZE) and fps == 16.0
    print(f"{name}: {time.monotonic() - start:.1f} s, {n} frames")


def test_tiny_world_workflow_runs_as_shipped_and_moves_the_shape(server, info):
    """"Tiny world, ready to run" exactly as shipped (the bundled tinyworld/ folder, its own text encoder, the start
    image the pack copies into ComfyUI's input folder), only fewer chunks: the saved video shows the red circle
    and it goes right, as its prompt says."""
    from causalwan.tinyworld.track import direction, track
    from workflow_format import ui_to_api

    prompt = ui_to_api(load_workflow(TINY_WORLD), info)
    (sampler,) = [k for k, v in prompt.items() if v["class_type"] == "CausalWanChunkSampler"]
    (save,) = [k for k, v in prompt.items() if v["class_type"] == "SaveVideo"]
    prompt[sampler]["inputs"]["num_chunks"] = 2
    prompt[sampler]["inputs"]["seed"] = 0
    run = server.run(prompt, RUN_TIMEOUT)
    assert_success(run, server)
    with av.open(str(saved_video(server, run, save))) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert frames.shape == (25, 128, 128, 3)
    centroids, areas = track(frames)
    assert areas.min() > 100 and direction(centroids) == "right"


def test_interrupt_mid_run_ends_cleanly_and_the_next_run_succeeds(server, info):
    # window 12 / sink 3: flat memory however long (without a window, 400 chunks would pass the RoPE table and
    # be refused before the first chunk)
    long_run = {"CausalWanChunkSampler": {"num_chunks": 400, "window_frames": 12, "sink_frames": 3}}
    prompt, ids = prepare(T2V_DENSE, info, long_run, size=64)
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
    (end,) = stream_events(run, sampler, "end")  # the player hears of the Cancel, after every frame sent
    assert end["state"] == "cancelled" and end["frames"] == sum(len(e["frames"]) for e in stream_events(run, sampler))
    kinds = [k for k, _ in run.messages]
    assert kinds.index("execution_interrupted") > max(i for i, k in enumerate(kinds) if k == "causalwan.stream")
    assert server.wait_idle(), "the queue did not empty after the interrupt"
    status = server.history(run.prompt_id).get("status", {})
    assert not status.get("completed", False)

    # the next run (fewer chunks, same models: the loaders come from ComfyUI's cache) succeeds
    short = {"CausalWanChunkSampler": {"num_chunks": 2}}
    prompt2, ids2 = prepare(T2V_DENSE, info, short, size=64)
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
    prompt, ids = prepare(T2V_DENSE, info, {"CausalWanChunkSampler": {"num_chunks": 2}},
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
                for name in (T2V_DENSE, I2V_FILES,
                             T2V_DENSE)]
    finally:
        srv.stop()
    for run in runs[:2]:
        assert_success(run, srv)
    assert_success(runs[2], srv)
