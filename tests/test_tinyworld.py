"""The bundled tiny world (assets/tinyworld): a causal expert pair trained from scratch by the pack's own code
(python -m causalwan.tinyworld.build). The README's main job runs it; these tests check on the CLI's own MP4
output that it does what its captions say, with the colour-centroid tracker of tinyworld/track.py."""
import hashlib
import re

import av
import numpy as np
import pytest
import torch
from PIL import Image

from causalwan import cli
from causalwan.cli_checks import BUNDLED_IMAGE, TINY_WORLD
from causalwan.tinyworld.evaluate import direction_accuracy, load_models, start_frame
from causalwan.tinyworld.track import direction, track
from causalwan.tinyworld.world import COLOURS, all_captions, caption, positions, render, start_scene, turned

pytestmark = pytest.mark.skipif(not (TINY_WORLD / "model_index.json").is_file(), reason="no tiny world built")


def read_mp4(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def run_cli(tmp_path, name, *args) -> np.ndarray:
    out = tmp_path / f"{name}.mp4"
    cli.main([*args, "--out", str(out)])
    return read_mp4(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0 ** 2 / mse))


# --------------------------------------------------------------------------------------------- the world
def test_the_world_and_its_captions():
    caps = all_captions()
    assert len(caps) == len(set(caps)) == 32
    assert all(re.fullmatch(r"a (red|green|blue|yellow) (circle|square) moves (left|right|up|down)", c) for c in caps)
    scene = start_scene("blue", "square", "left")
    a, b = render(scene, 5), render(scene, 5)
    assert a.shape == (5, 128, 128, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert tuple(a[0, 64, 64]) == COLOURS["blue"] and tuple(a[0, 5, 5]) == (128, 128, 128)
    cents, areas = track(a)
    assert np.allclose(cents[:, 0], 63.5 - np.arange(5) * scene.speed, atol=0.05)  # 1 px per frame to the left
    assert np.allclose(areas, 28 * 28, rtol=0.05)
    far = positions(scene, 200)  # bounces: always inside, moving right after the left wall
    assert far[:, 0].min() >= scene.radius and (np.diff(far[60:80, 0]) > 0).all()
    turn = positions(turned(scene, 10, "up"), 20)
    assert direction(turn[:11]) == "left" and direction(turn[10:]) == "up"


def test_teacher_forcing_scores_one_chunk_after_a_clean_past():
    """The causal stage's batches: a clean past (the start frame, or it and the first chunk; always both for a
    clip that turns) and one scored chunk of 3 frames after it; under the block-causal mask the loss does not
    depend on the frames after that chunk, and does depend on the clean past."""
    from causalwan.tinyworld.train_teacher import causal_batch, flow_loss, new_teacher

    caps = [caption("red", "circle", d) for d in ("left", "right", "up", "down")] * 2
    data = {"latents": torch.randn(8, 16, 7, 16, 16).half(), "captions": caps,
            "prefix": torch.tensor([1, 1, 1, 1, 1, 3, 2, 1])}
    embeds = {c: torch.randn(6, 32) for c in caps + [""]}
    x0, clean, text, scored = causal_batch(data, embeds, torch.Generator().manual_seed(3), 16)
    firsts = clean.sum(1)
    assert set(firsts.tolist()) == {1, 4}
    for row, first in zip(range(16), firsts.tolist()):
        assert clean[row].tolist() == [f < first for f in range(7)]
        assert scored[row].tolist() == [first <= f < first + 3 for f in range(7)]
    model = new_teacher(0)
    torch.nn.init.normal_(model.head.head.weight, std=0.1)  # (a new teacher's head is zero: its loss ignores x)

    def loss(x):
        return flow_loss(model, x, clean, text, torch.Generator().manual_seed(4), scored).item()

    later, past = x0.clone(), x0.clone()
    early = firsts == 1
    later[early, :, 4:] += 1.0  # frames after the scored chunk of clips scored on the first chunk
    past[:, :, 0] += 1.0  # the start frame every clip sees
    assert early.any() and loss(later) == pytest.approx(loss(x0), rel=1e-5)
    assert abs(loss(past) - loss(x0)) > 1e-3


def test_bundled_start_image_is_a_world_frame():
    image = np.asarray(Image.open(BUNDLED_IMAGE).convert("RGB"))
    assert np.array_equal(image, start_frame("red", "circle"))
    assert cli.DEFAULT_PROMPT == caption("red", "circle", "right")


def test_release_folder_loads_through_the_real_loaders_and_matches_build_md():
    m = load_models(TINY_WORLD, teacher=True)
    assert m.experts.high is not None and m.experts.boundary == 875.0 and m.experts.share_cross_cache
    assert m.experts.config.in_dim == 16 and m.experts.config.text_dim == m.encoder.dim
    assert m.teacher.config == m.experts.config
    emb = m.encoder.encode(all_captions())
    flat = torch.stack([e[:6].flatten() for e in emb])
    assert torch.cdist(flat, flat).add(torch.eye(32) * 1e9).min() > 1.0  # every caption its own embedding
    table = (TINY_WORLD / "BUILD.md").read_text()
    assert "python -m causalwan.tinyworld.build" in table
    rows = re.findall(r"\| (\S+) \| (\d+) \| `([0-9a-f]{64})` \|", table)
    files = sorted(p.relative_to(TINY_WORLD).as_posix() for p in TINY_WORLD.rglob("*") if p.is_file())
    assert sorted(r[0] for r in rows) == [f for f in files if f != "BUILD.md"]
    for name, size, digest in rows:
        data = (TINY_WORLD / name).read_bytes()
        assert len(data) == int(size) and hashlib.sha256(data).hexdigest() == digest
    assert sum(int(r[1]) for r in rows) < 16e6  # a few MB


# --------------------------------------------------------------------------------------------- the main job
def test_default_run_shows_the_start_image_in_frame_0(tmp_path, capsys):
    frames = run_cli(tmp_path, "default", "--chunks", "1")
    text = capsys.readouterr().out
    assert "bundled tiny world" in text and "RANDOM" not in text
    assert frames.shape == (13, 128, 128, 3)
    start = np.asarray(Image.open(BUNDLED_IMAGE).convert("RGB"))
    assert psnr(frames[0], start) >= 25.0
    _, areas = track(frames)
    assert areas.min() > 100  # a red shape in every frame


# --------------------------------------------------------------------------------------------- does what it is told
# Every video below comes out of the README's main job (the CLI, MP4 on disk) and is judged by the colour tracker.
DIRECTION_CHUNKS = 2  # 25 frames: about 24 px of travel at the world's 1 px per frame


def direction_rows(tmp_path) -> list[tuple]:
    """(colour, asked direction, seed, tracked direction) over 4 colours x 4 directions x 2 seeds: the evaluation's
    own loop (tinyworld/evaluate.direction_accuracy), each video made by the CLI from a PNG start image."""
    def cli_video(prompt: str, image: np.ndarray, seed: int) -> np.ndarray:
        path = tmp_path / "start.png"
        Image.fromarray(image).save(path)
        return run_cli(tmp_path, "dir", "--image", str(path), "--prompt", prompt, "--seed", str(seed),
                       "--chunks", str(DIRECTION_CHUNKS))

    return direction_accuracy(cli_video)[1]


@pytest.fixture(scope="module")
def student_rows(tmp_path_factory):
    return direction_rows(tmp_path_factory.mktemp("direction"))


def test_the_shape_moves_the_way_the_caption_says(student_rows):
    """The issue's bar: the tracked shape moves the named way in at least 90% of the videos (chance is about 25%).
    The shipped student: 31 of 32 (the miss barely moves)."""
    hits = [r for r in student_rows if r[1] == r[3]]
    assert len(student_rows) == 32
    assert len(hits) / len(student_rows) >= 0.9, [r for r in student_rows if r[1] != r[3]]


def test_teacher_and_student_follow_the_direction_words(student_rows):
    """The bidirectional teacher (40 Euler steps over a whole clip, the guidance DMD distilled) and the causal
    student (8 steps through the Stream, as the CLI ran it), on the same 32 start frames and captions. Shipped:
    teacher 29 of 32, student 31 of 32: the student within the issue's 10 points of the teacher."""
    from causalwan.tinyworld.evaluate import teacher_video
    from causalwan.tinyworld.student import GUIDANCE

    m = load_models(TINY_WORLD, teacher=True)
    teacher, _ = direction_accuracy(lambda p, img, seed: teacher_video(
        m, p, img, seed, latent_frames=1 + 3 * DIRECTION_CHUNKS, steps=40, guidance=GUIDANCE))
    student = sum(r[1] == r[3] for r in student_rows) / len(student_rows)
    assert teacher >= 0.85 and student >= 0.9 and teacher - student <= 0.10, (student, teacher)


def test_a_prompt_switch_turns_the_shape_within_one_chunk(tmp_path):
    """Right for chunks 0-2, then "left" from chunk 3: by the end of chunk 3 the shape is going left."""
    frames = run_cli(tmp_path, "switch", "--prompt", "a red circle moves right", "--switch", "3",
                     "a red circle moves left", "--chunks", "6", "--seed", "1")
    x = track(frames)[0][:, 0]
    end = [12 * k for k in range(1, 7)]  # last frame of chunk k-1 (frame 0 is the start image)
    assert x[end[2]] - x[0] > 6  # chunks 0-2 went right
    assert x[end[4]] - x[end[2]] < -3  # and chunks 3 and 4 went left, reversed within one chunk
    assert x[end[5]] < x[end[4]]


def test_twenty_chunks_in_a_window_keep_one_coherent_shape(tmp_path):
    """Window 12, 3 sinks, 20 chunks (241 frames): the shape keeps its size (area within 0.4x-2.5x of frame 0's)
    in at least 90% of the frames."""
    frames = run_cli(tmp_path, "long", "--chunks", "20", "--window", "12", "--sink", "3")
    assert frames.shape[0] == 1 + 12 * 20
    areas = track(frames)[1]
    ratio = areas / areas[0]
    assert ((ratio >= 0.4) & (ratio <= 2.5)).mean() >= 0.9, ratio.round(2).tolist()
