"""The nodes run end to end in plain pytest on tiny model files: loader -> start -> sampler -> decode, with
progress per chunk, previews, interrupts, prompt switching and continuing; outputs equal the engine's."""
import sys
import types
import weakref

import pytest
import torch

from causalwan.causal.sampling.stream import Stream, StreamOptions
from causalwan.nodes import comfy_adapter as adapter
from causalwan.nodes.chunk_sampler import CausalWanChunkSampler
from causalwan.nodes.continue_stream import CausalWanContinue
from causalwan.nodes.decode import CausalWanDecode
from causalwan.nodes.model_loader import CausalWanModelLoader
from causalwan.nodes.prompt_switch import CausalWanPromptSwitch
from causalwan.nodes.start_image import CausalWanImageConditioner
from causalwan.nodes.vae_loader import CausalWanVAELoader
from causalwan.nodes.latents import FRAMES_KEY
from causalwan.vae.latent_norm import denormalize_latent, normalize_latent
from causalwan.vae.streaming import decode_whole
from node_models import FOLDER, conditioning

SIZE = 32  # pixels: latent 4x4, 2x2 tokens per frame
FAST = "1000, 500"  # one high-noise and one low-noise step (shift 5): most tests need no more


@pytest.fixture
def pair(models):
    return CausalWanModelLoader().load("tiny_high.safetensors", "tiny_low.safetensors", "none", "auto", -1.0,
                                       "resident")


@pytest.fixture
def vae(models):
    return CausalWanVAELoader().load("tiny_vae.safetensors")[0]


@pytest.fixture
def start(vae):
    image = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    return CausalWanImageConditioner().start(SIZE, SIZE, "crop", image, vae)[0]


def sample(model, start, prompts, chunks=3, seed=42, vae=None, node_id=None, **kw):
    opts = dict(steps=FAST, shift=0.0, frames_per_chunk=3, window_frames=0, sink_frames=0)
    opts.update(kw)
    return CausalWanChunkSampler().sample(model, start, prompts, chunks, seed, vae=vae, unique_id=node_id, **opts)


def record():
    progress, events = [], []
    adapter.add_progress_listener(lambda v, t, img, node: progress.append((v, t, img, node)))
    adapter.add_event_listener(lambda name, data: events.append((name, data)))
    return progress, events


def test_image_to_video_end_to_end(pair, vae, start):
    model, plan = pair
    assert model.is_pair and model.experts.boundary == 875.0 and "2 x" in plan and "offload resident" in plan
    assert "resident (all weights resident) at 480x832" in plan and model.offload == "resident"
    progress, events = record()
    latent, stream = sample(model, start, conditioning(), vae=vae, steps="", node_id="5")
    assert latent["samples"].shape == (1, 16, 10, 4, 4) and latent["causalwan_pieces"] == [1, 3, 3, 3]
    calls = stream.stream.expert_calls
    assert [e for e, _ in calls[2:10]] == ["high"] * 3 + ["low"] * 5  # the release's 8 steps at shift 5
    # no preview image on ComfyUI's progress bar: every frame goes to the stream player instead
    assert progress == [(1, 3, None, "5"), (2, 3, None, "5"), (3, 3, None, "5")]
    assert {n for n, _ in events} == {"causalwan.stream"} and {d["node"] for _, d in events} == {"5"}
    assert len({d["run"] for _, d in events}) == 1
    *chunks, end = [d for _, d in events]
    assert [(d["kind"], d["chunk"], d["chunks"], d["first"], len(d["frames"]), d["total_frames"], d["prompt"])
            for d in chunks] == [("chunk", 1, 3, 0, 13, 37, 0), ("chunk", 2, 3, 13, 12, 37, 0),
                                 ("chunk", 3, 3, 25, 12, 37, 0)]  # the start frame leads chunk 1
    assert end == {"node": "5", "run": chunks[0]["run"], "kind": "end", "state": "done", "error": "", "frames": 37}
    assert all(f.startswith("data:image/jpeg;base64,") for d in chunks for f in d["frames"])
    assert chunks[0]["fps"] == 16

    images = CausalWanDecode().decode(vae, latent)[0]
    assert images.shape == (1 + 12 * 3, SIZE, SIZE, 3) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.01
    whole = decode_whole(vae.vae, normalize_latent(latent["samples"]))  # one decode of the whole latent
    assert torch.allclose(images, ((whole.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 3, 0), atol=1e-5)
    assert len(progress) == 3  # the sampler's preview decoder already made these frames: no second decode
    fresh = CausalWanDecode().decode(vae, {k: v for k, v in latent.items() if k != FRAMES_KEY})[0]
    assert len(progress) == 3 + 4  # a real decode reports its four pieces
    assert torch.allclose(fresh, images, atol=1e-5)
    with pytest.raises(ValueError, match="could not read the step list"):
        sample(model, start, conditioning(), steps="1000, fast")


def test_sampler_equals_the_engine_and_writes_raw_vae_space(pair, start):
    model, _ = pair
    latent, state = sample(model, start, conditioning(), seed=7)
    engine = Stream(model.experts, seed=7, options=StreamOptions(steps=(1000, 500)), latent_hw=(4, 4))
    engine.set_prompt(conditioning()[0][0][:, :7])
    engine.prime(start.latent)
    z = torch.cat([start.latent] + list(engine.chunks(3)), dim=2)
    assert torch.equal(state.latent, z)
    assert torch.allclose(latent["samples"], denormalize_latent(z))  # raw = normalised * std + mean
    assert torch.equal(state.latent[:, :, :1], start.latent)  # the start frame leads the video
    again = sample(model, start, conditioning(), seed=7)[0]["samples"]
    other = sample(model, start, conditioning(), seed=8)[0]["samples"]
    assert torch.equal(again, latent["samples"]) and (other - again).abs().max() > 1e-3


def test_diffusers_folder_gives_the_same_video_as_the_two_files(pair, start, models):
    files_model, _ = pair
    folder_model, _ = CausalWanModelLoader().load("none", "none", FOLDER, "auto", -1.0, "resident")
    assert folder_model.experts.boundary == 875.0 and folder_model.experts.shift == 5.0
    a = sample(files_model, start, conditioning(), chunks=1)[0]["samples"]
    b = sample(folder_model, start, conditioning(), chunks=1)[0]["samples"]
    assert torch.equal(a, b)
    folder_vae = CausalWanVAELoader().load(FOLDER)[0]
    z = normalize_latent(a)
    assert torch.allclose(CausalWanDecode().decode(folder_vae, {"samples": a})[0],
                          ((decode_whole(folder_vae.vae, z) + 1) / 2)[0].permute(1, 2, 3, 0), atol=1e-5)


def test_dense_text_to_video(models, vae):
    model, plan = CausalWanModelLoader().load("none", "tiny_dense.safetensors", "none", "auto", -1.0, "resident")
    assert not model.is_pair and "dense model" in plan
    start, note = CausalWanImageConditioner().start(SIZE, SIZE)
    assert start.latent is None and note == ""
    latent, state = sample(model, start, conditioning(), chunks=2, steps="")
    assert latent["samples"].shape == (1, 16, 6, 4, 4) and latent["causalwan_pieces"] == [3, 3]
    calls = state.stream.expert_calls
    assert [t for _, t in calls[:5]] == pytest.approx([1000, 937.5, 833.333, 625, 0], abs=1e-3)  # 4 steps, shift 5
    assert {e for e, _ in calls} == {"low"}
    images = CausalWanDecode().decode(vae, state)[0]  # straight from the stream output
    assert images.shape == (21, SIZE, SIZE, 3)
    assert torch.allclose(images, CausalWanDecode().decode(vae, latent)[0], atol=1e-5)


def test_interrupt_between_chunks_stops_and_the_next_run_succeeds(pair, start):
    model, _ = pair
    progress, events = record()
    adapter.add_progress_listener(lambda v, t, img, node: adapter.request_interrupt() if v == 1 else None)
    with pytest.raises(adapter.Interrupted):
        sample(model, start, conditioning())
    assert [v for v, *_ in progress] == [1]  # stopped before the second chunk was made
    assert [(d["kind"], d.get("state")) for _, d in events] == [("chunk", None), ("end", "cancelled")]
    adapter.clear_listeners()
    progress, _ = record()
    latent, _ = sample(model, start, conditioning())
    assert [v for v, *_ in progress] == [1, 2, 3] and latent["samples"].shape[2] == 10
    adapter.throw_if_interrupted()  # the request was consumed


def test_prompt_switch_changes_only_the_chunks_after_the_switch(pair, start):
    model, _ = pair
    prompts = CausalWanPromptSwitch().build(conditioning(0), "cut", 2, conditioning_2=conditioning(1, tokens=5),
                                            start_chunk_2=2)[0]
    _, events = record()
    switched = sample(model, start, prompts)[1].latent
    single = sample(model, start, conditioning(0))[1].latent
    assert torch.equal(switched[:, :, :7], single[:, :, :7])  # start frame + chunks 0 and 1
    assert (switched[:, :, 7:] - single[:, :, 7:]).abs().max() > 1e-3
    assert [d["prompt"] for _, d in events[:3]] == [1, 1, 2]
    recached = sample(model, start, CausalWanPromptSwitch().build(
        conditioning(0), "recache", 2, conditioning_2=conditioning(1, tokens=5), start_chunk_2=2)[0])[1].latent
    assert torch.equal(recached[:, :, :7], single[:, :, :7])
    assert (recached[:, :, 7:] - switched[:, :, 7:]).abs().max() > 1e-4


def test_continue_forks_and_matches_one_long_run(pair, start):
    model, _ = pair
    _, first = sample(model, start, conditioning(), chunks=2)
    before = (first.stream.next_frame, first.stream.chunk_index, first.latent.clone())
    latent, cont = CausalWanContinue().go_on(first, 2)
    assert first.stream.parked and first.stream.cache_bytes() > 0  # the upstream's copy waits in host memory
    assert latent["samples"].shape[2] == 1 + 4 * 3 and latent["causalwan_pieces"] == [1, 3, 3, 3, 3]
    assert (first.stream.next_frame, first.stream.chunk_index) == before[:2]  # upstream untouched
    assert torch.equal(first.latent, before[2]) and cont.stream is not first.stream
    long_run = sample(model, start, conditioning(), chunks=4)[1].latent
    assert torch.equal(cont.latent, long_run)
    again = CausalWanContinue().go_on(first, 2)[1].latent  # a re-queue from the cached upstream output
    assert torch.equal(again, cont.latent)
    new_prompt = CausalWanContinue().go_on(first, 2, prompts=conditioning(3))[1].latent
    assert torch.equal(new_prompt[:, :, :7], cont.latent[:, :, :7])
    assert (new_prompt[:, :, 7:] - cont.latent[:, :, 7:]).abs().max() > 1e-3


def test_a_reloaded_model_releases_every_stream_built_on_it_before_planning(start, monkeypatch):
    from causalwan.nodes import model_loader

    loader = CausalWanModelLoader()
    old, _ = loader.load("tiny_high.safetensors", "tiny_low.safetensors", "none", offload="resident", unique_id="5")
    _, state = sample(old, start, conditioning(), chunks=1)  # no node id: not tracked per node
    _, cont = CausalWanContinue().go_on(state, 1)
    caches = [weakref.ref(t) for s in (state, cont) for c in s.stream.caches.values() for t in c.k + c.v]
    seen = []
    real = model_loader.adapter.make_room
    monkeypatch.setattr(model_loader.adapter, "make_room", lambda *a, **k: (
        seen.append(sum(r() is not None for r in caches)), real(*a, **k)))
    loader.load("tiny_high.safetensors", "tiny_low.safetensors", "none", offload="resident", unique_id="5")
    assert seen == [0]  # every cache of both streams was gone before the new load was planned
    assert state.stream is None and cont.stream is None and len(caches) == 16  # 2 streams x 2 experts x 2 layers x (k, v)
    with pytest.raises(ValueError, match="released"):
        CausalWanContinue().go_on(cont, 1)


def test_a_released_model_drops_the_rope_tables_its_streams_used(start):
    from causalwan.causal.model import rope

    loader = CausalWanModelLoader()
    old, _ = loader.load("tiny_high.safetensors", "tiny_low.safetensors", "none", offload="resident", unique_id="6")
    sample(old, start, conditioning(), chunks=1)
    cfg = old.config
    table = rope.rope_table(range(1, 4), 2, 2, cfg.head_dim, cfg.rope_table)  # the first chunk's, memoised
    assert rope.rope_table(range(1, 4), 2, 2, cfg.head_dim, cfg.rope_table) is table
    tables = [weakref.ref(table)]
    del table
    assert all(r() is not None for r in tables)  # held by the memo
    loader.load("tiny_high.safetensors", "tiny_low.safetensors", "none", offload="resident", unique_id="6")
    assert old.released and all(r() is None for r in tables)


def test_windowed_stream_runs_past_the_window(pair, start):
    model, _ = pair
    latent, state = sample(model, start, conditioning(), chunks=4, window_frames=6, sink_frames=1)
    assert latent["samples"].shape[2] == 13
    assert max(len(c.frames) for c in state.stream.caches.values()) <= 6
    buffers = [id(t) for c in state.stream.caches.values() for t in c.k + c.v]
    cont = CausalWanContinue().go_on(state, 1)[1]
    assert [id(t) for c in cont.stream.caches.values() for t in c.k + c.v] == buffers  # taken over, not copied


def test_a_node_that_runs_again_releases_its_last_output(pair, start, vae, models):
    model, _ = pair
    latent, first = sample(model, start, conditioning(), chunks=1, node_id="9")
    _, other_node = sample(model, start, conditioning(), chunks=1, node_id="10")
    _, second = sample(model, start, conditioning(), chunks=1, seed=1, node_id="9")
    assert first.stream is None and second.stream is not None and other_node.stream is not None
    with pytest.raises(ValueError, match="this stream was released to free memory when its node ran again"):
        CausalWanContinue().go_on(first, 1)
    assert CausalWanDecode().decode(vae, first)[0].shape == (13, SIZE, SIZE, 3)  # its latent is still there

    loader = CausalWanModelLoader()
    old, _ = loader.load("none", "tiny_dense.safetensors", "none", unique_id="3")
    new, _ = loader.load("none", "tiny_dense.safetensors", "none", unique_id="3")
    assert old.released and next(old.experts.low.parameters()).is_meta and not new.released
    dense_start = CausalWanImageConditioner().start(SIZE, SIZE)[0]
    with pytest.raises(ValueError, match="this model was released because its CausalWan Model Loader ran again"):
        sample(old, dense_start, conditioning())
    assert sample(new, dense_start, conditioning(), chunks=1)[0]["samples"].shape == (1, 16, 3, 4, 4)


def test_a_stale_continue_output_dropped_by_comfyui_frees_its_caches_before_the_sampler_runs_again(pair, start,
                                                                                                  monkeypatch):
    # Seed "randomize": sampler S feeding Continue C; ComfyUI drops C's stale output at the start of the prompt
    # (only the test's names for it are deleted here), then runs S first. C's old fork must not be on the device.
    from causalwan.nodes import chunk_sampler

    model, _ = pair
    _, a = sample(model, start, conditioning(), chunks=2, node_id="S")
    _, b = CausalWanContinue().go_on(a, 2, unique_id="C")
    fork_caches = [weakref.ref(t) for c in b.stream.caches.values() for t in c.k + c.v]
    assert len(fork_caches) == 8 and all(r() is not None for r in fork_caches)
    del b
    seen = []
    real = chunk_sampler.adapter.make_room
    monkeypatch.setattr(chunk_sampler.adapter, "make_room", lambda *a_, **k: (
        seen.append(sum(r() is not None for r in fork_caches)), real(*a_, **k)))
    sample(model, start, conditioning(), chunks=2, seed=7, node_id="S")
    assert seen == [0]  # no buffer of the stale fork was alive when the sampler planned its new caches


@pytest.mark.parametrize("mode", ["swap", "blocks", "auto"])
def test_offload_modes_give_the_same_video(start, models, mode):
    resident, _ = CausalWanModelLoader().load("tiny_high.safetensors", "tiny_low.safetensors", "none", "auto", -1.0,
                                              "resident")
    model, plan = CausalWanModelLoader().load("tiny_high.safetensors", "tiny_low.safetensors", "none", "auto", -1.0,
                                              mode)
    assert model.offload == ("resident" if mode == "auto" else mode)  # auto on a CPU: resident
    assert f"offload {model.offload}" in plan and model.policy.mode == model.offload
    # A resident model computes straight from the memory-mapped file; the offload policies compute from fresh
    # copies, and the CPU kernels round differently for differently aligned memory (about 3e-6 here, with or
    # without offload). Give the reference fresh copies too when the model has them, so the test is bit for bit.
    if model.offload != "resident":
        for expert in resident.experts.modules().values():
            for p in expert.parameters():
                p.data = p.data.clone()
    a = sample(resident, start, conditioning(), chunks=1)[1].latent
    b = sample(model, start, conditioning(), chunks=1)[1].latent
    assert torch.equal(a, b)


def test_nothing_is_released_under_comfyui_lru_cache(models, monkeypatch):
    # With --cache-lru ComfyUI may hand an older output to a later prompt, so it must stay usable.
    monkeypatch.setitem(sys.modules, "comfy.cli_args", types.SimpleNamespace(args=types.SimpleNamespace(cache_lru=50)))
    loader = CausalWanModelLoader()
    old, _ = loader.load("none", "tiny_dense.safetensors", "none", unique_id="4")
    new, _ = loader.load("none", "tiny_dense.safetensors", "none", unique_id="4")
    assert not old.released and not new.released
    dense_start = CausalWanImageConditioner().start(SIZE, SIZE)[0]
    assert sample(old, dense_start, conditioning(), chunks=1)[0]["samples"].shape == (1, 16, 3, 4, 4)


def test_fp8_kv_cache_is_chosen_in_the_sampler(pair, start):
    model, _ = pair
    plain = sample(model, start, conditioning(), chunks=2)[1]
    fp8 = sample(model, start, conditioning(), chunks=2, kv_cache="fp8_e4m3fn")[1]
    assert {t.dtype for c in fp8.stream.caches.values() for t in c.k} == {torch.float8_e4m3fn}
    assert fp8.stream.cache_bytes() < plain.stream.cache_bytes()
    assert 0 < (fp8.latent - plain.latent).abs().max() < 1.0  # close, not equal
    with pytest.raises(ValueError, match="unknown kv_cache 'fp4'"):
        sample(model, start, conditioning(), kv_cache="fp4")


def test_text_to_video_on_a_pair_plans_exactly_the_cache_it_makes_and_continue_the_copy_it_parks(pair, monkeypatch):
    # a pair without a start image makes frame 0 alone: 3 chunks of 3 are 1 + 3 + 3 = 7 frames, not 9
    from causalwan.nodes import chunk_sampler, continue_stream

    model, _ = pair
    asked, plans = [], []
    real_room, real_explain = adapter.make_room, continue_stream.explain_oom
    monkeypatch.setattr(adapter, "make_room", lambda need, *a, **k: (asked.append(need), real_room(need, *a, **k)))
    monkeypatch.setattr(continue_stream, "explain_oom", lambda plan, **k: (plans.append(plan), real_explain(plan, **k))[1])
    t2v = CausalWanImageConditioner().start(SIZE, SIZE)[0]
    latent, state = sample(model, t2v, conditioning(), chunks=3)
    assert latent["samples"].shape[2] == 7 and state.stream.next_frame == 7
    assert asked == [state.stream.cache_bytes()]  # every planned cache slot is used, none left empty
    CausalWanContinue().go_on(state, 1)
    assert state.stream.parked and plans[0].host == state.stream.cache_bytes()  # the parked copy, counted exactly


def test_continue_asks_comfyui_only_for_the_room_its_caches_grow_by(pair, start, monkeypatch):
    from causalwan.nodes import continue_stream

    model, _ = pair
    _, state = sample(model, start, conditioning(), chunks=2)
    on_device = state.stream.cache_bytes()
    asked, plans = [], []
    real_room, real_explain = adapter.make_room, continue_stream.explain_oom
    monkeypatch.setattr(adapter, "make_room", lambda need, *a, **k: (asked.append(need), real_room(need, *a, **k)))
    monkeypatch.setattr(continue_stream, "explain_oom", lambda plan, **k: (plans.append(plan), real_explain(plan, **k))[1])
    _, cont = CausalWanContinue().go_on(state, 2)
    assert plans[0].kv_cache == cont.stream.cache_bytes() > on_device > 0
    assert asked == [cont.stream.cache_bytes() - on_device]  # the fork took over the 7 frames already there
    CausalWanContinue().go_on(state, 2)  # a re-queue: the upstream's copy is parked, all of it comes back
    assert asked[1] == plans[1].kv_cache


def test_continue_refuses_a_parked_copy_the_host_memory_cannot_hold_before_copying_anything(pair, start,
                                                                                             monkeypatch):
    from causalwan.causal.memory import host_room

    assert host_room.host_available() > 0  # this machine says how much it has
    model, _ = pair
    _, state = sample(model, start, conditioning(), chunks=2)
    copy = state.stream.cache_bytes()  # what fork() would put in host memory
    monkeypatch.setattr(host_room, "host_available", lambda: copy - 1)
    with pytest.raises(MemoryError, match="need 0.0 GiB more, but only 0.0 GiB of host memory is available; use "
                                          "kv_cache fp8_e4m3fn in the sampler"):
        CausalWanContinue().go_on(state, 2)
    assert not state.stream.parked and state.stream.device_cache_bytes() == copy  # nothing copied or taken
    monkeypatch.setattr(host_room, "host_available", lambda: copy)
    CausalWanContinue().go_on(state, 2)  # exactly enough
    assert state.stream.parked
    swap, _ = CausalWanModelLoader().load("tiny_high.safetensors", "tiny_low.safetensors", "none", offload="swap")
    monkeypatch.setattr(host_room, "host_available", lambda: 0)
    with pytest.raises(MemoryError, match="host memory"):  # swap: the idle expert's cache waits there
        sample(swap, start, conditioning(), chunks=2)


def test_an_out_of_memory_error_in_continue_does_not_keep_the_forks_caches(pair, start, monkeypatch):
    # ComfyUI keeps the error (and so its traceback's frames) after the run failed
    import gc

    from causalwan.causal.memory.oom import CausalWanOutOfMemory
    from causalwan.nodes import continue_stream

    model, _ = pair
    _, state = sample(model, start, conditioning(), chunks=2)
    fork_caches = []

    def oom_after_a_chunk(stream, *a, **k):
        stream.next_chunk()
        fork_caches.extend(weakref.ref(t) for c in stream.caches.values() for t in c.k + c.v)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(continue_stream, "run_chunks", oom_after_a_chunk)
    with pytest.raises(CausalWanOutOfMemory) as info:
        CausalWanContinue().go_on(state, 2)
    gc.collect()
    assert info.value is not None and len(fork_caches) == 8
    assert sum(r() is not None for r in fork_caches) == 0  # none of the fork's buffers outlives the run
    assert state.stream.parked and state.stream.cache_bytes() > 0  # the upstream's host copy stays for a re-queue


def test_out_of_memory_reaches_the_user_with_the_planners_advice(pair, start, monkeypatch):
    from causalwan.causal.memory.oom import CausalWanOutOfMemory
    from causalwan.causal.weights import loader

    model, _ = pair

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Stream, "next_chunk", oom)
    for run in (lambda: sample(model, start, conditioning(), chunks=2),
                lambda: CausalWanContinue().go_on(state, 1)):
        with pytest.raises(CausalWanOutOfMemory) as info:
            run()
        text = str(info.value)
        assert "ran out of memory in offload mode 'resident' at 32x32" in text and "Try offload mode" in text
        assert "Original error: CUDA out of memory" in text
        monkeypatch.undo()
        state = sample(model, start, conditioning(), chunks=1)[1]
        monkeypatch.setattr(Stream, "next_chunk", oom)
    monkeypatch.setattr(loader, "load_experts", oom)
    with pytest.raises(CausalWanOutOfMemory, match="ran out of memory in offload mode 'swap' at 480x832"):
        CausalWanModelLoader().load("tiny_high.safetensors", "tiny_low.safetensors", "none", offload="swap")
