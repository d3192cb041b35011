"""`python -m headscope circuit`: the JSON contract, the cache the app reads, one-line errors with exit code 2."""

import json

import pytest
import torch

from headscope.ablation import prepare_dataset
from headscope.circuit import load_circuit
from headscope.results_cache import ResultsCache
from headscope.tasks import build_task_dataset, load_dataset_file
from tests.cli_in_process import one_line_error, run_cli


@pytest.fixture
def _cli(capsys, monkeypatch):
    """`headscope circuit ARGS` in this process (tests/cli_in_process.py), with caches in the test's own folder."""

    def run(*args, cache_dir):
        monkeypatch.setenv("HEADSCOPE_CACHE_DIR", str(cache_dir))
        monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(cache_dir / "results"))
        return run_cli(capsys, ["circuit", *args, "--device", "cpu"])  # pinned, as the subprocesses were

    return run


@pytest.fixture(scope="module")
def ordered_csv(tiny_model, tmp_path_factory):
    """Digit prompts with each row's answers ordered so that the tiny random model prefers the first (LD > 0)."""
    encoded = prepare_dataset(tiny_model, build_task_dataset("digits", 6, seed=1, model=tiny_model))
    logits = tiny_model.last_logits(encoded.clean)
    rows = torch.arange(encoded.n_prompts)
    diff = logits[rows, encoded.correct_ids] - logits[rows, encoded.incorrect_ids]
    path = tmp_path_factory.mktemp("data") / "ordered.json"
    items = []
    for i, item in enumerate(encoded.dataset.items):
        correct, incorrect = (item.correct, item.incorrect) if diff[i] > 0 else (item.incorrect, item.correct)
        items.append({"prompt": item.prompt, "correct": correct, "incorrect": incorrect,
                      "corrupted_prompt": item.corrupted_prompt})
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_json_has_the_documented_fields_and_feeds_the_app(tiny_model, tiny_model_dir, ordered_csv, tmp_path, _cli):
    done = _cli("--dataset", str(ordered_csv), "--threshold", "99", "--model", str(tiny_model_dir), "--json",
                cache_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"model", "task", "method", "threshold", "clean_ld", "score", "heads", "mlps", "removed", "passes",
            "seconds", "cached"} <= set(out)
    assert out["task"] == "ordered.json" and out["method"] == "mean" and out["threshold"] == 99.0
    assert out["cached"] is False and out["passes"] >= 2 and out["score"] >= 99.0
    kept = {(layer, head) for layer, head in out["heads"]} | {(layer, None) for layer in out["mlps"]}
    removed = [(r["layer"], r["head"]) for r in out["removed"]]
    assert len(kept) + len(removed) == 3 * 5 and not kept & set(removed)
    assert all(r["score_after"] >= 99.0 for r in out["removed"])
    first_pass = [(r["layer"], r["head"]) for r in out["removed"] if r["pass"] == 1]
    visiting = sorted(first_pass, key=lambda c: (-c[0], c[1] is not None, c[1] or 0))
    assert first_pass == visiting  # a pass goes from the last layer down, the MLP before heads 0 … H−1
    assert out["score"] == pytest.approx(out["removed"][-1]["score_after"])
    # the app's path finds it: same model, same dataset, method, threshold and passes option
    encoded = prepare_dataset(tiny_model, load_dataset_file(ordered_csv))
    stored = load_circuit(tiny_model, encoded, "mean", 99.0, False, cache=ResultsCache(tmp_path / "results"))
    assert stored is not None and sorted((h.layer, h.head) for h in stored.heads) == sorted(map(tuple, out["heads"]))
    again = json.loads(_cli("--dataset", str(ordered_csv), "--threshold", "99", "--model", str(tiny_model_dir),
                            "--json", cache_dir=tmp_path).stdout)
    assert again["cached"] is True and again["heads"] == out["heads"]
    one = json.loads(_cli("--dataset", str(ordered_csv), "--threshold", "99", "--one-pass", "--model",
                          str(tiny_model_dir), "--json", cache_dir=tmp_path).stdout)
    assert one["cached"] is False and one["passes"] == 1  # another passes option is another result


def test_table_output_and_the_estimate_label(tiny_model_dir, ordered_csv, tmp_path, _cli):
    done = _cli("--dataset", str(ordered_csv), "--method", "zero", "--threshold", "90", "--model",
                str(tiny_model_dir), cache_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "circuit:" in done.stdout and "heads:" in done.stdout and "exact" in done.stdout
    estimate = _cli("--dataset", str(ordered_csv), "--threshold", "90", "--estimate", "--model",
                    str(tiny_model_dir), cache_dir=tmp_path)
    assert estimate.returncode == 0 and "ESTIMATE" in estimate.stdout


def test_a_negative_clean_ld_is_refused_in_one_line(tiny_model_dir, tmp_path, _cli):
    done = _cli("--task", "digits", "--n-prompts", "6", "--seed", "1", "--model", str(tiny_model_dir),
                cache_dir=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "≤ 0" in lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "weeks"], "Unknown task"),
    (["--task", "digits", "--method", "half"], "Unknown ablation method"),
    (["--task", "digits", "--threshold", "150"], "threshold"),
    (["--task", "digits", "--threshold", "nan"], "threshold"),
    (["--task", "digits", "--step", "3"], "only to the step task"),
    (["--task", "step", "--step", "0"], "step must be from 1 to 20"),
    (["--dataset", "x.csv", "--step", "2"], "--step applies"),
    (["--task", "digits", "--n-prompts", "0"], "--n-prompts"),
    (["--dataset", "/no/such/file.csv"], "Cannot read dataset"),
    ([], "one of the arguments --task --dataset is required"),
])
def test_bad_input_exits_2_with_one_line_before_the_model_loads(capsys, args, message):
    # in-process (tests/cli_in_process.py); a model load would fail differently
    assert message in one_line_error(capsys, ["circuit", *args, "--model", "/no/such/model"])
