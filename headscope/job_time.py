"""How long a job will take, said before it starts: a bound in time for sweeps, estimates and circuit searches.

The estimate is the job's work counted in *token-blocks* (one token of one row through one transformer block) times
the cost of a token-block measured on this machine: one timed block call on a batch of the job's prompt length, once
per model, device, dtype and length bucket (kept for the process). Above HEADSCOPE_MAX_JOB_SECONDS (default
DEFAULT_MAX_JOB_SECONDS) the app asks for a confirmation and the CLI refuses, both with the estimate and what to do.

The count follows the engine's own progress units (headscope.engine.joined_work_units): a single-component sweep runs
every component from its own layer to the last (Σ over layers of components · (n_layers − layer)), plus the clean and
corrupted runs. Factors measured on the embedded model (2 cores) turn the count into time for the jobs whose
per-token work differs from an inference block: the attribution estimate (forward and backward over every prompt,
not batched by the block loop) and the circuit search (several passes, each pruning step a smaller batch).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from headscope.durations import readable_duration
from headscope.settings import positive_env

if TYPE_CHECKING:
    from headscope.backends.base import Backend

DEFAULT_MAX_JOB_SECONDS = 300.0


@dataclass(frozen=True)
class Calibration:
    """A job's factor (its seconds per token-block of its work, in units of one inference block's cost) and the
    measurements it was taken from: bench/job_time.py on the embedded model, 2 cores, at normal priority. `ratios` are
    measured ÷ estimated at factor 1 (one per task and prompt count); the factor is their median."""

    factor: float
    ratios: tuple[float, ...]
    measured: str  # where and when

    def spread(self) -> float:
        """How far the worst measurement lies from the factor (1.0: all exactly on it)."""
        return max(max(ratio / self.factor, self.factor / ratio) for ratio in self.ratios)


JobKind = Literal["sweep", "attribution", "circuit", "one-pass circuit", "paths"]
_MEASURED = ("bench/job_time.py --prompts 16,48 --tasks digits,months (mean); 2026-12-06, 85a7b74, load 10-13, the "
             "other jobs niced")
CALIBRATION: dict[JobKind, Calibration] = {
    "sweep": Calibration(0.81, (0.92, 0.98, 0.71, 0.71), _MEASURED),
    # counted over every prompt: the corrupted run and the replacement means take them all, not only distinct ones
    "attribution": Calibration(3.43, (3.76, 2.64, 4.11, 3.10), _MEASURED),
    # digits only: on months the embedded model's clean LD is ≤ 0, which a circuit search refuses
    "circuit": Calibration(2.05, (2.07, 2.03), _MEASURED),
    "one-pass circuit": Calibration(2.07, (1.73, 2.40), _MEASURED),
    "paths": Calibration(0.83, (0.93, 1.16, 0.73, 0.71), _MEASURED),
}
_CALIBRATION_TOKENS = 1024  # rows × positions of the timed block call

_measured: dict[tuple, float] = {}
_measuring = threading.Lock()


def max_job_seconds() -> float:
    """HEADSCOPE_MAX_JOB_SECONDS: the longest job the app runs without asking (the CLI without --no-time-limit)."""
    return float(positive_env("HEADSCOPE_MAX_JOB_SECONDS", DEFAULT_MAX_JOB_SECONDS) or DEFAULT_MAX_JOB_SECONDS)


@dataclass(frozen=True)
class JobEstimate:
    """A job's expected duration before it starts: `token_blocks` of work at `block_seconds` each (times the job's
    factor)."""

    job: str  # "the exact sweep"
    seconds: float
    token_blocks: float
    block_seconds: float
    rows: int  # distinct prompts computed
    seq_len: int

    def over(self, limit: float | None = None) -> bool:
        return self.seconds > (max_job_seconds() if limit is None else limit)

    @property
    def readable(self) -> str:
        return readable_duration(self.seconds)

    def advice(self, where: str = "app") -> str:
        """Why it is long and what to do, in one paragraph."""
        limit = readable_duration(max_job_seconds())
        other = ("run it from the command line (`python -m headscope ablate …`, its result then shows here from "
                 "the results cache)" if where == "app" else "pass --no-time-limit to run it anyway")
        return (f"{self.job[0].upper()}{self.job[1:]} would take about {self.readable} on this machine "
                f"({self.rows:,} distinct prompts of {self.seq_len} tokens; the limit here is {limit}, "
                "HEADSCOPE_MAX_JOB_SECONDS). To make it shorter: use fewer prompts, the instant estimate first, a GPU "
                f"(--device cuda), or a model served by NDIF (the nnsight backend); or {other}.")


def _bucket(seq_len: int) -> int:
    """Prompt lengths timed together: powers of two (attention's share of a block grows with the length)."""
    return 1 << max(0, int(seq_len) - 1).bit_length()


def block_seconds(model: Backend, seq_len: int) -> float | None:
    """Seconds per token-block of an inference batch of prompts of about seq_len tokens on this model and device,
    measured once (one timed block call after a warm-up) and kept; None where the backend has no block runner
    (a remote model: its time depends on the service)."""
    runner = getattr(model, "block_runner", None)
    if runner is None:
        return None
    positions = min(_bucket(seq_len), max(model.info.n_ctx, 1))
    key = (tuple(sorted(model.identity.items())), positions)
    if key in _measured:
        return _measured[key]
    with _measuring:
        if key in _measured:
            return _measured[key]
        rows = max(1, _CALIBRATION_TOKENS // positions)
        vocab = max(2, min(model.info.vocab_size, 1000))
        tokens = torch.randint(1, vocab, (rows, positions), generator=torch.Generator().manual_seed(0))
        tokens = model.tensor(tokens.tolist())
        layer = min(1, model.info.n_layers - 1)
        with torch.inference_mode(), model.gate.hold():
            resid = runner.embed(tokens)
            context = runner.context(resid)
            runner.run_block(layer, resid, context)  # warm-up: allocator, kernels
            started = time.perf_counter()
            runner.run_block(layer, resid, context)
            elapsed = time.perf_counter() - started
        _measured[key] = elapsed / (rows * positions)
        return _measured[key]


def _distinct_rows(encoded, method: str) -> int:
    """The rows the engine computes: its distinct runs (prompt, answers and, for resample, the paired corrupted
    prompt; repeated prompts are computed once)."""
    from headscope.engine import prompt_rows
    from headscope.methods import get_method

    rows = prompt_rows(encoded, get_method(method))
    return max(1, int(rows.max()) + 1 if len(rows) else 1)


def sweep_work(n_layers: int, n_heads: int, rows: int, seq_len: int, corrupted_runs: int = 1) -> float:
    """Token-blocks of an exact single-component sweep (heads and MLPs): each component's rows run from its layer to
    the last; the clean run and the corrupted runs go through every block."""
    components_from_layer = sum((n_heads + 1) * (n_layers - layer) for layer in range(n_layers))
    return float(rows * seq_len * (components_from_layer + (1 + corrupted_runs) * n_layers))


def _estimate(model: Backend, encoded, method: str, estimate: bool, jobs: tuple[str, str],
              exact: JobKind) -> JobEstimate | None:
    """A sweep-shaped job's expected duration: the attribution estimate (jobs[0]) or an exact sweep's work times the
    `exact` job's factor (jobs[1]); None where a block's cost cannot be measured."""
    info = model.info
    rows, seq_len = _distinct_rows(encoded, method), int(encoded.seq_len)
    cost = block_seconds(model, seq_len)
    if cost is None:
        return None
    if estimate:  # every prompt: its corrupted run and replacement means are not deduplicated
        rows = encoded.n_prompts
        work = float(rows * seq_len * info.n_layers)
        return JobEstimate(jobs[0], work * cost * CALIBRATION["attribution"].factor, work, cost, rows, seq_len)
    work = sweep_work(info.n_layers, info.n_heads, rows, seq_len, corrupted_runs=0 if method == "zero" else 1)
    return JobEstimate(jobs[1], work * cost * CALIBRATION[exact].factor, work, cost, rows, seq_len)


def sweep_estimate(model: Backend, encoded, method: str, estimate: bool) -> JobEstimate | None:
    """The exact sweep's (or the attribution estimate's) expected duration; None where it cannot be measured."""
    return _estimate(model, encoded, method, estimate, ("the instant estimate (attribution)", "the exact sweep"),
                     "sweep")


def circuit_estimate(model: Backend, encoded, method: str, one_pass: bool, estimate: bool) -> JobEstimate | None:
    """The circuit search's expected duration (its number of passes is not known before it runs: the factor is that
    of a typical search); None where it cannot be measured."""
    return _estimate(model, encoded, method, estimate, ("the instant circuit estimate", "the circuit search"),
                     "one-pass circuit" if one_pass else "circuit")


def paths_work(n_layers: int, n_heads: int, rows: int, seq_len: int, join_layers: list[int]) -> float:
    """Token-blocks of a path-patching job: each partner's rows run from its join layer to the last (none for paths
    straight to the logits, which need no forward of their own), plus the run and the sender's source run."""
    return float(rows * seq_len * (sum(n_layers - layer for layer in join_layers) + 2 * n_layers))


def paths_estimate(model: Backend, encoded, query) -> JobEstimate | None:
    """Path patching's expected duration (a path_patching.PathQuery); None where it cannot be measured."""
    from headscope.path_patching import partners

    info = model.info
    rows, seq_len = encoded.n_prompts, int(encoded.seq_len)  # path patching runs every prompt (no deduplication)
    cost = block_seconds(model, seq_len)
    if cost is None:
        return None
    if query.to_logits:
        joins: list[int] = []
    elif query.receiver is not None:  # every sender's group joins at the receiver's layer
        joins = [query.receiver.layer] * len(partners(query, info.n_layers, info.n_heads))
    else:  # each receiver joins at its own layer
        joins = [head.layer for head in partners(query, info.n_layers, info.n_heads)]
    work = paths_work(info.n_layers, info.n_heads, rows, seq_len, joins)
    return JobEstimate("path patching", work * cost * CALIBRATION["paths"].factor, work, cost, rows, seq_len)
