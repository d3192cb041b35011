"""`python -m headscope heads` and `patterns` as a user runs them: offline, the embedded model; in this process on the
session's copy of it (tests/cli_in_process.py: a process per command would import torch and load the model again)."""

import json
from pathlib import Path

import pytest

from headscope.patterns import external_references
from tests.cli_in_process import one_line_error, run_cli


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A results cache of its own, so the first run really computes (the embedded model is converted already)."""
    return tmp_path_factory.mktemp("cli-results")


@pytest.fixture
def cli(capsys, monkeypatch, results_dir: Path, cli_shares_the_embedded_model):
    """`headscope ARGS` in this process, writing its results to this module's own folder."""
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(results_dir))
    return lambda *args: run_cli(capsys, list(args))


def test_heads_json_has_the_documented_fields_and_a_layer_by_head_grid(cli):
    done = cli("heads", "--score", "successor", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert {"model", "score", "layers", "heads", "scores", "seconds"} <= set(payload)
    assert payload["model"] == "SmolLM2-135M-Instruct" and payload["score"] == "successor"
    assert (payload["layers"], payload["heads"]) == (30, 9)
    assert len(payload["scores"]) == 30 and all(len(row) == 9 for row in payload["scores"])
    assert payload["cached"] is False
    assert [entry["name"] for entry in payload["lists"] if not entry["usable"]] == ["numbers 1–200"]
    again = json.loads(cli("heads", "--score", "successor", "--json").stdout)
    assert again["cached"] is True and again["scores"] == payload["scores"]


def test_heads_on_a_prompt_prints_a_table_of_top_heads(cli):
    done = cli("heads", "--score", "previous-token", "--prompt", "one two three four five", "--top", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "score: previous-token" in lines[0]
    assert "the prompt 'one two three four five'" in lines[1]
    table = lines[lines.index("top 3 heads:") + 2:]
    assert len(table) == 3
    scores = [float(line.split()[-1]) for line in table]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5


def test_patterns_writes_an_offline_html_file_and_csv(cli, tmp_path):
    html_file, csv_file = tmp_path / "view.html", tmp_path / "values.csv"
    done = cli("patterns", "--prompt", "1 2 3 4 ", "--heads", "4.4,2.1", "--html", str(html_file),
               "--csv", str(csv_file), "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["heads"] == ["4.4", "2.1"] and payload["kv_heads"] == [1, 0]
    assert payload["tokens"][0] == "<|im_start|>" and len(payload["tokens"]) == 9
    page = html_file.read_text()
    assert page.startswith("<!doctype html>") and external_references(page) == []
    assert csv_file.read_text().splitlines()[0] == "layer,head,kv_head,dest,dest_token,src,src_token,weight"


@pytest.mark.parametrize("heads,message", [
    ("3-24", "Cannot read '3-24' as a head"),
    ("", "No heads given"),
    ("31.0", "Head 31.0 is out of range: SmolLM2-135M-Instruct has layers 0–29 and heads 0–8."),
    ("2.1, 2.9, 40.0", "Heads 2.9, 40.0 are out of range"),
])
def test_bad_head_lists_exit_2_with_one_line(capsys, tmp_path, heads, message, cli_shares_the_embedded_model):
    target = tmp_path / "never.html"
    line = one_line_error(capsys, ["patterns", "--prompt", "1 2 3", "--heads", heads, "--html", str(target),
                                   "--device", "cpu"])
    assert line.startswith("headscope: error: ") and message in line
    assert not target.exists()


@pytest.mark.parametrize("args,message", [
    (["heads", "--score", "bogus"], "invalid choice: 'bogus'"),
    (["heads", "--score", "sequence", "--prompt", "1 2 3"], "--prompt applies to the pattern scores"),
    (["patterns", "--prompt", "1 2", "--heads", "1.1"], "the following arguments are required: --html"),
    (["patterns", "--prompt", "1 2", "--heads", "1.1", "--html", "/no/such/folder/x.html"], "does not exist"),
    (["patterns", "--prompt", "1 2", "--heads", "1.1", "--html", "x.html", "--single", "2.2"], "not among --heads"),
])
def test_bad_options_exit_2_with_one_line(capsys, args, message):
    assert message in one_line_error(capsys, args)
