"""`python -m headscope paths`: the JSON keys the README documents, the numbers the library computes, the table, and
one-line refusals for queries without valid paths (in this process; the tiny random GQA Llama in a local folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from headscope.cli import main
from tests.cli_in_process import one_line_error

DIGITS = [{"prompt": f"{i} {i + 1} {i + 2} {i + 3} ", "correct": str(i + 4), "incorrect": str(i + 3),
           "corrupted_prompt": bad} for i, bad in zip(range(1, 4), ["3 1 4 2 ", "6 4 3 5 ", "8 4 6 5 "], strict=True)]
JSON_KEYS = {"model", "task", "sender", "receiver", "into", "direction", "method", "clean_ld", "corrupt_ld", "ld",
             "seconds", "cached", "to_logits_ld", "kv_grouped", "n_prompts", "backend"}
PER_PROMPT_KEYS = {"per_prompt_ld", "per_prompt_run_ld", "change_low", "change_high", "crosses_zero", "in_top_k",
                   "bootstrap"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "digits.json"
    path.write_text(json.dumps(DIGITS))
    return str(path)


def _common(tiny_model_dir, dataset) -> list[str]:
    return ["paths", "--dataset", dataset, "--model", str(tiny_model_dir), "--device", "cpu"]


def test_json_keys_and_grid(tiny_model_dir, dataset, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))
    assert main([*_common(tiny_model_dir, dataset), "--sender", "0.1", "--into", "k", "--json",
                 "--per-prompt"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == JSON_KEYS | PER_PROMPT_KEYS
    documented = "\n".join((REPO / "docs" / name).read_text(encoding="utf-8")
                           for name in ("path-patching.md", "intervals.md"))
    assert all(f"`{key}`" in documented for key in set(data)), "a --json field the documentation never names"
    stated = (data["sender"], data["receiver"], data["into"], data["direction"], data["method"])
    assert stated == ("0.1", None, "k", "noise", "resample")
    ld = data["ld"]
    assert len(ld) == 3 and all(len(row) == 4 for row in ld)
    assert all(v is None for v in ld[0]) and all(v is not None for row in ld[1:] for v in row)
    assert data["kv_grouped"] is True and ld[1][0] == ld[1][1]  # 4 query heads over 2 KV heads
    per_prompt = np.array(data["per_prompt_ld"], dtype=float)
    assert per_prompt.shape == (len(DIGITS), 3, 4)
    assert np.allclose(np.nanmean(per_prompt, axis=0)[1:], np.array(ld[1:], dtype=float), atol=1e-9)
    assert data["cached"] is False
    assert data["bootstrap"]["unit"] == "kv-group" and data["bootstrap"]["k"] == 4  # 2 layers × 2 KV groups
    assert data["in_top_k"][1][0] == data["in_top_k"][1][1] and data["change_low"][0] == [None] * 4
    assert main([*_common(tiny_model_dir, dataset), "--receiver", "logits", "--json"]) == 0
    logits = json.loads(capsys.readouterr().out)
    assert logits["receiver"] == "logits" and all(v is not None for row in logits["ld"] for v in row)
    assert "per_prompt_run_ld" not in logits and "change_low" not in logits


def test_per_prompt_intervals_equal_a_bootstrap_of_the_printed_values(tiny_model_dir, dataset, capsys, tmp_path,
                                                                      monkeypatch):
    """Every head → logits (12 paths, the top-10 not all of them): the intervals and top-10 shares are those of a
    bootstrap written here over (per_prompt_ld − per_prompt_run_ld), the draw of docs/confidence.md; the run's LDs
    average to the clean LD the path run itself measured."""
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))
    assert main([*_common(tiny_model_dir, dataset), "--receiver", "logits", "--json", "--per-prompt"]) == 0
    data = json.loads(capsys.readouterr().out)
    run = np.array(data["per_prompt_run_ld"])
    assert run.shape == (len(DIGITS),) and run.mean() == pytest.approx(data["clean_ld"], abs=1e-5)
    effects = np.array(data["per_prompt_ld"], dtype=float) - run[:, None, None]  # [prompt, layer, head]
    assert data["bootstrap"] == {"level": 0.95, "resamples": 1000, "seed": 0, "k": 10, "unit": "head"}
    draws = np.random.default_rng(0).integers(0, len(run), size=(1000, len(run)))
    means = effects[draws].mean(axis=1).reshape(1000, -1)  # [resample, cell]
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(np.array(data["change_low"]).ravel(), low, atol=1e-9)
    np.testing.assert_allclose(np.array(data["change_high"]).ravel(), high, atol=1e-9)
    assert np.array(data["crosses_zero"]).ravel().tolist() == ((low <= 0) & (high >= 0)).tolist()
    share = np.zeros(means.shape[1])
    for sample in np.abs(means):
        share[np.argsort(-sample)[:10]] += 1
    np.testing.assert_allclose(np.array(data["in_top_k"]).ravel(), share / 1000, atol=1e-12)

    assert main([*_common(tiny_model_dir, dataset), "--receiver", "logits", "--per-prompt", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "confidence: 95% percentile bootstrap over 3 prompts, 1000 resamples, seed 0" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit() and "[" in line]
    assert len(rows) == 3 and all("%" in row for row in rows)


def test_table_lists_the_top_paths(tiny_model_dir, dataset, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))
    assert main([*_common(tiny_model_dir, dataset), "--receiver", "2.3", "--top", "3", "--method", "zero"]) == 0
    out = capsys.readouterr().out
    assert "every head → 2.3 (q input)" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3 and all(int(row[0].split(".")[0]) < 2 for row in rows)


@pytest.mark.parametrize("args,message", [
    (["--sender", "2.0"], "last layer"),
    pytest.param(["--receiver", "0.3"], "layer 0", marks=pytest.mark.slow),
    pytest.param(["--sender", "1.9"], "No head 1.9", marks=pytest.mark.slow),
    (["--sender", "mlp1"], "must name a head"),
    (["--sender", "x.y"], "not a head"),
    (["--sender", "0.1", "--direction", "denoise", "--method", "zero"], "noising only"),
    (["--sender", "0.1", "--method", "median"], "median"),
])
def test_bad_input_is_one_line(tiny_model_dir, dataset, capsys, args, message):
    assert message in one_line_error(capsys, [*_common(tiny_model_dir, dataset), *args])


def test_notebook_api_matches_the_command(tiny_model, tiny_model_dir, dataset, capsys, tmp_path, monkeypatch):
    """hs's Model.paths gives the numbers and JSON of `headscope paths` (the same cached result)."""
    from headscope.api import Model
    from headscope.loading import ModelRequest

    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))
    shown = Model(tiny_model, ModelRequest(str(tiny_model_dir), device="cpu")).paths(
        dataset=dataset, receiver=(2, 1), into="v", method="mean")
    assert main([*_common(tiny_model_dir, dataset), "--receiver", "2.1", "--into", "v", "--method", "mean",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cached"] is True  # the notebook's run stored it under the same key
    assert shown.to_json()["ld"] == printed["ld"]
    frame = shown.to_frame()
    assert len(frame) == 2 * 4 and set(frame["layer"]) == {0, 1}
    # .confidence() gives the intervals and top-k shares that --per-prompt prints (KV groups counted once)
    assert main([*_common(tiny_model_dir, dataset), "--receiver", "2.1", "--into", "v", "--method", "mean",
                 "--json", "--per-prompt"]) == 0
    printed = json.loads(capsys.readouterr().out)
    confidence = shown.confidence()
    assert np.array(printed["per_prompt_run_ld"]).tolist() == shown.run_prompt_ld.tolist()
    for key, got in (("change_low", confidence.intervals.low), ("change_high", confidence.intervals.high),
                     ("in_top_k", confidence.stability.frequency)):
        np.testing.assert_allclose(np.array(printed[key], dtype=float)[:2], got[:2], atol=1e-12)
    # a receiver's K/V input is its group's, but each cell is its own sender: every sender counts
    assert printed["bootstrap"] == {"level": 0.95, "resamples": 1000, "seed": 0, "k": 8, "unit": "head"}
    assert confidence.stability.k == 8 and int(confidence.stability.in_top.sum()) == 8
