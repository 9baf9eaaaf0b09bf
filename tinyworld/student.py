"""Stage 4: the causal expert pair, distilled from the teacher with the pack's own trainer (causal/training).

Both experts start as copies of the teacher, are regressed onto the teacher's ODE trajectories under the block-
causal mask (causal initialisation), and are then trained by DMD through the inference Stream, with the A14B
release's boundary (875) and 8-step schedule. Each rollout starts from a world frame (image-to-video) and its
caption names the shape in that frame.
"""
from __future__ import annotations

import copy


from ..causal.sampling.experts import ExpertPair
from .release import BOUNDARY
from .train_teacher import SHIFT

STARTS = 64  # (caption, start frame) pairs the rollouts draw from
GUIDANCE = 2.0  # classifier-free guidance of the teacher's scores (causal init's ODE and DMD's real score)


def prompt_set(data: dict, embeds: dict):
    """Rollout conditioning: captions of clips that do not turn, with their own first latent frame."""
    from ..causal.training.conditioning import PromptSet

    plain = [i for i in range(len(data["captions"])) if int(data["prefix"][i]) == 1][:STARTS]
    contexts = [embeds[data["captions"][i]] for i in plain]
    starts = [data["latents"][i:i + 1, :, :1].float() for i in plain]
    return PromptSet(contexts, embeds[""], starts)


def train_student(teacher_model, data: dict, embeds: dict, ckpt_dir, log, seed: int, init_steps: int,
                  dmd_steps: int, after_init=None) -> ExpertPair:
    """The trained pair (EMA weights); after_init({expert: state dict}) sees the causal-init result first."""
    from ..causal.training.config import TrainConfig
    from ..causal.training.trainer import DMDTrainer

    teacher = ExpertPair(low=teacher_model, shift=SHIFT)
    student = ExpertPair(low=copy.deepcopy(teacher_model), high=copy.deepcopy(teacher_model), boundary=BOUNDARY,
                         shift=SHIFT)
    cfg = TrainConfig(steps=max(dmd_steps, 1),  # (the config wants a step; none is run when dmd_steps is 0)
                      batch_size=2, latent_frames=7, latent_height=16, latent_width=16,
                      chunk_frames=3, shift=SHIFT, timestep_shift=SHIFT, seed=seed, guidance=GUIDANCE,
                      lr_generator=1e-4, lr_critic=2e-4, gen_update_every=5, ema_decay=0.95, ema_start=20,
                      init_steps=init_steps, init_lr=1e-4, teacher_steps=16, checkpoint_dir=str(ckpt_dir),
                      checkpoint_every=20)
    trainer = DMDTrainer(cfg, student, teacher, prompt_set(data, embeds))

    def show(info):
        i = info.get("init_step", info.get("step"))
        if i % 10 == 0:
            log("student " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in info.items() if not isinstance(v, (tuple, list))))

    if trainer.init_steps_done < init_steps:
        trainer.causal_init(init_steps, callback=show)
        trainer.save_checkpoint()
        if after_init is not None:
            after_init(trainer.generator_weights())
    if dmd_steps:
        trainer.train(callback=show)
    weights = trainer.generator_weights()
    for name, model in student.modules().items():
        model.load_state_dict(weights[name])
        model.eval().requires_grad_(False)
    return student
