"""CausalWan Train (DMD) on tiny model files: trains, saves into diffusion_models, outputs a model the sampler
runs; progress with a loss-curve preview; Cancel stops after a complete checkpoint and a re-queue resumes; an
existing save name is refused before anything runs."""
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from causalwan.causal.sampling.stream import Stream, StreamOptions
from causalwan.causal.training import checkpoints
from causalwan.causal.weights.loader import load_experts
from causalwan.nodes import comfy_adapter as adapter
from causalwan.nodes.comfy_adapter import Interrupted
from causalwan.nodes.model_loader import CausalWanModelLoader
from causalwan.nodes.train_dmd import CausalWanTrainDMD
from causalwan.nodes.values import LoadedModel
from node_models import conditioning, expert_state

SMALL = dict(steps=3, lr_generator=1e-3, lr_critic=1e-3, guidance=3.0, critic_steps_per_update=1, width=32,
             height=32, latent_frames=4, seed=0, activation_checkpointing=False)


@pytest.fixture
def pair(models, tmp_path, monkeypatch):
    """The tiny pair; trained models are saved into this test's own first diffusion_models folder."""
    monkeypatch.setenv("CAUSALWAN_OUTPUT_DIR", str(tmp_path / "output"))
    (tmp_path / "dm").mkdir()
    adapter.set_model_folders({**{k: [str(models / k)] for k in adapter.FOLDER_KINDS},
                               "diffusion_models": [str(tmp_path / "dm"), str(models / "diffusion_models")]})
    model, _ = CausalWanModelLoader().load("tiny_high.safetensors", "tiny_low.safetensors", "none", "auto", -1.0,
                                           "resident")
    return model


def prompts():
    c = conditioning(1) + conditioning(2)  # two entries: two prompts
    return c


def test_trains_saves_and_outputs_a_model_the_sampler_runs(pair, tmp_path):
    seen = []
    adapter.add_progress_listener(lambda v, t, img, node: seen.append((v, t, img)))
    before = {k: v.clone() for k, v in pair.experts.low.state_dict().items()}
    out, text = CausalWanTrainDMD().train(pair, pair, "tiny-trained", conditioning=prompts(), **SMALL)
    assert [(v, t) for v, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all(isinstance(img, Image.Image) and img.size == (384, 192) for _, _, img in seen)
    saved = tmp_path / "dm" / "tiny-trained"
    assert (saved / "model_index.json").is_file() and f"saved {saved}" in text and "training peak per GPU" in text
    assert all(torch.equal(v, pair.experts.low.state_dict()[k]) for k, v in before.items())  # input untouched
    assert isinstance(out, LoadedModel) and out.is_pair
    reloaded = load_experts(folder=saved, dtype=torch.float32)
    for n, m in out.experts.modules().items():
        assert all(torch.equal(v.to(torch.bfloat16).float(), reloaded.modules()[n].state_dict()[k].float())
                   for k, v in m.state_dict().items())
    s = Stream(out.experts, seed=0, options=StreamOptions(), latent_hw=(4, 4))
    s.set_prompt(prompts()[0][0][:, :7])
    assert torch.isfinite(s.next_chunk()).all()
    with pytest.raises(FileExistsError, match="already exists; choose another save name"):
        CausalWanTrainDMD().train(pair, pair, "tiny-trained", conditioning=prompts(), **SMALL)


def test_cancel_keeps_the_last_checkpoint_and_a_requeue_resumes(pair, tmp_path):
    adapter.add_progress_listener(lambda v, t, img, node: adapter.request_interrupt() if v == 2 else None)
    with pytest.raises(Interrupted):
        CausalWanTrainDMD().train(pair, pair, "tiny-cancelled", conditioning=prompts(), **SMALL)
    ckpt = tmp_path / "output" / "causalwan_training" / "tiny-cancelled"
    assert checkpoints.latest_step(ckpt) == 2
    assert not (tmp_path / "dm" / "tiny-cancelled").exists()  # nothing exported half-way
    adapter.clear_listeners()
    seen = []
    adapter.add_progress_listener(lambda v, t, img, node: seen.append(v))
    out, text = CausalWanTrainDMD().train(pair, pair, "tiny-cancelled", conditioning=prompts(), **SMALL)
    assert seen == [3] and "after 3 steps" in text  # resumed at step 2, ran the last one


def test_bad_inputs_are_refused_before_anything_is_written(pair, models, tmp_path):
    node = CausalWanTrainDMD()
    with pytest.raises(ValueError, match="no prompts"):
        node.train(pair, pair, "x", **SMALL)
    with pytest.raises(ValueError, match="cannot be used: give a plain file name"):
        node.train(pair, pair, "../escape", conditioning=prompts(), **SMALL)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="a prompts file needs a text encoder"):
        node.train(pair, pair, "x", prompts_file=str(empty), **SMALL)
    other = tmp_path / "dm" / "tiny_other_text.safetensors"  # a teacher of another text encoder's width
    save_file(expert_state(5, text_dim=16), str(other))
    teacher, _ = CausalWanModelLoader().load("none", other.name, "none", "auto", -1.0, "resident")
    with pytest.raises(ValueError, match="teacher and student do not fit together: text_dim 16 vs 32"):
        node.train(pair, teacher, "x", conditioning=prompts(), **SMALL)
    assert [p.name for p in (tmp_path / "dm").iterdir()] == [other.name]  # nothing saved
    assert not (tmp_path / "output").exists()  # no checkpoint either


def test_image_to_video_training_from_a_folder_of_start_images(pair, tmp_path):
    from causalwan.nodes.vae_loader import CausalWanVAELoader

    (tmp_path / "starts").mkdir()
    for i in range(2):
        Image.new("RGB", (40, 30), (60 * i, 120, 200)).save(tmp_path / "starts" / f"{i}.png")
    vae = CausalWanVAELoader().load("tiny_vae.safetensors")[0]
    with pytest.raises(ValueError, match="need a VAE"):
        CausalWanTrainDMD().train(pair, pair, "i2v", conditioning=prompts(),
                                  start_images_folder=str(tmp_path / "starts"), **SMALL)
    out, text = CausalWanTrainDMD().train(pair, pair, "i2v", conditioning=prompts(),
                                          start_images_folder=str(tmp_path / "starts"), vae=vae,
                                          **{**SMALL, "steps": 1})
    assert "after 1 steps" in text and (tmp_path / "dm" / "i2v" / "model_index.json").is_file()


def test_a_broken_start_image_is_named_in_the_nodes_words(pair, tmp_path):
    """A start image that cannot be read is named as the node's start image, not as a command-line flag, and
    stops the node before any training."""
    from causalwan.nodes.vae_loader import CausalWanVAELoader

    (tmp_path / "starts").mkdir()
    Image.new("RGB", (40, 30), (60, 120, 200)).save(tmp_path / "starts" / "0.png")
    png = (tmp_path / "starts" / "0.png").read_bytes()
    (tmp_path / "starts" / "1.png").write_bytes(png[: len(png) // 2])
    vae = CausalWanVAELoader().load("tiny_vae.safetensors")[0]
    with pytest.raises(ValueError) as e:
        CausalWanTrainDMD().train(pair, pair, "broken", conditioning=prompts(),
                                  start_images_folder=str(tmp_path / "starts"), vae=vae, **SMALL)
    message = str(e.value)
    assert message.startswith(f"start image '{tmp_path / 'starts' / '1.png'}' could not be read (") and message.endswith("give a complete PNG or JPEG file")
    assert "--image" not in message
    assert not (tmp_path / "dm" / "broken").exists() and not (tmp_path / "output").exists()


def test_the_node_and_the_train_command_encode_a_prompts_file_alike(tmp_path):
    """The node's prompts file and the train command go through one encode_prompt_set: the same contexts and
    negative, fp32 on the CPU."""
    pytest.importorskip("sentencepiece")
    from causalwan import train
    from causalwan.causal.training.config import TrainConfig
    from causalwan.nodes import train_dmd
    from weight_writers import write_tiny_umt5

    (tmp_path / "text_encoders").mkdir()
    umt5 = write_tiny_umt5(tmp_path / "text_encoders" / "umt5.safetensors", "a red fox runs through snow".split(), 16)
    (tmp_path / "p.txt").write_text("a red fox\nruns through snow\n")
    cfg = TrainConfig(prompts_file=str(tmp_path / "p.txt"), text_encoder=str(umt5), negative_prompt="snow")
    from_command = train.prompt_set(cfg)
    adapter.set_model_folders({"text_encoders": [str(tmp_path / "text_encoders")]})
    try:
        from_node = train_dmd.prompt_set(None, None, str(tmp_path / "p.txt"), "umt5.safetensors", "snow", None)
    finally:
        adapter.set_model_folders(None)
    assert len(from_command) == len(from_node) == 2
    for got in (from_command, from_node):
        assert all(c.dtype == torch.float32 and c.device.type == "cpu" for c in [*got.contexts, got.negative])
    assert all(torch.equal(a, b) for a, b in zip(from_command.contexts, from_node.contexts))
    assert torch.equal(from_command.negative, from_node.negative)
