"""Sweeps as the app and the CLI run them: encoding checks, the results cache, the command line."""

import json

import numpy as np
import pytest

from headscope.ablation import run_sweep
from headscope.errors import InputError
from headscope.results_cache import ResultsCache
from headscope.tasks import Dataset, PromptItem, build_task_dataset, encode_dataset, load_dataset_text
from tests.cli_in_process import run_cli


def test_uneven_token_lengths_name_the_rows(embedded_model):
    text = json.dumps([
        {"prompt": "1 2 3 4 ", "correct": "5", "incorrect": "4"},
        {"prompt": "2 3 4 5 ", "correct": "6", "incorrect": "5"},
        {"prompt": "10 11 12 13 ", "correct": "1", "incorrect": "3"},
    ])
    with pytest.raises(InputError, match=r"most have 9 tokens, but row 3 \(13 tokens\) differ"):
        encode_dataset(embedded_model, load_dataset_text(text, "d.json"))


def test_corrupted_prompt_of_another_length_is_named(embedded_model):
    dataset = Dataset("d.json", (PromptItem("1 2 3 4 ", "5", "4", "7 2 9 1 "),
                                 PromptItem("2 3 4 5 ", "6", "5", "7 2 9 ")))
    with pytest.raises(InputError, match=r"row 2 \(9 tokens, corrupted 7\)"):
        encode_dataset(embedded_model, dataset)


def test_answers_sharing_a_first_token_are_refused(embedded_model):
    dataset = Dataset("d.json", (PromptItem("9 10 11 ", "12", "13"),))
    with pytest.raises(InputError, match="same token"):
        encode_dataset(embedded_model, dataset)


def test_positions_count_the_real_input_with_bos(embedded_model):
    encoded = encode_dataset(embedded_model, build_task_dataset("digits", 2, model=embedded_model),
                             drop_uneven=True)
    assert encoded.token_labels[0] == embedded_model.tokenizer.bos_token
    assert encoded.seq_len == len(embedded_model.input_ids(encoded.dataset.items[0].prompt)) == 9
    assert encoded.member_positions[0] == (1, 3, 5, 7)


def test_cache_round_trip_and_corrupted_file_recomputed(tiny_model, tmp_path):
    cache = ResultsCache(tmp_path)
    dataset = build_task_dataset("digits", 4, model=tiny_model)
    first = run_sweep(tiny_model, dataset, "mean", cache=cache)
    assert not first.cached
    second = run_sweep(tiny_model, dataset, "mean", cache=cache)
    assert second.cached and second.seconds == first.seconds
    np.testing.assert_array_equal(second.ablated_ld, first.ablated_ld)
    np.testing.assert_array_equal(second.mlp_ablated_ld, first.mlp_ablated_ld)
    # another method, another seed (other prompts) or the estimate are other results
    assert not run_sweep(tiny_model, dataset, "zero", cache=cache).cached
    assert not run_sweep(tiny_model, build_task_dataset("digits", 4, seed=9, model=tiny_model), "mean",
                         cache=cache).cached
    assert not run_sweep(tiny_model, dataset, "mean", estimate=True, cache=cache).cached
    # a corrupt file is detected, never shown, and recomputed
    path = cache.path("ablation", first.key)
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    third = run_sweep(tiny_model, dataset, "mean", cache=cache)
    assert not third.cached
    np.testing.assert_allclose(third.ablated_ld, first.ablated_ld, atol=1e-5)  # LDs ~1: float32 batch order
    assert run_sweep(tiny_model, dataset, "mean", cache=cache).cached


@pytest.fixture
def _cli(capsys, monkeypatch):
    """`headscope ARGS` in this process (tests/cli_in_process.py), with caches in the test's own folder."""

    def run(*args, cache_dir):
        monkeypatch.setenv("HEADSCOPE_CACHE_DIR", str(cache_dir))
        monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(cache_dir / "results"))
        return run_cli(capsys, [*args, "--device", "cpu"])  # pinned, as the subprocesses were

    return run


def test_cli_ablate_json_and_the_cache_the_app_reads(tiny_model, tiny_model_dir, tmp_path, _cli):
    done = _cli("ablate", "--task", "digits", "--n-prompts", "4", "--method", "resample", "--model",
                str(tiny_model_dir), "--json", cache_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"model", "task", "method", "n_prompts", "clean_ld", "corrupt_ld", "layers", "heads", "ablated_ld",
            "percent_of_clean", "mlp_ablated_ld", "seconds", "cached"} <= set(out)
    assert (out["layers"], out["heads"], out["n_prompts"], out["cached"]) == (3, 4, 4, False)
    assert np.array(out["ablated_ld"]).shape == (3, 4) and len(out["mlp_ablated_ld"]) == 3
    np.testing.assert_allclose(np.array(out["percent_of_clean"]),
                               100 * np.array(out["ablated_ld"]) / out["clean_ld"], rtol=1e-9)
    # the app's path finds it: same model, same prompts, same method
    from_app = run_sweep(tiny_model, build_task_dataset("digits", 4, model=tiny_model), "resample",
                         cache=ResultsCache(tmp_path / "results"))
    assert from_app.cached
    np.testing.assert_allclose(from_app.ablated_ld, np.array(out["ablated_ld"]))
    again = json.loads(_cli("ablate", "--task", "digits", "--n-prompts", "4", "--method", "resample", "--model",
                            str(tiny_model_dir), "--json", cache_dir=tmp_path).stdout)
    assert again["cached"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["ablate", "--task", "weeks"], "Unknown task"),
    (["ablate", "--task", "digits", "--method", "half"], "Unknown ablation method"),
    (["ablate", "--task", "digits", "--n-prompts", "0"], "--n-prompts"),
    (["ablate"], "one of the arguments --task --dataset is required"),
    (["ablate", "--task", "digits", "--dataset", "x.csv"], "not allowed with"),
])
def test_cli_bad_input_exits_2_with_one_line(args, message, tmp_path, _cli):
    done = _cli(*args, cache_dir=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_cli_bad_dataset_exits_2_naming_rows(tmp_path, tiny_model_dir, _cli):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "1 2 3 4 ", "correct": "5", "incorrect": "4"},
                               {"prompt": "1 2 ", "correct": "3", "incorrect": "2"}]))
    done = _cli("ablate", "--dataset", str(bad), "--method", "zero", "--model", str(tiny_model_dir),
                cache_dir=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "row 2 (5 tokens)" in lines[0]


def test_a_stored_sweep_this_version_cannot_read_is_skipped_in_listings(tiny_model, tmp_path):
    """The attention page lists cached sweeps on every run: an entry in an older payload format (same model) must
    not break it."""
    from headscope.ablation import CACHE_KIND, cached_sweeps

    cache = ResultsCache(tmp_path)
    sweep = run_sweep(tiny_model, build_task_dataset("digits", 4, model=tiny_model), "mean", cache=cache)
    cache.store(CACHE_KIND, {**sweep.key, "engine": "an older engine"}, {"ablated": [[0.0]]})
    assert len(cache.entries(CACHE_KIND, tiny_model.identity)) == 2  # both are valid files of this model
    listed = cached_sweeps(tiny_model, cache)
    assert [s.key for s in listed] == [sweep.key]
    np.testing.assert_array_equal(listed[0].ablated_ld, sweep.ablated_ld)


def test_a_negative_clean_ld_comes_with_a_caution_about_percent_of_clean(embedded_model, tmp_path):
    # the 135 M model prefers the wrong letter: '% of clean' then reads upside down, and the result says so
    cache = ResultsCache(tmp_path)
    letters = run_sweep(embedded_model, build_task_dataset("letters", 8, model=embedded_model), "zero", estimate=True,
                        cache=cache)
    assert letters.clean_ld <= 0 and "at or below 0" in letters.caution
    digits = run_sweep(embedded_model, build_task_dataset("digits", 8, model=embedded_model), "zero", estimate=True,
                       cache=cache)
    assert digits.clean_ld > 0 and digits.caution is None
