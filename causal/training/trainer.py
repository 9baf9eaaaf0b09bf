"""DMD (Self-Forcing) trainer for causal Wan generators, dense or expert pairs (CausalWan2.2-A14B style).

Programmatic use (modules you already have; pure PyTorch + accelerate, nothing of ComfyUI):

    from causalwan.causal.training.config import TrainConfig
    from causalwan.causal.training.conditioning import PromptSet
    from causalwan.causal.training.trainer import DMDTrainer

    cfg = TrainConfig(steps=500, latent_frames=7, latent_height=8, latent_width=8, output="out/student.safetensors")
    prompts = PromptSet([emb1, emb2], negative_emb)          # text embeddings [tokens, text_dim] each
    trainer = DMDTrainer(cfg, generator=student_pair, teacher=teacher_pair, prompts=prompts)
    trainer.train(callback=lambda info: print(info), stop=lambda: False)   # info: step, losses, exit step, t
    trainer.export()                                          # the generator (EMA once it started) -> cfg.output

  generator, teacher (and optionally critic) are causal/sampling/experts.ExpertPair objects: a dense model is
  ExpertPair(low=model); a pair ExpertPair(low=..., high=..., boundary=875). The critic defaults to a trainable
  copy of the teacher. The generator is trained with the cross-attention path the pack's loader gives the
  exported model (weights/loader.default_share_cross_cache: a pair shares the high expert's cross cache),
  whatever its share_cross_cache said, so the trained model samples as it was trained. `train(callback, stop)`
  calls callback(info) after every step and returns when stop() is true (checked before each step), after
  writing a checkpoint, so the last checkpoint is always complete. trainer.step_once() runs one iteration;
  trainer.causal_init(steps) runs the optional ODE regression stage (each chunk at its own random plan step).
  trainer.memory_plan() is the planner's per-GPU estimate. fresh_pair(loaded_pair, device) makes trainable fp32
  copies of models from the pack's loader (the ComfyUI node CausalWan Train (DMD), nodes/train_dmd.py, does that).

From a config file (JSON, TOML or YAML; keys are the TrainConfig fields):

    python -m causalwan.train --config train.json                     # one process
    accelerate launch --num_processes 2 -m causalwan.train --config train.json   # several processes / GPUs

One iteration (step s):
- generator turn (s % gen_update_every == 0): a rollout of the generator through the inference Stream exiting
  every chunk at one random plan step, with grad there; DMD loss on the generated frames (an image-to-video start
  frame is conditioning, never scored): real score = frozen teacher with guidance, fake score = critic, gradient
  (fake - real) / mean|x0 - real|; AdamW betas (0, 0.999), grad clipping; EMA (copies the weights before
  iteration ema_start, averages from it: iterations counted, critic-only ones included, as Self-Forcing does);
- always: a fresh rollout without grad (after the generator's update, its own draws) and a flow-matching update
  of the critic on its generated frames.
Timesteps: a nominal t uniform over [0, 1000), shifted, clamped to [min_t, max_t] (draws.timestep). For a pair,
a rollout whose exit step is a high-noise step was made by the high expert alone and draws t from the high-noise
region [boundary, max_t]; one that went through both experts draws from the full range. All draws are keyed by
(seed, step, what, sample), see draws.py, so resuming and multi-process runs repeat a single-process run.
Processes: the optimizers go through Accelerator.prepare, the backward through accelerator.backward, gradients
are averaged with accelerate's reduce and clipped with accelerator.clip_grad_norm_ (the models are not wrapped in
DDP: a rollout calls a model once per chunk before the single backward); `fsdp` shards with PyTorch's FSDP2
(sharding.py; accelerate's FSDP plugin only engages on GPUs and prepares one model with its optimizer, while the
teacher has none). Only the main process reads checkpoints and decides; the others receive its state.

Not done (by choice or not yet), so a reader does not assume it:
- no `last_step_only` option (Self-Forcing's variant that always exits at the last step);
- when latent_frames > 21, the DMD loss and the critic score the whole generated video (Self-Forcing's
  long-video recipe scores only the last 21 frames): nothing limits the gradient to a trailing window;
- the DMD and critic timesteps and the exit step are shared by every sample of an iteration (one draw per
  iteration, so all processes run the same experts, which FSDP needs), not drawn per sample.
- rollout structure of a pair: the Stream follows the facts sheet (each expert its own KV cache, the clean context
  re-run at t = 0 through both experts); FastVideo's current self-forcing pipeline, as read in review, keeps one
  KV cache for both experts and re-runs the context with transformer_2 only. Training and the pack's sampler use the same Stream,
  so a trained pair samples as trained; a pair trained elsewhere with the other structure may not.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..sampling.experts import ExpertPair
from ..weights.loader import default_share_cross_cache
from . import checkpoints, draws, sharding
from .activation_checkpointing import checkpoint_blocks
from .conditioning import PromptSet
from .config import TrainConfig
from .dmd_loss import dmd_loss, flow_matching_loss
from .ema import EMA
from .export import check_free, save_generator
from . import causal_init
from .rollout import plan_of, rollout
from .scores import expert_for, noised, real_x0, velocity, x0_of


def check_compatible(teacher: ExpertPair, generator: ExpertPair) -> None:
    """Teacher and generator must speak the same latent and text: one clear error otherwise."""
    t, g = teacher.config, generator.config
    diffs = [f"{name} {getattr(t, name)} vs {getattr(g, name)}" for name in ("out_dim", "text_dim", "patch_size")
             if getattr(t, name) != getattr(g, name)]
    if t.in_dim != t.out_dim:
        diffs.append(f"teacher in_dim {t.in_dim} (it takes extra conditioning channels; use a text-to-video teacher)")
    if g.in_dim != g.out_dim:
        diffs.append(f"generator in_dim {g.in_dim} (extra conditioning channels are not trained here)")
    if diffs:
        raise ValueError("teacher and student do not fit together: " + "; ".join(diffs) +
                         ". Use a teacher and a student of the same model family (same latent channels, text "
                         "encoder and patch size)")


def trainable_copy(pair: ExpertPair) -> ExpertPair:
    return ExpertPair(*(copy.deepcopy(m) for m in (pair.low, pair.high)), boundary=pair.boundary, shift=pair.shift)


def fresh_pair(pair: ExpertPair, device, dtype=torch.float32) -> ExpertPair:
    """New plain modules holding `pair`'s weights at `dtype` on `device` (no offload hooks or LoRA side deltas
    of a loaded model); fp8-stored weights are refused (they cannot be trained)."""
    from ..model.fp8 import FP8Linear, is_fp8
    from ..model.transformer import CausalWanModel

    def copy_of(m):
        sd = m.state_dict()
        if any(isinstance(x, FP8Linear) for x in m.modules()) or any(is_fp8(v.dtype) for v in sd.values()):
            raise ValueError("this model holds fp8 weights, which cannot be trained; load it with weight_dtype "
                             "bf16 (or auto from a bf16 / fp32 file)")
        with torch.device(device):
            new = CausalWanModel(m.config).to(dtype)
        new.load_state_dict({k: v.to(device, dtype) for k, v in sd.items()})
        return new

    return ExpertPair(copy_of(pair.low), None if pair.high is None else copy_of(pair.high), boundary=pair.boundary,
                      shift=pair.shift, share_cross_cache=pair.share_cross_cache,
                      defaults=getattr(pair, "defaults", None))


@dataclass
class Generated:
    """A rollout's generated frames [B, C, F, h, w] (start frame left out) and what it was conditioned on."""
    video: torch.Tensor
    seeds: list[int]
    ctx: torch.Tensor
    neg: torch.Tensor
    boundary: float | None  # the pair's boundary when only the high expert made it (its t region), else None
    info: dict


def make_accelerator():
    """accelerate's Accelerator: the processes torchrun / accelerate launch started (gloo on CPU-only machines,
    NCCL on GPUs), this process's device. Mixed precision is the trainer's own autocast (DMDTrainer.autocast):
    accelerate keeps one process-wide state, and a second run in the same process (the ComfyUI node) may ask
    for another precision."""
    from accelerate import Accelerator
    return Accelerator(cpu=not torch.cuda.is_available())


class DMDTrainer:
    def __init__(self, config: TrainConfig, generator: ExpertPair, teacher: ExpertPair, prompts: PromptSet,
                 critic: ExpertPair | None = None, accelerator=None):
        check_compatible(teacher, generator)
        if prompts.text_dim != generator.config.text_dim:
            raise ValueError(f"the prompt embeddings have text_dim {prompts.text_dim}, the models take "
                             f"{generator.config.text_dim}; encode the prompts with the models' text encoder")
        self.acc = accelerator or make_accelerator()
        if config.output:  # refused before anything is trained or written; the main process's disk decides
            check_free(config.output, checkpoints.from_main(self.acc, self.acc.is_main_process and
                                                            Path(config.output).exists()))
        if config.batch_size % self.acc.num_processes:
            raise ValueError(f"batch_size {config.batch_size} does not split over {self.acc.num_processes} "
                             "processes; use a multiple of the process count")
        if config.fsdp and self.acc.num_processes < 2:
            raise ValueError("fsdp shards the models over several processes; start it with accelerate launch "
                             "(or torchrun) and --num_processes 2 or more, or set fsdp to false")
        self.config, self.generator, self.teacher, self.prompts = config, generator, teacher, prompts
        # train through the text path the loader samples the exported model with (a pair: one shared cross cache)
        generator.share_cross_cache = default_share_cross_cache(generator.high is not None)
        self.critic = critic if critic is not None else trainable_copy(teacher)
        for m in teacher.modules().values():
            m.requires_grad_(False).eval()
        for pair in (generator, self.critic):
            for m in pair.modules().values():
                m.requires_grad_(True).train()
                if config.activation_checkpointing:
                    checkpoint_blocks(m)
        if config.fsdp:  # before the optimizers: sharding replaces the parameters
            for pair in (generator, self.critic, teacher):
                for m in pair.modules().values():
                    sharding.shard(m)
        adamw = dict(betas=tuple(config.betas), weight_decay=config.weight_decay)
        # accelerate's optimizer wrappers (device placement of their state, loss scaling when it is used)
        self.gen_opt, self.critic_opt = self.acc.prepare(
            torch.optim.AdamW(generator.parameters(), lr=config.lr_generator, **adamw),
            torch.optim.AdamW(self.critic.parameters(), lr=config.lr_critic, **adamw))
        self.ema = EMA(generator.modules(), config.ema_decay)
        self.plan = plan_of(generator, config.denoise_steps, config.shift)
        self.n_steps = len(self.plan)
        self.step = 0  # iterations done
        self.gen_updates = 0
        self.init_steps_done = 0
        self.history: list[dict] = []
        self.checkpoint_dir = None
        self.saved_step: int | None = None  # step of the last checkpoint written or resumed
        if config.checkpoint_dir or config.output:
            self.checkpoint_dir = Path(config.checkpoint_dir or (str(config.output) + ".ckpt"))
            if config.resume:
                checkpoints.resume(self)

    # ----------------------------------------------------------------- one iteration
    def autocast(self):
        """bf16 autocast of the forward passes when mixed_precision is "bf16" (weights stay at their dtype)."""
        device = self.generator.low.device
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.config.mixed_precision == "bf16")

    def rows(self) -> list[int]:
        """Global indices of this process's samples."""
        per = self.config.batch_size // self.acc.num_processes
        return list(range(self.acc.process_index * per, (self.acc.process_index + 1) * per))

    def conditioning(self, *key):
        """(seeds, contexts, negatives, start latents) of this process's samples for the draw `key`."""
        rows = self.rows()
        seeds = [draws.key(self.config.seed, *key, "sample", i) for i in rows]
        picks = [draws.key(self.config.seed, *key, "prompt", i) for i in rows]
        starts = [draws.key(self.config.seed, *key, "start", i) for i in rows]  # its own draw: any image, any prompt
        return (seeds, *self.prompts.batch(picks, self.generator.config.text_len, self.generator.low.device, starts))

    def update(self, loss: torch.Tensor, opt, pair: ExpertPair) -> tuple[float, list[str]]:
        """accelerator.backward, gradients averaged over processes, accelerator.clip_grad_norm_, optimizer step;
        returns the gradient norm and the experts that received gradient. Sharded models (FSDP) average their
        gradients in the backward pass; otherwise accelerate's reduce averages them (a model is not wrapped in
        DistributedDataParallel: a rollout calls it once per chunk before the one backward, which DDP does not
        allow, and only the exit step's expert receives gradient, which every process agrees on)."""
        opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        experts = [n for n, m in pair.modules().items() if any(p.grad is not None for p in m.parameters())]
        live = [p for p in pair.parameters() if p.grad is not None]
        if self.acc.num_processes > 1 and not self.config.fsdp and live:
            for p, g in zip(live, self.acc.reduce([p.grad for p in live], reduction="mean")):
                p.grad = g
        norm = sharding.full(self.acc.clip_grad_norm_(live, self.config.grad_clip)) if live else 0.0
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(norm), experts

    def generate(self, *key, grad: bool) -> Generated:
        """A rollout of this process's samples for the draw `key` (exit step, seeds, prompts, start images)."""
        c = self.config
        seeds, ctx, neg, start = self.conditioning(*key)
        exit_step = draws.exit_step(self.n_steps, c.seed, *key)
        with self.autocast():
            ro = rollout(self.generator, ctx, seeds, c.latent_frames, (c.latent_height, c.latent_width), exit_step,
                         chunk_frames=c.chunk_frames, steps=c.denoise_steps, shift=c.shift, start_latent=start,
                         grad=grad, text_cache=not c.fsdp,
                         cache_dtype=torch.bfloat16 if c.mixed_precision == "bf16" else None)
        n_start = 0 if start is None else start.shape[2]
        boundary = self.generator.boundary if ro.expert == "high" else None  # high-only rollout: high region
        info = {"exit_step": exit_step, "expert": ro.expert, "high_only": ro.expert == "high",
                "t_range": (c.min_t if boundary is None else max(c.min_t, boundary), c.max_t),
                "grad_calls": ro.grad_calls}
        return Generated(ro.video[:, :, n_start:], seeds, ctx, neg, boundary, info)

    def step_once(self) -> dict:
        """One iteration: on generator turns (every gen_update_every-th step) a rollout with grad at its exit step
        and a generator update; then, always, a fresh rollout without grad (after the generator's update) and a
        critic update on it. Only generated frames are scored: an image-to-video start frame is conditioning."""
        c, s = self.config, self.step
        info = {"step": s}
        if s % c.gen_update_every == 0:
            g = self.generate(s, grad=True)
            info.update(g.info)
            video = g.video
            t = draws.timestep(draws.uniform(c.seed, s, "t_gen"), c.timestep_shift, c.min_t, c.max_t, g.boundary)
            x_t = noised(video.detach(), draws.noise_like(video.shape, g.seeds, "dmd").to(video.device), t)
            with self.autocast():
                real = real_x0(self.teacher, x_t, t, g.ctx, g.neg, c.guidance)
                with torch.no_grad():
                    fake = x0_of(x_t, velocity(self.critic, x_t, t, g.ctx), t)
            loss = dmd_loss(video, real, fake)
            info["gen_grad_norm"], info["gen_grad_experts"] = self.update(loss, self.gen_opt, self.generator)
            self.gen_updates += 1
            self.ema.update(self.generator.modules(), copy=s < c.ema_start)  # iterations, as Self-Forcing counts
            info.update(dmd_loss=float(self.acc.reduce(loss.detach(), "mean")), t_gen=t,
                        teacher_expert=expert_for(self.teacher, t))
            del video, g, x_t, real, fake, loss
        r = self.generate(s, "critic", grad=False)
        info.update({"critic_" + k: v for k, v in r.info.items() if k != "grad_calls"})
        x0 = r.video.detach()
        t_c = draws.timestep(draws.uniform(c.seed, s, "t_critic"), c.timestep_shift, c.min_t, c.max_t, r.boundary)
        noise = draws.noise_like(x0.shape, r.seeds, "critic").to(x0.device)
        with self.autocast():
            closs = flow_matching_loss(velocity(self.critic, noised(x0, noise, t_c), t_c, r.ctx), x0, noise)
        info["critic_grad_norm"], _ = self.update(closs, self.critic_opt, self.critic)
        info.update(critic_loss=float(self.acc.reduce(closs.detach(), "mean")), t_critic=t_c,
                    critic_expert=expert_for(self.critic, t_c))
        self.step += 1
        self.history.append({k: info[k] for k in ("step", "critic_loss", "dmd_loss") if k in info})
        return info

    # ----------------------------------------------------------------- the loop
    def causal_init(self, steps: int, callback=None, stop=None) -> list[float]:
        """The optional stage before DMD: regress the generator onto teacher ODE trajectories (causal_init.py)."""
        return causal_init.run(self, steps, callback, stop)

    def train(self, steps: int | None = None, callback=None, stop=None) -> list[dict]:
        """Run until `steps` iterations are done (default: config.steps) or stop() is true; checkpoints every
        checkpoint_every steps and when it returns. callback(info) is called after every step."""
        target = self.config.steps if steps is None else steps
        while self.step < target:
            if stop is not None and stop():
                break
            info = self.step_once()
            if callback is not None:
                callback(info)
            if self.checkpoint_dir is not None and self.step % self.config.checkpoint_every == 0:
                self.save_checkpoint()
        if self.checkpoint_dir is not None and self.saved_step != self.step:
            self.save_checkpoint()
        return self.history

    def save_checkpoint(self) -> Path | None:
        return checkpoints.save_trainer(self)

    def memory_plan(self):
        """The planner's per-GPU estimate for this run (causal/memory/train_memory.py)."""
        from ..memory.train_memory import plan_training
        c, gen = self.config, self.generator
        compute = torch.bfloat16 if c.mixed_precision == "bf16" else gen.low.dtype
        return plan_training(gen.config, c.latent_height * 8, c.latent_width * 8, frames=c.latent_frames,
                             chunk_frames=c.chunk_frames, experts=len(gen.names), teacher=self.teacher.config,
                             gpus=self.acc.num_processes, fsdp=c.fsdp, batch=c.batch_size // self.acc.num_processes,
                             param_dtype=gen.low.dtype, compute=compute,
                             activation_checkpointing=c.activation_checkpointing,
                             first_alone=gen.high is not None and not self.prompts.starts)

    # ----------------------------------------------------------------- output
    def generator_weights(self) -> dict[str, dict]:
        """Per expert, the whole weights to ship: the EMA once it has started, else the current weights.
        Sharded models are gathered, so every process must call this."""
        use_ema = self.step > self.config.ema_start
        out = {}
        for n, m in self.generator.modules().items():
            sd = {k: v.detach() for k, v in sharding.full_state(m).items()}
            if use_ema:
                sd.update(self.ema.weights(n))
            out[n] = sd
        return out

    def export(self, path=None, dtype=torch.bfloat16) -> Path | None:
        """Save the trained generator where config.output says (never over an existing file). Every process
        calls it (gathering); the main process writes and returns the path."""
        path = Path(path or self.config.output)
        if not str(path):
            raise ValueError("no output path: set `output` in the config")
        weights = self.generator_weights()
        if not self.acc.is_main_process:
            return None
        check_free(path)
        return save_generator(path, self.generator.config, weights, self.generator.boundary,
                              self.generator.shift, dtype)
