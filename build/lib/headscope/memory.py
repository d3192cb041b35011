"""Memory bounds: every computation estimates its activation memory before it runs and chunks to fit a budget.

The budget is a share of the memory free where the activations live (CPU MemAvailable, or free CUDA memory), capped at
2 GiB on the CPU; HEADSCOPE_MEMORY_BUDGET_MB sets it instead, up to 90 % of the free memory. A computation whose
smallest chunk does not fit is refused with both figures, so a run either completes within the budget or is refused
before it starts; the server never runs out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from headscope.errors import HeadscopeError
from headscope.settings import positive_env

if TYPE_CHECKING:
    from headscope.backends.base import ModelInfo, Placement

CPU_SHARE = 0.5  # of MemAvailable
CPU_CAP_BYTES = 2 * 2**30  # keeps the embedded model's server under 4 GB resident with every session together
CUDA_SHARE = 0.8  # of free GPU memory
OVERRIDE_SHARE = 0.9  # of free memory: the most HEADSCOPE_MEMORY_BUDGET_MB can give
# Batches past these sizes stop paying off (a single larger unit still runs): on a GPU, bigger products run faster up
# to a couple of GiB of activations; on a CPU, the elementwise work of huge batches falls out of cache and slows down.
CHUNK_TARGET_BYTES = 2 * 2**30
CPU_CHUNK_TARGET_BYTES = 96 * 2**20
MIB = 2**20


class MemoryRefused(HeadscopeError):
    """A computation that would not fit its memory budget, refused before it ran."""


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _on_cpu(placement: Placement) -> bool:
    return placement.device == "cpu" or placement.device.startswith("meta")


def _free_bytes(placement: Placement) -> int | None:
    """Memory free where the activations live: CPU MemAvailable (None where unknown), or free memory on the GPU (the
    least free of the GPUs a split model spans)."""
    if _on_cpu(placement):
        return _mem_available()
    if placement.device_map:
        return min(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
    return torch.cuda.mem_get_info(torch.device(placement.device))[0]


def activation_budget(placement: Placement) -> int:
    """Bytes a computation may use for activations now (a hard limit: a run needing more is refused).

    By default a share of the free memory (on the CPU at most CPU_CAP_BYTES); HEADSCOPE_MEMORY_BUDGET_MB sets the
    budget instead, above that cap or below it, but never beyond OVERRIDE_SHARE of what is free."""
    override = positive_env("HEADSCOPE_MEMORY_BUDGET_MB", None, maximum=2**30)
    free = _free_bytes(placement)
    if override is not None:
        wanted = int(override * MIB)
        return wanted if free is None else min(wanted, int(free * OVERRIDE_SHARE))
    if _on_cpu(placement):
        return CPU_CAP_BYTES if free is None else min(int(free * CPU_SHARE), CPU_CAP_BYTES)
    assert free is not None
    return int(free * CUDA_SHARE)


def chunk_target_bytes(placement: Placement) -> int:
    """The batch size (in activation bytes) past which larger batches stop running faster on this device."""
    override = positive_env("HEADSCOPE_CHUNK_TARGET_MB", None, maximum=2**30)
    if override is not None:
        return int(override * MIB)
    return CPU_CHUNK_TARGET_BYTES if placement.device == "cpu" else CHUNK_TARGET_BYTES


def element_size(dtype: torch.dtype) -> int:
    return torch.tensor([], dtype=dtype).element_size()


def block_bytes_per_token(info: ModelInfo, dtype: torch.dtype, seq_len: int) -> int:
    """Peak activation bytes per token while one block runs: residual copies, q/k/v, MLP hidden states (gate, up,
    activation) and the attention scores (eager attention keeps [head, dest, src] in float32)."""
    d_mlp = max(info.d_mlp, 4 * info.d_model)
    per_token = (8 * info.d_model + 4 * info.n_heads * info.d_head + 3 * d_mlp) * element_size(dtype)
    per_token += 3 * info.n_heads * seq_len * 4  # scores, softmax and mask in float32, per destination token
    return int(per_token)


@dataclass(frozen=True)
class ChunkPlan:
    """How a computation is cut: `per_chunk` units at a time, each unit `unit_bytes`, within `budget` bytes."""

    per_chunk: int
    unit_bytes: int
    fixed_bytes: int
    budget: int

    @property
    def peak_bytes(self) -> int:
        return self.fixed_bytes + self.per_chunk * self.unit_bytes


def plan_chunks(what: str, n_units: int, unit_bytes: int, budget: int, fixed_bytes: int = 0,
                max_per_chunk: int | None = None, target: int | None = None) -> ChunkPlan:
    """Units per chunk so that fixed_bytes + per_chunk · unit_bytes ≤ min(budget, target); refuse (MemoryRefused,
    with both figures) when even one unit exceeds the budget. `target` keeps batches at a size past which larger ones
    no longer run faster (see chunk_target_bytes), so a computation's peak stays low on a large GPU; one unit above
    the target still runs."""
    room = budget - fixed_bytes
    if room < unit_bytes:
        raise MemoryRefused(
            f"{what} needs at least {(fixed_bytes + unit_bytes) / MIB:,.0f} MiB of working memory but only "
            f"{budget / MIB:,.0f} MiB are available for it now: use fewer or shorter prompts, a smaller model, "
            "or free memory (HEADSCOPE_MEMORY_BUDGET_MB sets the budget)."
        )
    if target is not None:
        room = min(room, max(target - fixed_bytes, unit_bytes))
    per_chunk = max(1, min(n_units, room // max(unit_bytes, 1)))
    if max_per_chunk is not None:
        per_chunk = max(1, min(per_chunk, max_per_chunk))
    return ChunkPlan(int(per_chunk), int(unit_bytes), int(fixed_bytes), int(budget))
