"""The node path gets the command line's checks (the same rules from causal/sampling/settings.py, the window
check, the step-list parser and vae/image_fit.py), in the node's own words: inputs a widget range does not
cover (API prompts, values from other nodes) are refused with one ValueError before anything is computed."""
import math

import pytest
import torch

from causalwan.nodes.chunk_sampler import CausalWanChunkSampler
from causalwan.nodes.conditioning import to_context
from causalwan.nodes.continue_stream import CausalWanContinue
from causalwan.nodes.start_image import CausalWanImageConditioner
from causalwan.nodes.vae_loader import CausalWanVAELoader
from causalwan.nodes import node_memory
from node_models import conditioning
from test_nodes_errors import dense, load, sample, t2v_start  # noqa: F401  (fixtures and helpers)


@pytest.fixture
def vae(models):
    return CausalWanVAELoader().load("tiny_vae.safetensors")[0]


@pytest.mark.parametrize("image,words", [
    (torch.zeros(1, 0, 0, 3), "image is empty (0x0 pixels, 1 frames)"),
    (torch.zeros(0, 32, 32, 3), "image is empty (32x32 pixels, 0 frames)"),
    (torch.full((1, 32, 32, 3), math.nan), "image holds 3072 NaN or infinite values"),
    (torch.zeros(32, 32, 3), "image: expected an IMAGE [frames, height, width, 3], got [32, 32, 3]"),
])
def test_start_refuses_images_without_usable_pixels(vae, image, words):
    with pytest.raises(ValueError) as e:
        CausalWanImageConditioner().start(32, 32, "crop", image, vae)
    assert words in str(e.value)


def test_start_refuses_one_nan_pixel_and_an_infinite_one(vae):
    for bad in (math.nan, math.inf):
        image = torch.rand(1, 32, 32, 3)
        image[0, 5, 7, 1] = bad
        with pytest.raises(ValueError, match="image holds 1 NaN or infinite values"):
            CausalWanImageConditioner().start(32, 32, "crop", image, vae)


def test_conditioning_with_nan_is_refused():
    text = torch.randn(1, 12, 64)
    text[0, 3, 9] = math.nan
    with pytest.raises(ValueError, match="text conditioning holds 1 NaN or infinite values"):
        to_context(text, 32)
    assert to_context(torch.randn(1, 12, 64), 32).shape == (1, 12, 64)


def test_a_nan_conditioning_stops_the_sampler_before_any_chunk(dense):
    cond = conditioning()
    cond[0][0][0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        sample(dense, cond)


@pytest.mark.parametrize("steps,words", [
    ("1000;500", "could not read the step list '1000;500' (steps); write timesteps separated by commas"),
    ("1000, nan", "steps '1000, nan': steps must be strictly decreasing timesteps in (0, 1000]"),
    ("1000, 1000", "strictly decreasing"),
    ("1200", "strictly decreasing"),
])
def test_step_lists_are_refused_by_validation_and_by_the_run(dense, steps, words):
    assert words in CausalWanChunkSampler.VALIDATE_INPUTS(steps=steps)
    with pytest.raises(ValueError) as e:
        sample(dense, conditioning(), steps=steps)
    assert words in str(e.value)


@pytest.mark.parametrize("settings,words", [
    (dict(shift=math.nan), "shift is nan, which is not a usable number"),
    (dict(shift=math.inf), "shift is inf"),
    (dict(shift=-1.0), "shift -1 cannot be used: the shift must be positive (5 for the released models, or 0 for "
                       "the checkpoint's shift)"),
    (dict(chunks=0), "num_chunks 0 is out of range: it must be at least 1"),
    (dict(seed=-1), "seed -1 is out of range"),
    (dict(seed=2 ** 64), "seed 18446744073709551616 is out of range"),
    (dict(frames_per_chunk=-1), "frames_per_chunk -1 is out of range"),
    (dict(sink_frames=-2), "sink_frames -2 is out of range"),
    (dict(window_frames=-2), "window_frames -2 is out of range"),
    (dict(window_frames=4, sink_frames=4), "sink_frames 4 must be smaller than window_frames 4"),
])
def test_sampler_numbers_are_checked_before_anything_runs(dense, monkeypatch, settings, words):
    released = []
    monkeypatch.setattr(node_memory, "release_previous", lambda *a: released.append(a))
    chunks, seed = settings.pop("chunks", 2), settings.pop("seed", 0)
    opts = dict(steps="1000", shift=0.0, frames_per_chunk=3, window_frames=0, sink_frames=0)
    opts.update(settings)
    with pytest.raises(ValueError) as e:
        CausalWanChunkSampler().sample(dense, t2v_start(), conditioning(), chunks, seed, **opts)
    assert words in str(e.value)
    assert released == []  # the previous run's stream is not dropped for an input that cannot work


def test_continue_refuses_zero_chunks(dense):
    _, state = sample(dense, conditioning())
    with pytest.raises(ValueError, match="num_chunks 0 is out of range: it must be at least 1"):
        CausalWanContinue().go_on(state, 0)
