"""How a command-line run that has started ends when it cannot finish: Ctrl-C or SIGTERM, a full disk, out of
memory, weights that fail while they are read. Each ends in one line that says what happened after how many
chunks and what was kept: the unfinished <out>.partial.mp4 is always removed (Mp4Writer), an earlier <out> is
left byte for byte as it was. Ctrl-C before the run has started (while torch and the engine are imported) ends in
one line too. Nothing here imports torch at import time: the command line imports this first."""
from __future__ import annotations

import errno
import signal
import sys
from contextlib import contextmanager

FULL_DISK = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", -1))


class Stopped(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived: the run stops where it is (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


@contextmanager
def stopped_by_signals():
    """SIGINT and SIGTERM raise Stopped inside the block; the previous handlers come back after it."""
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def starting():
    """Ctrl-C while the command starts (torch and the engine are imported, the options read): one line and exit
    130, like every other ending; nothing has been written yet."""
    try:
        yield
    except KeyboardInterrupt:
        print("cancelled by SIGINT while starting: nothing was written", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.SIGINT) from None


def fail(message: str, code: int):
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def kept(out, existed: bool, report: dict) -> str:
    """What is left of the output: the earlier file untouched, or nothing (and no unfinished file)."""
    where = f"'{out}' is kept as it was" if existed else f"no video was written to '{out}'"
    return where + (" (the unfinished file was removed)" if report.get("writing") else "")


def end(err: BaseException, out, existed: bool, report: dict, chunks: int, device: str):
    """The one line (and exit code) for an error that stopped a started run; re-raises anything else."""
    import torch

    from .causal.memory.oom import device_budget, is_oom, oom_message

    done = f"{report['chunks']} of {chunks} chunks"
    what = kept(out, existed, report)
    if isinstance(err, Stopped):
        print(f"cancelled by {signal.Signals(err.signum).name} after {done}: {what}", file=sys.stderr, flush=True)
        raise SystemExit(128 + err.signum) from None
    if isinstance(err, OSError):
        if err.errno in FULL_DISK:
            fail(f"no room to write the video ({err.strerror}) after {done}: {what}; free disk space or choose "
                 f"another --out", 1)
        fail(f"{err} after {done}: {what}; check --out and the files given", 1)
    if is_oom(err) and report.get("plan") is not None:  # torch's error, or a RuntimeError saying so (other backends)
        # the planner's advice: a lighter --offload, --kv-cache fp8_e4m3fn, or a smaller size
        fail(f"{oom_message(report['plan'], device_budget(device), str(err))} (after {done}: {what})", 1)
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        fail(f"{first} after {done}: {what}; try a smaller --width/--height, a --window, or fewer --chunks", 1)
    if isinstance(err, ValueError):  # weights that do not load, found only when they are read
        fail(f"{' '.join(str(err).split())}: {what}", 2)
    if isinstance(err, RuntimeError):
        fail(f"{str(err).strip().splitlines()[0]}: {what}", 1)
    raise err
