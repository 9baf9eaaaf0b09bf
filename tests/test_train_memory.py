"""The training memory estimate: weights, EMA and optimizer bytes exact; the step's peak bounded by the
prediction (measured <= predicted <= 2 x measured on small models); FSDP divides what is held between steps."""
import pytest
import torch

from causalwan.causal.memory.memory_plan import GIB
from causalwan.causal.memory.train_memory import plan_training
from causalwan.causal.model.config import A14B, WAN_1_3B
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.training.conditioning import PromptSet
from causalwan.causal.training.config import TrainConfig
from causalwan.causal.training.trainer import DMDTrainer
from live_tensor_bytes import LiveTensorBytes
from tiny_models import tiny_model

KW = dict(dim=128, ffn_dim=352, num_heads=2, text_dim=32, text_len=16, freq_dim=32, num_layers=2)


def trainer(**kw):
    gen = ExpertPair(low=tiny_model(1, **KW), high=tiny_model(2, **KW), boundary=875.0)
    teacher = ExpertPair(low=tiny_model(3, **KW), high=tiny_model(4, **KW), boundary=875.0)
    cfg = TrainConfig(latent_frames=4, latent_height=8, latent_width=8, gen_update_every=1, guidance=0.0, **kw)
    return DMDTrainer(cfg, gen, teacher, PromptSet([torch.randn(5, 32)], torch.zeros(2, 32)))


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_weights_ema_and_optimizer_bytes_are_exact():
    tr = trainer()
    plan = plan_training(tr.generator.config, 64, 64, frames=4, experts=2)
    held = [p for pair in (tr.generator, tr.critic, tr.teacher) for m in pair.modules().values()
            for p in m.parameters()]
    assert plan.weights == nbytes(held) + nbytes(tr.ema.shadow.values())
    trainable = [p for pair in (tr.generator, tr.critic) for m in pair.modules().values() for p in m.parameters()]
    assert plan.optimizer == 2 * nbytes(trainable)  # AdamW: two float32 moments per weight
    assert plan.gradients == nbytes(tr.generator.low.parameters())


@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("mixed", ["no", "bf16"])
def test_prediction_bounds_the_measured_step_peak(ckpt, mixed):
    tr = trainer(activation_checkpointing=ckpt, mixed_precision=mixed)
    for _ in range(2):  # optimizer states exist: the step allocates only gradients, caches, activations
        tr.step_once()
    with LiveTensorBytes() as live:
        tr.step_once()
    plan = plan_training(tr.generator.config, 64, 64, frames=4, experts=2, activation_checkpointing=ckpt,
                         compute=torch.bfloat16 if mixed == "bf16" else torch.float32)
    predicted = plan.gradients + plan.kv_cache + plan.activations
    assert live.peak <= predicted <= 2 * live.peak


def test_fsdp_divides_the_held_state_and_checkpointing_cuts_activations():
    one = plan_training(A14B, 480, 832, gpus=1)
    many = plan_training(A14B, 480, 832, gpus=32)
    assert many.fsdp and not one.fsdp
    for part in ("weights", "optimizer", "gradients"):
        assert getattr(many, part) == pytest.approx(getattr(one, part) / 32, rel=1e-6)
    assert many.gathered > 0 and one.gathered == 0
    ac = plan_training(A14B, 480, 832, gpus=32, activation_checkpointing=True)
    assert ac.activations < many.activations / 3
    # six 14.29e9-parameter experts at fp32 plus an fp32 EMA of two: about 8 x 14.29e9 x 4 bytes in all
    assert one.weights / GIB == pytest.approx(8 * 14.29e9 * 4 / GIB, rel=0.01)
    small = plan_training(WAN_1_3B, 480, 832, experts=1, teacher=A14B, gpus=32)
    n_small, n_big = 1.42e9, 14.29e9  # a 1.3B student of a 14B teacher: its critic is teacher-sized
    assert small.weights / GIB == pytest.approx((n_small * 8 + 2 * n_big * 4) / 32 / GIB, rel=0.02)
    with pytest.raises(ValueError, match="multiples of 16"):
        plan_training(A14B, 470, 832)
