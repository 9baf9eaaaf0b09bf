"""Two processes (gloo on CPU, started by torch.distributed.run as accelerate expects) give the same update as one
process with the same global batch, with and without FSDP (FSDP2 runs on CPU), within float32 tolerance."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import train_worker

WORKER = Path(__file__).parent / "train_worker.py"


def two_processes(out: Path, *flags) -> dict:
    # --standalone: the launcher's own TCP store binds port 0 (the system picks a free port while binding) and the
    # workers join that store; a port chosen here, released and bound later by torchrun could be taken meanwhile
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(out), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return load_file(str(out))


@pytest.fixture(scope="module")
def one_process():
    return train_worker.run(batch=2)


# fp32 tolerance after AdamW: summation order differs (two half-batch backwards + an all-reduce vs one backward),
# and Adam divides by sqrt(v) + eps, so a weight whose gradient is near zero moves by ~lr * g / (|g| + eps): its
# rounding shows at ~1% of one step (lr 1e-3 -> ~1e-5). A run without the second sample is >1e-3 away.
TOL = 5e-5


def diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, one_process):
    two = two_processes(tmp_path / "two.safetensors")
    assert diff(one_process, two) <= TOL
    half = train_worker.run(batch=1)  # the second sample matters: a run without it lands elsewhere
    assert diff(one_process, half) > 1e-3


def test_fsdp_with_activation_checkpointing_and_resume_equals_one_process(tmp_path, one_process):
    two = two_processes(tmp_path / "fsdp.safetensors", "fsdp", "ckpt", "resume")
    assert diff(one_process, two) <= TOL


def test_resume_without_a_shared_filesystem_follows_the_main_process(tmp_path, one_process):
    # only the main process can read the checkpoint: it decides and hands the state over, so both resume at step 2
    two = two_processes(tmp_path / "own.safetensors", "resume", "own-disk")
    assert diff(one_process, two) <= TOL
    assert not list((tmp_path / "own.safetensors.rank1.ckpt").glob("step-*"))  # nothing was read or written there
