"""Jobs with a bound in time: a job's duration is estimated before it starts from a measured block cost, and one
above HEADSCOPE_MAX_JOB_SECONDS is refused by the CLI with the estimate and what to do (a 10,000-row instant
estimate once ran 12.5 minutes with no warning)."""

from __future__ import annotations

import time

import pytest
import torch

from headscope import job_time
from headscope.ablation import exact_sweep, prepare_dataset
from headscope.cli import main
from headscope.job_time import block_seconds, sweep_estimate
from headscope.tasks import build_task_dataset


def test_the_block_cost_is_measured_once_per_model_and_length(tiny_model, monkeypatch):
    first = block_seconds(tiny_model, 9)
    assert first is not None and 0 < first < 0.01  # seconds per token-block of a 3-layer, 64-wide model
    forwards = []  # kept, not measured again: no module runs (behaviour, not a duration on this machine)
    hook = torch.nn.modules.module.register_module_forward_hook(lambda *_: forwards.append(1))
    try:
        assert block_seconds(tiny_model, 12) == first  # same length bucket
        kept = len(forwards)
        monkeypatch.setattr(job_time, "_measured", {})  # forgotten: measured again (the hook sees a measurement)
        assert block_seconds(tiny_model, 12) is not None
    finally:
        hook.remove()
    assert kept == 0 and len(forwards) > 0


def test_the_estimate_grows_with_the_prompts_and_is_the_right_size(tiny_model):
    small = prepare_dataset(tiny_model, build_task_dataset("digits", 4, seed=0, model=tiny_model))
    large = prepare_dataset(tiny_model, build_task_dataset("digits", 64, seed=0, model=tiny_model))
    few, many = sweep_estimate(tiny_model, small, "mean", False), sweep_estimate(tiny_model, large, "mean", False)
    assert few is not None and many is not None
    assert many.seconds / few.seconds == pytest.approx(many.rows / few.rows)
    started = time.perf_counter()
    exact_sweep(tiny_model, large, "mean")
    took = time.perf_counter() - started
    assert many.seconds / 20 < took < many.seconds * 20  # generous: a shared machine's timing varies
    attribution = sweep_estimate(tiny_model, large, "mean", True)
    assert attribution is not None and attribution.job.startswith("the instant estimate")


def test_the_cli_refuses_a_job_over_the_limit_with_the_estimate_and_what_to_do(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HEADSCOPE_MAX_JOB_SECONDS", "0.000001")
    code = main(["ablate", "--model", str(tiny_model_dir), "--task", "digits", "--n-prompts", "4", "--no-cache"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1
    assert "the exact sweep would take about" in error.lower() and "fewer prompts" in error
    assert "--no-time-limit" in error and "HEADSCOPE_MAX_JOB_SECONDS" in error
    code = main(["circuit", "--model", str(tiny_model_dir), "--task", "digits", "--n-prompts", "4", "--no-cache",
                 "--one-pass"])
    assert code == 2 and "circuit search would take about" in capsys.readouterr().err
    code = main(["paths", "--model", str(tiny_model_dir), "--task", "digits", "--n-prompts", "4", "--no-cache",
                 "--sender", "0.1"])
    assert code == 2 and "path patching would take about" in capsys.readouterr().err.lower()


def test_path_patching_work_counts_each_partner_from_its_own_layer(tiny_model):
    from headscope.component import Component
    from headscope.job_time import paths_estimate
    from headscope.path_patching import PathQuery

    encoded = prepare_dataset(tiny_model, build_task_dataset("digits", 4, seed=0, model=tiny_model))
    tokens = encoded.n_prompts * encoded.seq_len  # 3 layers × 4 heads; the run and the source run: 2 × 3 blocks
    early = paths_estimate(tiny_model, encoded, PathQuery(sender=Component(0, 1), receiver=None))
    late = paths_estimate(tiny_model, encoded, PathQuery(sender=Component(1, 1), receiver=None))
    into = paths_estimate(tiny_model, encoded, PathQuery(sender=None, receiver=Component(2, 0)))
    logits = paths_estimate(tiny_model, encoded, PathQuery(sender=None, receiver=None, to_logits=True))
    assert early.token_blocks == tokens * (4 * 2 + 4 * 1 + 6)  # receivers in layers 1 and 2
    assert late.token_blocks == tokens * (4 * 1 + 6)
    assert into.token_blocks == tokens * (8 * 1 + 6)  # 8 senders, each joining at the receiver's layer 2
    assert logits.token_blocks == tokens * 6


def test_no_time_limit_runs_it_anyway(tiny_model_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HEADSCOPE_MAX_JOB_SECONDS", "0.000001")
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path))
    code = main(["ablate", "--model", str(tiny_model_dir), "--task", "digits", "--n-prompts", "4", "--no-cache",
                 "--json", "--no-time-limit"])
    assert code == 0 and '"clean_ld"' in capsys.readouterr().out
