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
  copy of the teacher. `train(callback, stop)` calls callback(info) after every step and returns when stop()
  is true (checked before each step), after writing a checkpoint, so the last checkpoint is always complete.
  trainer.step_once() runs one iteration; trainer.causal_init(steps) runs the optional ODE regression stage.

From a config file (JSON, TOML or YAML; keys are the TrainConfig fields):

    python -m causalwan.train --config train.json                     # one process
    accelerate launch --num_processes 2 -m causalwan.train --config train.json   # several processes / GPUs

One iteration (step s): a rollout of the generator through the inference Stream exiting at a random step (with
grad when the generator updates this step, i.e. s % gen_update_every == 0), then
- generator (every gen_update_every-th step): DMD loss, real score = frozen teacher with guidance, fake score =
  critic, gradient (fake - real) / mean|x0 - real|; AdamW betas (0, 0.999), grad clipping, EMA;
- critic (every step): flow-matching loss on the generated video.
Timesteps are drawn uniform, shifted and clamped to [min_t, max_t]; for a pair, a rollout whose exit step is a
high-noise step was made by the high expert alone and draws t from the high-noise region [boundary, max_t]; a
rollout that went through both experts draws from the full range. All draws are keyed by (seed, step, sample),
see draws.py, so resuming and multi-process runs repeat a single-process run.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from ..sampling.experts import ExpertPair
from . import checkpoints, draws
from .activation_checkpointing import checkpoint_blocks
from .conditioning import PromptSet
from .config import TrainConfig
from .dmd_loss import dmd_loss, flow_matching_loss
from .ema import EMA
from .export import check_free, save_generator
from . import causal_init as init
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


def _params(pair: ExpertPair) -> list[nn.Parameter]:
    return [p for m in pair.modules().values() for p in m.parameters()]


class DMDTrainer:
    def __init__(self, config: TrainConfig, generator: ExpertPair, teacher: ExpertPair, prompts: PromptSet,
                 critic: ExpertPair | None = None, accelerator=None):
        check_compatible(teacher, generator)
        if prompts.text_dim != generator.config.text_dim:
            raise ValueError(f"the prompt embeddings have text_dim {prompts.text_dim}, the models take "
                             f"{generator.config.text_dim}; encode the prompts with the models' text encoder")
        self.config, self.generator, self.teacher, self.prompts = config, generator, teacher, prompts
        self.critic = critic if critic is not None else trainable_copy(teacher)
        if accelerator is None:
            from accelerate import Accelerator
            accelerator = Accelerator(mixed_precision=config.mixed_precision)
        self.acc = accelerator
        if config.batch_size % self.acc.num_processes:
            raise ValueError(f"batch_size {config.batch_size} does not split over {self.acc.num_processes} "
                             "processes; use a multiple of the process count")
        for m in teacher.modules().values():
            m.requires_grad_(False).eval()
        for pair in (generator, self.critic):
            for m in pair.modules().values():
                m.requires_grad_(True).train()
                if config.activation_checkpointing:
                    checkpoint_blocks(m)
        adamw = dict(betas=tuple(config.betas), weight_decay=config.weight_decay)
        self.gen_opt = torch.optim.AdamW(_params(generator), lr=config.lr_generator, **adamw)
        self.critic_opt = torch.optim.AdamW(_params(self.critic), lr=config.lr_critic, **adamw)
        self.ema = EMA(generator.modules(), config.ema_decay)
        self.plan = plan_of(generator, config.denoise_steps, config.shift)
        self.n_steps = len(self.plan)
        self.step = 0  # iterations done
        self.gen_updates = 0
        self.init_steps_done = 0
        self.history: list[dict] = []
        if config.output:
            check_free(config.output)  # refused before anything is trained or written
        if config.checkpoint_dir or config.output:
            self.checkpoint_dir = Path(config.checkpoint_dir or (str(config.output) + ".ckpt"))
            if config.resume:
                self.resume()
        else:
            self.checkpoint_dir = None

    # ----------------------------------------------------------------- one iteration
    def _rows(self) -> list[int]:
        per = self.config.batch_size // self.acc.num_processes
        return list(range(self.acc.process_index * per, (self.acc.process_index + 1) * per))

    def _reduce_and_clip(self, params: list[nn.Parameter]) -> float:
        """Average gradients over processes (one accelerate reduce), then clip; returns the gradient norm."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return 0.0
        if self.acc.num_processes > 1:
            flat = self.acc.reduce(torch.cat([g.flatten() for g in grads]), reduction="mean")
            i = 0
            for g in grads:
                g.copy_(flat[i:i + g.numel()].view_as(g))
                i += g.numel()
        return float(torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None],
                                                    self.config.grad_clip))

    def step_once(self) -> dict:
        """One iteration: a rollout, a critic update, and a generator update every gen_update_every steps."""
        c, s = self.config, self.step
        rows = self._rows()
        seeds = [draws.key(c.seed, s, "sample", i) for i in rows]
        picks = [draws.key(c.seed, s, "prompt", i) % len(self.prompts) for i in rows]
        device = self.generator.low.device
        ctx, neg, start = self.prompts.batch(picks, self.generator.config.text_len, device)
        exit_step = draws.exit_step(c.seed, s, self.n_steps)
        gen_turn = s % c.gen_update_every == 0
        with self.acc.autocast():
            ro = rollout(self.generator, ctx, seeds, c.latent_frames, (c.latent_height, c.latent_width), exit_step,
                         chunk_frames=c.chunk_frames, steps=c.denoise_steps, shift=c.shift, start_latent=start,
                         grad=gen_turn)
        high_only = ro.expert == "high"
        boundary = self.generator.boundary if high_only else None  # the high-noise region of the generator
        info = {"step": s, "exit_step": exit_step, "expert": ro.expert, "high_only": high_only,
                "t_range": (max(c.min_t, boundary) if boundary is not None else c.min_t, c.max_t),
                "grad_calls": ro.grad_calls}
        video = ro.video
        if gen_turn:
            t = draws.timestep(draws.uniform(c.seed, s, "t_gen"), c.timestep_shift, c.min_t, c.max_t, boundary)
            noise = draws.noise_like(video.shape, seeds, "dmd").to(device)
            x_t = noised(video.detach(), noise, t)
            with self.acc.autocast():
                real = real_x0(self.teacher, x_t, t, ctx, neg, c.guidance)
                with torch.no_grad():
                    fake = x0_of(x_t, velocity(self.critic, x_t, t, ctx), t)
            loss = dmd_loss(video, real, fake)
            self.gen_opt.zero_grad(set_to_none=True)
            loss.backward()
            gen_params = _params(self.generator)
            info["gen_grad_experts"] = [n for n, m in self.generator.modules().items()
                                        if any(p.grad is not None for p in m.parameters())]
            info["gen_grad_norm"] = self._reduce_and_clip(gen_params)
            self.gen_opt.step()
            self.gen_opt.zero_grad(set_to_none=True)
            self.gen_updates += 1
            self.ema.update(self.generator.modules(), copy=self.gen_updates <= c.ema_start)
            info.update(dmd_loss=float(loss.detach()), t_gen=t, teacher_expert=expert_for(self.teacher, t))
        x0 = video.detach()
        del video, ro
        t_c = draws.timestep(draws.uniform(c.seed, s, "t_critic"), c.timestep_shift, c.min_t, c.max_t, boundary)
        noise_c = draws.noise_like(x0.shape, seeds, "critic").to(device)
        with self.acc.autocast():
            v = velocity(self.critic, noised(x0, noise_c, t_c), t_c, ctx)
        closs = flow_matching_loss(v, x0, noise_c)
        self.critic_opt.zero_grad(set_to_none=True)
        closs.backward()
        info["critic_grad_norm"] = self._reduce_and_clip(_params(self.critic))
        self.critic_opt.step()
        self.critic_opt.zero_grad(set_to_none=True)
        info.update(critic_loss=float(closs.detach()), t_critic=t_c, critic_expert=expert_for(self.critic, t_c))
        self.step += 1
        self.history.append({k: info[k] for k in ("step", "critic_loss", "dmd_loss") if k in info})
        return info

    # ----------------------------------------------------------------- causal initialisation
    def causal_init(self, steps: int, callback=None, stop=None) -> list[float]:
        """Regress the generator onto teacher ODE trajectories for `steps` iterations (before DMD)."""
        c = self.config
        opt = torch.optim.AdamW(_params(self.generator), lr=c.init_lr, betas=tuple(c.betas),
                                weight_decay=c.weight_decay)
        grid = init.ode_grid(c.teacher_steps, self.teacher.shift, self.plan)
        keep = {s.t for s in self.plan}
        device, losses = self.generator.low.device, []
        for i in range(self.init_steps_done, steps):
            if stop is not None and stop():
                break
            rows = self._rows()
            seeds = [draws.key(c.seed, "init", i, "sample", r) for r in rows]
            picks = [draws.key(c.seed, "init", i, "prompt", r) % len(self.prompts) for r in rows]
            ctx, neg, start = self.prompts.batch(picks, self.generator.config.text_len, device)
            step = self.plan[int(torch.randint(self.n_steps, (), generator=draws.generator(c.seed, "init", i)))]
            shape = (len(rows), self.generator.config.out_dim, c.latent_frames, c.latent_height, c.latent_width)
            noise = draws.noise_like(shape, seeds, "init").to(device)
            with self.acc.autocast():
                states, x0 = init.ode_trajectory(self.teacher, noise, ctx, neg, c.guidance, grid, keep, start)
                n_start = 0 if start is None else start.shape[2]
                sizes = init.chunk_sizes(c.latent_frames, c.chunk_frames,
                                         self.generator.high is not None and start is None)
                if n_start:
                    sizes = [n_start] + init.chunk_sizes(c.latent_frames - n_start, c.chunk_frames, False)
                loss = init.regression_loss(self.generator, step, states[step.t], x0, ctx, sizes, n_start)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            self._reduce_and_clip(_params(self.generator))
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.init_steps_done = i + 1
            losses.append(float(loss.detach()))
            if callback is not None:
                callback({"init_step": i, "init_loss": losses[-1], "expert": step.expert, "t": step.t})
        self.ema.update(self.generator.modules(), copy=True)
        return losses

    # ----------------------------------------------------------------- the loop
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
        if self.checkpoint_dir is not None and (latest_step(self.checkpoint_dir) != self.step):
            self.save_checkpoint()
        return self.history

    # ----------------------------------------------------------------- state
    def state_weights(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, pair in (("gen", self.generator), ("critic", self.critic)):
            for n, m in pair.modules().items():
                out.update({f"{prefix}.{n}.{k}": v for k, v in m.state_dict().items()})
        out.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        return out

    def save_checkpoint(self) -> Path | None:
        if not self.acc.is_main_process:
            self.acc.wait_for_everyone()
            return None
        state = {"step": self.step, "gen_updates": self.gen_updates, "history": self.history,
                 "init_steps_done": self.init_steps_done,
                 "config": self.config.to_dict()}
        optim = {"generator": self.gen_opt.state_dict(), "critic": self.critic_opt.state_dict()}
        path = checkpoints.save(self.checkpoint_dir, self.step, self.state_weights(), optim, state)
        if self.acc.num_processes > 1:
            self.acc.wait_for_everyone()
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint under checkpoint_dir if there is one."""
        target = checkpoints.latest(self.checkpoint_dir)
        if target is None:
            return False
        weights, optim, state = checkpoints.load(target)
        for prefix, pair in (("gen", self.generator), ("critic", self.critic)):
            for n, m in pair.modules().items():
                pre = f"{prefix}.{n}."
                sd = {k[len(pre):]: v for k, v in weights.items() if k.startswith(pre)}
                try:
                    m.load_state_dict(sd)
                except RuntimeError as e:
                    raise ValueError(f"checkpoint '{target}' does not belong to these models ({prefix} {n}): "
                                     f"{str(e).splitlines()[0]}; use another checkpoint_dir") from None
        self.ema.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("ema.")})
        self.gen_opt.load_state_dict(optim["generator"])
        self.critic_opt.load_state_dict(optim["critic"])
        self.step, self.gen_updates, self.history = state["step"], state["gen_updates"], state["history"]
        self.init_steps_done = state.get("init_steps_done", 0)
        return True

    # ----------------------------------------------------------------- output
    def generator_weights(self) -> dict[str, dict]:
        """Per expert, the weights to ship: the EMA once it has started, else the current weights."""
        use_ema = self.gen_updates > self.config.ema_start
        out = {}
        for n, m in self.generator.modules().items():
            sd = {k: v.detach() for k, v in m.state_dict().items()}
            if use_ema:
                sd.update(self.ema.weights(n))
            out[n] = sd
        return out

    def export(self, path=None, dtype=torch.bfloat16) -> Path:
        """Save the trained generator where config.output says (never over an existing file)."""
        path = Path(path or self.config.output)
        if not str(path):
            raise ValueError("no output path: set `output` in the config")
        check_free(path)
        return save_generator(path, self.generator.config, self.generator_weights(), self.generator.boundary,
                              self.generator.shift, dtype)


def latest_step(folder) -> int | None:
    target = checkpoints.latest(folder)
    return None if target is None else int(target.name.split("-")[1])


