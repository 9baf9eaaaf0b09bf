"""python -m causalwan.train --config FILE end to end on tiny files: teacher release folder, umT5 file, prompts
file, start images through the VAE (image-to-video), causal init then DMD; the result loads with the pack's loader."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from causalwan.causal.weights.loader import load_experts
from node_models import FOLDER, TEXT_DIM
from weight_writers import write_tiny_umt5

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

WORDS = "a red fox runs through fresh snow in a quiet forest at dawn".split()


def test_train_command_from_a_config_file(models_root, tmp_path):
    (tmp_path / "images").mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "images" / "start.png")
    (tmp_path / "prompts.txt").write_text("a red fox runs\na quiet forest at dawn\n")
    config = {
        "teacher": str(models_root / "diffusion_models" / FOLDER),
        "text_encoder": str(write_tiny_umt5(tmp_path / "umt5.safetensors", WORDS, TEXT_DIM)),
        "vae": str(models_root / "vae" / "tiny_vae.safetensors"),
        "prompts_file": str(tmp_path / "prompts.txt"), "start_images": str(tmp_path / "images"),
        "output": str(tmp_path / "student"), "steps": 2, "gen_update_every": 1, "init_steps": 1,
        "teacher_steps": 4, "latent_frames": 4, "latent_height": 4, "latent_width": 4, "lr_generator": 1e-3,
    }
    cfg_file = tmp_path / "train.json"
    cfg_file.write_text(json.dumps(config))
    r = subprocess.run([sys.executable, "-m", "causalwan.train", "--config", str(cfg_file)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training peak per GPU" in r.stdout  # the planner's estimate comes first
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["init_step"] for x in lines if "init_step" in x] == [0]
    assert [x["step"] for x in lines if "step" in x] == [0, 1]
    assert all(np.isfinite(x["dmd_loss"]) for x in lines if "dmd_loss" in x)
    pair = load_experts(folder=tmp_path / "student", dtype=torch.float32)
    teacher = load_experts(folder=config["teacher"], dtype=torch.float32)
    assert pair.boundary == teacher.boundary and pair.high.config == teacher.high.config
    moved = [(a - b).abs().max() for a, b in zip(pair.low.parameters(), teacher.low.parameters())]
    assert max(moved) > 0  # trained away from the teacher it started from
    assert (tmp_path / "student.ckpt" / "latest").read_text() == "step-000002"


def test_the_models_are_built_on_the_training_device(monkeypatch, models_root, tmp_path):
    """train.build loads the teacher (and student) straight onto the accelerator's device in fp32, instead of
    loading on the CPU and moving them afterwards."""
    from causalwan import train
    from causalwan.causal.weights import loader

    asked = []
    real = loader.load_experts
    monkeypatch.setattr(loader, "load_experts", lambda **kw: asked.append(kw) or real(**kw))
    teacher = models_root / "diffusion_models" / FOLDER
    (tmp_path / "prompts.txt").write_text("a red fox runs\n")
    cfg = train.TrainConfig(teacher=str(teacher), student=str(teacher), output=str(tmp_path / "student"),
                            text_encoder=str(write_tiny_umt5(tmp_path / "umt5.safetensors", WORDS, TEXT_DIM)),
                            prompts_file=str(tmp_path / "prompts.txt"), latent_frames=4, latent_height=4,
                            latent_width=4)
    trainer = train.build(cfg)
    assert [(kw["dtype"], kw["device"]) for kw in asked] == [(torch.float32, trainer.acc.device)] * 2
    assert {p.device for p in trainer.teacher.low.parameters()} == {trainer.acc.device}
