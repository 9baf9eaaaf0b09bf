"""A tiny DMD run for test_training_distributed.py, started as one plain process or under
`python -m torch.distributed.run --nproc_per_node 2 tests/train_worker.py OUT [fsdp] [ckpt] [resume]`.

fsdp: shard the models (FSDP2); ckpt: activation checkpointing; resume: stop after 2 of the 3 steps, then a fresh
trainer resumes from the checkpoint; own-disk: every process but the main one has its own, empty checkpoint folder
(machines without a shared filesystem). The main process saves the final generator, critic and EMA weights
to OUT."""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)

from causalwan.causal.sampling.experts import ExpertPair  # noqa: E402
from causalwan.causal.training import checkpoints  # noqa: E402
from causalwan.causal.training.conditioning import PromptSet  # noqa: E402
from causalwan.causal.training.config import TrainConfig  # noqa: E402
from causalwan.causal.training.trainer import DMDTrainer  # noqa: E402
from tiny_models import tiny_model  # noqa: E402


def trainer(batch=2, checkpoint_dir="", **kw):
    gen = ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0)
    teacher = ExpertPair(low=tiny_model(3), high=tiny_model(4), boundary=875.0)
    cfg = TrainConfig(steps=3, batch_size=batch, latent_frames=4, latent_height=4, latent_width=4, gen_update_every=2,
                      lr_generator=1e-3, lr_critic=1e-3, seed=5, checkpoint_dir=checkpoint_dir, **kw)
    prompts = PromptSet([torch.randn(5, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)],
                        torch.zeros(2, 32))
    return DMDTrainer(cfg, gen, teacher, prompts)


def run(out=None, flags=(), batch=2):
    kw = dict(fsdp="fsdp" in flags, activation_checkpointing="ckpt" in flags)
    if "resume" in flags:
        ckpt = str(out) + ".ckpt"
        if "own-disk" in flags and os.environ.get("RANK", "0") != "0":  # nodes without a shared filesystem: this
            ckpt = str(out) + f".rank{os.environ['RANK']}.ckpt"         # process never sees the main one's files
        first = trainer(batch, checkpoint_dir=ckpt, **kw)
        first.train(steps=2)
        del first
        tr = trainer(batch, checkpoint_dir=ckpt, **kw)
        assert tr.step == 2, tr.step
    else:
        tr = trainer(batch, **kw)
    tr.train()
    weights = checkpoints.trainer_weights(tr)
    if out is not None and tr.acc.is_main_process:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out))
    if os.environ.get("WORLD_SIZE"):  # started by torchrun: end the process group it made, as train.py does
        tr.acc.wait_for_everyone()  # (no process leaves while another still writes its file)
        tr.acc.end_training()
    return weights


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
    if os.environ.get("WORLD_SIZE"):
        # Under torchrun on CPU (gloo), about 1 run in 20 on a loaded machine aborts in torch's C++ teardown after
        # the script has ended ("terminate called without an active exception", no Python frame), even with the
        # process group destroyed. Nothing is left to do (the file is written, the group ended): leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
