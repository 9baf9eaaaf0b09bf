"""Offload modes: which expert weights sit on the compute device, and when the others are copied in.

    policy = apply_offload(experts, "blocks", device="cuda", blocks=4)
    stream = Stream(experts, ...)          # runs as usual; the policy's hooks move weights
    policy.log.summary()                    # peaks of blocks / experts / bytes on the compute device
    policy.remove()                         # hooks off, weights back on the CPU

Modes
- "resident": every weight of every expert on the compute device.
- "swap": the transformer blocks of one expert at a time. When the other expert is asked for (ExpertPair.get
  calls the policy's `place`), the current expert's blocks are dropped and the new one's blocks are copied in
  during its first forward, `prefetch` blocks ahead of the one running, on a side CUDA stream (so the copy of
  block i+1 overlaps the compute of block i), and then stay.
- "blocks": only `blocks` transformer blocks (of any expert) on the compute device at once; while block i runs,
  blocks i+1 .. i+N-1 are being copied in (past the last block: the first blocks of the next forward of the same
  expert), and block i is dropped when it is done.
- "auto": the planner (causal/memory/memory_plan.py) picks the least offloading mode that fits the free memory.
In "swap" and "blocks" a stream also keeps only the running expert's KV cache on the compute device: the idle
expert's cache waits in host memory (ExpertPair.park_idle_caches, honoured by causal/sampling/stream.py).
In "swap" and "blocks" the non-block weights (patch/text/time embeddings, time projection, head: ~1.6% of an
A14B expert) of every expert stay resident. Masters live in host memory; when CUDA is present in one pinned
arena per expert (causal/memory/host_arena.py: exactly the weights' bytes, unpinned on `remove`).

Hooks, not edits: forward pre/post hooks on every `model.blocks[i]`, a wrapper on each block's
`cross_attn.kv` (the text cache is computed outside the block's forward), and `ExpertPair.placement`.
On CPU the compute and storage devices are one, but "swap" and "blocks" still make a real copy of each loaded
block and drop it on eviction, so the same code runs and a test can tell loaded weights from masters.
Inference only: weights are never copied back, and autograd would keep every evicted copy alive.
"""
from __future__ import annotations

from functools import partial

import torch

from ..sampling.experts import ExpertPair
from ..model.fp8 import is_fp8
from .memory_plan import MemoryPlan, choose_mode
from .host_arena import HostArena
from .residency import ResidencyLog
from .weight_slot import Copier, WeightSlot, arena_size

MODES = ("resident", "swap", "blocks", "auto")
DEFAULT_BLOCKS = 4  # blocks on the compute device in "blocks" mode unless told otherwise (the loader's count)
STORAGE = torch.device("cpu")


class Offload:
    """Base of the offload policies: weight slots, hooks, residency bookkeeping."""

    mode = "?"
    copy_same_device = True
    park_idle_caches = True  # streams keep only the running expert's KV cache on the device (swap, blocks)

    def __init__(self, experts: ExpertPair, device, pin: bool | None = None):
        models = experts.modules()
        if len({id(m) for m in models.values()}) < len(models):
            raise ValueError("the high- and low-noise experts are the same module; offloading needs two models")
        if getattr(experts, "_offload", None) is not None:
            raise RuntimeError("this expert pair already has an offload policy; call .remove() on it first")
        self.experts, self.device = experts, concrete_device(device)
        storage = self._storage()
        pin = (self.device.type == "cuda" if pin is None else pin) and storage.type == "cpu"
        self.copier = Copier(self.device)
        self.log = ResidencyLog()
        self.plan: MemoryPlan | None = None
        self.current: str | None = None
        self.arenas = {n: HostArena(arena_size(m)) for n, m in models.items()} if pin else {}
        self.base, self.slots = {}, {}
        for n, m in models.items():  # each expert's masters fill its arena slot by slot, then it is pinned
            self.base[n] = WeightSlot(m, storage, self.arenas.get(n), skip="blocks")
            self.slots[n] = [WeightSlot(b, storage, self.arenas.get(n)) for b in m.blocks]
            if n in self.arenas:
                self.arenas[n].pin()
        self._keys = {n: [(n, i) for i in range(len(ss))] for n, ss in self.slots.items()}  # shared by snapshots
        self._on: set = set()  # (expert, block) keys of the loaded blocks
        self._on_bytes = 0  # bytes of every loaded slot, non-block parts included
        self._undo = []
        for name, model in models.items():
            for i, blk in enumerate(model.blocks):
                h1 = blk.register_forward_pre_hook(partial(self._pre_hook, name, i))
                h2 = blk.register_forward_hook(partial(self._post_hook, name, i))
                self._undo += [h1.remove, h2.remove, self._wrap_kv(name, i, blk.cross_attn)]
        experts.placement = self.place
        experts.park_idle_caches = self.park_idle_caches
        experts._offload = self
        self._start()

    # ----------------------------------------------------------------- hooks
    def _wrap_kv(self, name: str, i: int, attn):
        original = attn.kv

        def kv(*args, **kwargs):
            self._before(name, i, "cross")
            try:
                return original(*args, **kwargs)
            finally:
                self._after(name, i)

        attn.kv = kv
        return lambda: attn.__dict__.pop("kv", None)

    def _pre_hook(self, name, i, module, args):
        self._before(name, i, "compute")

    def _post_hook(self, name, i, module, args, output):
        self._after(name, i)

    def _before(self, name: str, i: int, event: str) -> None:
        if name != self.current:  # a block used without ExpertPair.get: place its expert now
            self.place(name)
        self._make_room(name, i)
        self._load(name, i)
        self.slots[name][i].wait()
        self._prefetch(name, i)
        self._record(event, name, i)

    # ----------------------------------------------------------------- moving
    def _loaded_blocks(self) -> list:
        return sorted(self._on)

    def _record(self, event: str, name: str, i: int) -> None:
        self.log.record(event, name, i, self._on, self._on_bytes)

    def _load(self, name: str, i: int) -> None:
        slot = self.base[name] if i < 0 else self.slots[name][i]
        if slot.loaded:
            return
        copied = slot.load(self.copier, self.copy_same_device)
        self._on_bytes += slot.nbytes
        if i >= 0:
            self._on.add(self._keys[name][i])
        self.log.count_load(copied)
        self._record("load", name, i)

    def _evict(self, name: str, i: int) -> None:
        slot = self.base[name] if i < 0 else self.slots[name][i]
        if slot.loaded:
            slot.evict()
            self._on_bytes -= slot.nbytes
            self._on.discard(self._keys[name][i] if i >= 0 else None)
            self._record("evict", name, i)

    def _load_bases(self) -> None:
        for name in self.base:
            self._load(name, -1)
            self.base[name].wait()

    # ----------------------------------------------------------------- policy (overridden)
    def _storage(self) -> torch.device:
        """Where the masters live."""
        return STORAGE

    def _start(self) -> None:
        self._load_bases()

    def place(self, name: str) -> None:
        """Called by ExpertPair.get before expert `name` runs."""
        self.current = name

    def _make_room(self, name: str, i: int) -> None:
        pass

    def _prefetch(self, name: str, i: int) -> None:
        pass

    def _after(self, name: str, i: int) -> None:
        pass

    # ----------------------------------------------------------------- leaving
    def remove(self, device=STORAGE) -> None:
        """Take the hooks off and put every weight on `device` (default: the CPU)."""
        for undo in self._undo:
            undo()
        self._undo = []
        for slot in list(self.base.values()) + [s for ss in self.slots.values() for s in ss]:
            slot.restore(torch.device(device))
        for arena in self.arenas.values():  # pinned memory back to the system (the views stay plain host memory)
            arena.release()
        self.arenas = {}
        self.experts.placement = None
        self.experts.park_idle_caches = False
        self.experts._offload = None

    def describe(self) -> str:
        text = f"offload {self.mode} on {self.device}"
        return text if self.plan is None else f"{text}; planned {self.plan.describe()}"


class Resident(Offload):
    mode = "resident"
    copy_same_device = False
    park_idle_caches = False

    def _storage(self) -> torch.device:
        return self.device  # the masters are the weights: no second copy anywhere

    def _start(self) -> None:
        self._load_bases()
        for name, slots in self.slots.items():
            for i in range(len(slots)):
                self._load(name, i)
        for slots in self.slots.values():
            for s in slots:
                s.wait()


class Swap(Offload):
    mode = "swap"

    def __init__(self, experts: ExpertPair, device, prefetch: int = 2, pin: bool | None = None):
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 blocks, got {prefetch}")
        self.prefetch = prefetch
        super().__init__(experts, device, pin)

    def place(self, name: str) -> None:
        if name == self.current:
            return
        for other, slots in self.slots.items():  # drop the other expert's blocks before any of ours arrive
            if other != name:
                for j in range(len(slots)):
                    self._evict(other, j)
        self.current = name
        for j in range(min(self.prefetch, len(self.slots[name]))):
            self._load(name, j)

    def _prefetch(self, name: str, i: int) -> None:
        for j in range(i + 1, min(i + 1 + self.prefetch, len(self.slots[name]))):
            self._load(name, j)


class Blocks(Offload):
    mode = "blocks"

    def __init__(self, experts: ExpertPair, device, blocks: int = DEFAULT_BLOCKS, pin: bool | None = None):
        if blocks < 1:
            raise ValueError(f"blocks mode keeps at least 1 block on the device, got {blocks}")
        self.budget = min(blocks, experts.config.num_layers)
        super().__init__(experts, device, pin)

    def _ahead(self, name: str, i: int) -> list:
        """Block i and the next budget - 1 in the order they run, wrapping round to the first blocks of this
        expert's next forward, so their copies start while the last blocks of this forward still run."""
        n = len(self.slots[name])
        return [(name, j % n) for j in range(i, i + min(self.budget, n))]

    def _window(self, name: str, i: int) -> set:
        return set(self._ahead(name, i))

    def place(self, name: str) -> None:
        self.current = name
        keep = self._window(name, 0)
        for key in self._loaded_blocks():  # leftovers of an interrupted forward or of the other expert
            if key not in keep:
                self._evict(*key)
        for _, j in sorted(keep):
            self._load(name, j)

    def _make_room(self, name: str, i: int) -> None:
        keep = self._window(name, i)
        for key in self._loaded_blocks():
            if key not in keep:
                self._evict(*key)

    def _prefetch(self, name: str, i: int) -> None:
        for _, j in self._ahead(name, i):
            if len(self._on) >= self.budget:
                break
            self._load(name, j)

    def _after(self, name: str, i: int) -> None:
        self._evict(name, i)


def default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else STORAGE


def concrete_device(device) -> torch.device:
    """torch.device("cuda") -> cuda:<current>, so it compares equal to the device of a tensor placed there."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def weight_dtype_of(experts: ExpertPair) -> torch.dtype:
    """The dtype the block weights are stored in (fp8 when any block Linear is fp8)."""
    dtypes = {t.dtype for m in experts.modules().values() for t in m.blocks.state_dict().values()}
    fp8 = [d for d in dtypes if is_fp8(d)]
    return fp8[0] if fp8 else experts.low.dtype


def part_bytes(experts: ExpertPair) -> tuple[int, int]:
    """(non-block bytes of one expert, bytes of its largest block), measured on the real modules."""
    model = experts.low
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    blocks = [sum(t.numel() * t.element_size() for t in b.state_dict().values()) for b in model.blocks]
    return total - sum(blocks), max(blocks)


def auto_plan(experts: ExpertPair, device, free_bytes: int | None = None, blocks: int = DEFAULT_BLOCKS,
              **workload) -> MemoryPlan:
    """The plan "auto" follows: free memory of `device` (plus what these experts already hold there) against
    the planner's prediction for `workload` (height, width, frames, window, sink, chunk_frames, cache_dtype)."""
    device = concrete_device(device)
    if free_bytes is None:
        if device.type != "cuda":
            raise ValueError("auto offload on a device other than CUDA needs free_bytes")
        free_bytes = torch.cuda.mem_get_info(device)[0]  # + what PyTorch holds but no tensor uses any more
        free_bytes += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        free_bytes += sum(t.numel() * t.element_size() for m in experts.modules().values()
                          for t in m.state_dict().values() if t.device == device)
    height, width = workload.pop("height", 480), workload.pop("width", 832)
    return choose_mode(free_bytes, experts.config, height, width, experts=len(experts.names),
                       weight_dtype=weight_dtype_of(experts), blocks=blocks, shared_cross=experts.share_cross_cache,
                       part_bytes=part_bytes(experts), **workload)


def apply_offload(experts: ExpertPair, mode: str = "auto", device=None, *, blocks: int = DEFAULT_BLOCKS,
                  prefetch: int = 2, free_bytes: int | None = None, pin: bool | None = None, **workload) -> Offload:
    """Attach an offload policy to `experts` and return it. "auto" on a device without CUDA is "resident"."""
    if mode not in MODES:
        raise ValueError(f"unknown offload mode {mode!r}; choose one of {MODES}")
    device = torch.device(device) if device is not None else default_device()
    plan = None
    if mode == "auto":
        if device.type == "cuda" or free_bytes is not None:
            plan = auto_plan(experts, device, free_bytes, blocks, **workload)
            mode, blocks = plan.mode, plan.blocks
        else:
            mode = "resident"
    if mode == "resident":
        policy = Resident(experts, device, pin)
    elif mode == "swap":
        policy = Swap(experts, device, prefetch, pin)
    else:
        policy = Blocks(experts, device, blocks, pin)
    policy.plan = plan
    return policy
