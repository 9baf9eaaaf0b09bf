"""The numbers a stream is run with, checked in one place for the command line and the nodes.

Each check takes the name the user knows the value by ("--shift" on the command line, "shift" on a node) and
raises ValueError with one line: the value, what is wrong with it, and what to give instead. Checks run before
any weight is loaded or frame computed.
"""
from __future__ import annotations

import math

MAX_SEED = 2 ** 64 - 1  # torch.Generator.manual_seed takes 64 bits
GRID = 1000  # timesteps live in (0, 1000]


def check_int(value, name: str, low: int, high: int | None = None, hint: str = "") -> int:
    """An integer in [low, high]; `hint` says what the value means when it is out of range."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} {value} is out of range: it must be {span}{'; ' + hint if hint else ''}")
    return value


def check_finite(value, name: str) -> float:
    """A real number that is neither NaN nor infinite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}, which is not a usable number; give a finite value")
    return value


def check_seed(value, name: str = "seed") -> int:
    return check_int(value, name, 0, MAX_SEED, "seeds are 64-bit (0 to 18446744073709551615)")


def check_chunks(value, name: str = "num_chunks") -> int:
    return check_int(value, name, 1, hint="a run makes at least one chunk")


def check_shift(value, name: str = "shift", zero_means: str | None = None) -> float | None:
    """A positive scheduler shift; with `zero_means` (e.g. "the checkpoint's shift"), 0 stands for a default and
    gives None."""
    value = check_finite(value, name)
    if value == 0 and zero_means:
        return None
    if value <= 0:
        default = f", or 0 for {zero_means}" if zero_means else ""
        raise ValueError(f"{name} {value:g} cannot be used: the shift must be positive (5 for the released "
                         f"models{default})")
    return value


def check_boundary(value, name: str = "boundary") -> float:
    """The timestep where the high-noise expert hands over to the low-noise one, strictly inside (0, 1000)."""
    value = check_finite(value, name)
    if not 0 < value < GRID:
        raise ValueError(f"{name} {value:g} cannot be used: the expert boundary is a timestep between 0 and {GRID} "
                         f"(875 for CausalWan2.2-I2V-A14B)")
    return value
