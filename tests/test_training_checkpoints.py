"""Checkpoints: stop + resume equals an uninterrupted run bit for bit; the trained generator loads back through
the pack's own loader."""
import pytest
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.stream import Stream, StreamOptions
from causalwan.causal.training import checkpoints
from causalwan.causal.training.conditioning import PromptSet
from causalwan.causal.training.rollout import rollout
from causalwan.causal.training.config import TrainConfig
from causalwan.causal.training.trainer import DMDTrainer
from causalwan.causal.weights.loader import load_experts, load_transformer
from tiny_models import tiny_model


def make(tmp, name, steps=4, dense=False, **kw):
    gen = ExpertPair(low=tiny_model(1)) if dense else ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0)
    teacher = ExpertPair(low=tiny_model(3)) if dense else ExpertPair(low=tiny_model(3), high=tiny_model(4),
                                                                        boundary=875.0)
    cfg = TrainConfig(**{**dict(steps=steps, batch_size=2, latent_frames=4, latent_height=4, latent_width=4,
                                gen_update_every=2, checkpoint_every=2, ema_start=1, lr_generator=1e-3,
                                lr_critic=1e-3, output=str(tmp / name)), **kw})
    prompts = PromptSet([torch.randn(5, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)],
                        torch.zeros(2, 32))
    return DMDTrainer(cfg, gen, teacher, prompts)


def state(tr):
    return checkpoints.trainer_weights(tr), tr.gen_opt.state_dict()["state"], tr.critic_opt.state_dict()["state"]


def test_stop_after_k_and_resume_equals_uninterrupted_2k_bit_for_bit(tmp_path):
    whole = make(tmp_path, "whole", steps=6)
    whole.train()
    first = make(tmp_path, "part", steps=6)
    first.train(steps=3)  # stops after 3: a checkpoint at step 3 is written on return
    assert checkpoints.latest(tmp_path / "part.ckpt").name == "step-000003"
    resumed = make(tmp_path, "part", steps=6)  # fresh models: everything comes from the checkpoint
    assert resumed.step == 3
    resumed.train()
    w0, g0, c0 = state(whole)
    w1, g1, c1 = state(resumed)
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    for a, b in ((g0, g1), (c0, c1)):
        assert a.keys() == b.keys()
        for k in a:
            assert all(torch.equal(a[k][n], b[k][n]) for n in a[k] if torch.is_tensor(a[k][n]))
    assert whole.history == resumed.history


def test_stop_flag_leaves_a_complete_checkpoint(tmp_path):
    tr = make(tmp_path, "stopped", steps=10)
    seen = []
    tr.train(callback=seen.append, stop=lambda: len(seen) >= 3)
    assert tr.step == 3
    target = checkpoints.latest(tmp_path / "stopped.ckpt")
    assert target.name == "step-000003" and (target / "weights.safetensors").is_file()
    assert not list((tmp_path / "stopped.ckpt").glob(".*tmp*"))


def test_pair_exports_as_a_diffusers_folder_the_loader_reads(tmp_path):
    tr = make(tmp_path, "pair_out", steps=2)
    tr.train()
    out = tr.export(dtype=torch.float32)
    loaded = load_experts(folder=out, dtype=torch.float32, share_cross_cache=False)
    assert loaded.boundary == pytest.approx(875.0) and loaded.shift == 5.0
    for name, weights in tr.generator_weights().items():
        sd = loaded.modules()[name].state_dict()
        assert sd.keys() == weights.keys() and all(torch.equal(sd[k], weights[k].float()) for k in sd)
    with pytest.raises(FileExistsError, match="already exists"):
        tr.export()


def test_pair_reloaded_with_the_loader_defaults_samples_as_it_was_trained(tmp_path):
    # the trainer's own rollout at the last step (the path it trained) == the Stream of the pair as the loader,
    # the CLI and the nodes reload it (loader defaults: a pair shares one cross-attention cache)
    tr = make(tmp_path, "pair_rt", steps=2, ema_start=100)  # no EMA yet: the exported weights are the live ones
    tr.train()
    out = tr.export(dtype=torch.float32)
    loaded = load_experts(folder=out, dtype=torch.float32)
    assert tr.generator.share_cross_cache == loaded.share_cross_cache
    ctx = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        trained = rollout(tr.generator, ctx, [7, 8], 7, (4, 4), tr.n_steps - 1).video
        s = Stream(loaded, seed=[7, 8], options=StreamOptions(), latent_hw=(4, 4), batch=2)
        s.set_prompt(ctx)
        parts = [s.next_chunk()]
        while s.next_frame < 7:
            parts.append(s.next_chunk())
    sampled = torch.cat(parts, 2)
    assert sampled.shape == trained.shape == (2, 16, 7, 4, 4)
    assert (sampled - trained).abs().max() <= 1e-5


def test_dense_exports_as_one_file_the_loader_reads(tmp_path):
    tr = make(tmp_path, "dense.safetensors", steps=2, dense=True)
    tr.train()
    out = tr.export(dtype=torch.float32)
    assert out.is_file()
    model = load_transformer(out, dtype=torch.float32)
    assert model.config == tr.generator.config
    ref = tr.generator_weights()["low"]
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    a = Stream(ExpertPair(low=model), seed=1, options=StreamOptions(), latent_hw=(4, 4))
    a.set_prompt(torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(a.next_chunk()).all()


@pytest.mark.parametrize("crash_at", range(4))
def test_a_crash_while_a_step_is_saved_again_never_loses_the_checkpoint(tmp_path, monkeypatch, crash_at):
    # the same step written twice (e.g. a resumed run saving where it started); a crash at any rename or removal
    # leaves `latest` naming a complete checkpoint of that step
    folder = tmp_path / "ckpt"
    w = {"a": torch.arange(4.0)}
    checkpoints.save(folder, 5, w, {"o": 1}, {"step": 5})
    calls = {"n": 0}
    real_replace, real_rmtree = checkpoints.os.replace, checkpoints.shutil.rmtree

    def crashing(real):
        def f(*args, **kw):
            calls["n"] += 1
            if calls["n"] == crash_at + 1:
                raise OSError("simulated crash")
            return real(*args, **kw)
        return f

    monkeypatch.setattr(checkpoints.os, "replace", crashing(real_replace))
    monkeypatch.setattr(checkpoints.shutil, "rmtree", crashing(real_rmtree))
    try:
        checkpoints.save(folder, 5, {"a": torch.arange(4.0) + 1}, {"o": 2}, {"step": 5})
    except OSError:
        pass
    monkeypatch.undo()
    target = checkpoints.latest(folder)
    assert target is not None and checkpoints.latest_step(folder) == 5
    weights, optim, state = checkpoints.load(target)
    assert state == {"step": 5} and optim["o"] in (1, 2)
    assert torch.equal(weights["a"], torch.arange(4.0) + (optim["o"] - 1))  # one whole checkpoint, old or new
