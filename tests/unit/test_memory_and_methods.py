"""Chunk planning within a memory budget, and the ablation methods' replacement builders."""

import pytest
import torch

from headscope.errors import InputError
from headscope.memory import MemoryRefused, plan_chunks
from headscope.methods import ABLATION_METHODS, get_method


def test_chunks_fit_the_budget_and_refuse_when_one_unit_does_not():
    plan = plan_chunks("A sweep", n_units=100, unit_bytes=10, budget=255, fixed_bytes=50, target=None)
    assert plan.per_chunk == 20 and plan.peak_bytes <= 255
    with pytest.raises(MemoryRefused, match=r"needs at least .* MiB .* only .* MiB"):
        plan_chunks("A sweep", n_units=5, unit_bytes=300 * 2**20, budget=200 * 2**20)


def test_the_target_caps_batches_but_never_refuses_a_unit_that_fits_the_budget():
    plan = plan_chunks("x", n_units=100, unit_bytes=10, budget=10_000, target=100)
    assert plan.per_chunk == 10
    plan = plan_chunks("x", n_units=100, unit_bytes=500, budget=10_000, target=100)
    assert plan.per_chunk == 1


def test_mean_builder_streams_chunks_to_the_mean_over_every_prompt():
    corrupted = torch.randn(10, 3, 4)
    builder = ABLATION_METHODS["mean"].builder()
    for start in range(0, 10, 3):
        builder.add(corrupted[start:start + 3])
    # values of scale 1 summed in another order: float32 rounding, far below 1e-5
    torch.testing.assert_close(builder.result().float(), corrupted.mean(0, keepdim=True), atol=1e-5, rtol=0)


def test_resample_pairs_prompts_and_zero_gives_none():
    corrupted = torch.randn(4, 2, 3)
    builder = ABLATION_METHODS["resample"].builder()
    builder.add(corrupted[:2])
    builder.add(corrupted[2:])
    assert torch.equal(builder.result(), corrupted)
    assert ABLATION_METHODS["zero"].replacement(corrupted) is None
    assert ABLATION_METHODS["resample"].pairs_prompts and not ABLATION_METHODS["mean"].pairs_prompts


def test_unknown_method_names_the_known_ones():
    with pytest.raises(InputError, match="zero, mean, resample"):
        get_method("median")


@pytest.mark.parametrize("name", ["HEADSCOPE_MEMORY_BUDGET_MB", "HEADSCOPE_CHUNK_TARGET_MB"])
@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan"])
def test_a_bad_memory_setting_is_refused_with_its_name(monkeypatch, name, value):
    from headscope.backends.base import Placement
    from headscope.memory import activation_budget, chunk_target_bytes

    monkeypatch.setenv(name, value)
    placement = Placement("cpu", None, torch.float32)
    with pytest.raises(InputError, match=name):
        activation_budget(placement) if name == "HEADSCOPE_MEMORY_BUDGET_MB" else chunk_target_bytes(placement)


def test_the_memory_budget_setting_can_raise_the_cpu_cap_but_not_past_the_free_memory(monkeypatch):
    from headscope import memory
    from headscope.backends.base import Placement

    placement = Placement("cpu", None, torch.float32)
    monkeypatch.setattr(memory, "_mem_available", lambda: 20 * 2**30)
    monkeypatch.delenv("HEADSCOPE_MEMORY_BUDGET_MB", raising=False)
    assert memory.activation_budget(placement) == memory.CPU_CAP_BYTES  # the default: half of 20 GiB, capped at 2
    monkeypatch.setenv("HEADSCOPE_MEMORY_BUDGET_MB", "6000")
    assert memory.activation_budget(placement) == 6000 * 2**20  # set above the cap
    monkeypatch.setenv("HEADSCOPE_MEMORY_BUDGET_MB", "40")
    assert memory.activation_budget(placement) == 40 * 2**20  # or below it
    monkeypatch.setenv("HEADSCOPE_MEMORY_BUDGET_MB", "100000")
    assert memory.activation_budget(placement) == int(20 * 2**30 * memory.OVERRIDE_SHARE)  # never past the free
