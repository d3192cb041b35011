"""`ablate --per-prompt`: the JSON gains each prompt's LDs (named in docs/confidence.md), the table gains bootstrap
intervals; `--unit kv-group` sweeps whole KV groups; bad combinations are one line and exit 2."""

import json
from pathlib import Path

import numpy as np
import pytest

from headscope.cli import main
from tests.cli_in_process import one_line_error
from tests.model.test_cli_json_schemas import DOCUMENTED

DOCS = Path(__file__).resolve().parents[2] / "docs" / "confidence.md"
PER_PROMPT = {"per_prompt_ld", "per_prompt_mlp_ld", "per_prompt_clean_ld"}


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_per_prompt_json_and_kv_groups(capsys, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path))
    base = ["ablate", "--task", "digits", "--n-prompts", "4", "--method", "zero", "--model", str(tiny_model_dir),
            "--device", "cpu"]
    code, out, err = _run(capsys, [*base, "--per-prompt", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == DOCUMENTED["ablate"] | PER_PROMPT
    docs = DOCS.read_text(encoding="utf-8")
    assert all(f"`{name}`" in docs for name in PER_PROMPT | {"unit"})
    per_prompt = np.asarray(data["per_prompt_ld"])
    assert per_prompt.shape == (4, data["layers"], data["heads"]) == (4, 3, 4)
    np.testing.assert_allclose(per_prompt.mean(0), data["ablated_ld"], atol=1e-9)
    np.testing.assert_allclose(np.mean(data["per_prompt_clean_ld"]), data["clean_ld"], atol=1e-9)

    code, out, err = _run(capsys, [*base, "--json"])  # from the cache, without the per-prompt fields
    assert code == 0 and set(json.loads(out)) == DOCUMENTED["ablate"] and json.loads(out)["cached"]

    code, out, err = _run(capsys, [*base, "--per-prompt"])
    assert code == 0, err
    assert "95% percentile bootstrap over 4 prompts, 1000 resamples, seed 0" in out
    assert "in top-10" in out

    code, out, err = _run(capsys, [*base, "--unit", "kv-group", "--json"])
    groups = json.loads(out)
    assert code == 0 and groups["unit"] == "kv-group" and groups["heads"] == 2  # 4 query heads over 2 KV heads
    assert not groups["cached"]  # the unit is part of the cache key


@pytest.mark.parametrize("argv, message", [
    (["--estimate", "--per-prompt"], "--per-prompt needs the exact sweep"),
    (["--unit", "pair"], "invalid choice: 'pair'"),
])
def test_bad_combinations_are_one_line(capsys, argv, message):
    assert message in one_line_error(capsys, ["ablate", "--task", "digits", *argv])


def test_the_notebook_api_gives_a_sweeps_confidence(tiny_model, tiny_model_dir, tmp_path, monkeypatch):
    from headscope.api import Model
    from headscope.confidence import ranking_confidence
    from headscope.errors import InputError
    from headscope.loading import ModelRequest

    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path))
    model = Model(tiny_model, ModelRequest(str(tiny_model_dir), device="cpu"))
    sweep = model.sweep(task="digits", n_prompts=4, method="zero", unit="kv-group")
    assert sweep.result.unit == "kv-group" and sweep.result.ablated_ld.shape == (3, 2)
    got = sweep.confidence(k=3, resamples=200, seed=5)
    expected = ranking_confidence(sweep.result.per_prompt_change, k=3, resamples=200, seed=5)
    assert np.array_equal(got.intervals.low, expected.intervals.low)
    assert got.stability.k == 3 and got.intervals.seed == 5
    with pytest.raises(InputError, match="no per-prompt values"):
        model.sweep(task="digits", n_prompts=4, method="zero", estimate=True).confidence()
