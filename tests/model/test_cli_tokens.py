"""`python -m headscope tokens`: the JSON contract, the table, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest
import torch

from headscope.cli import main
from tests.cli_in_process import run_cli
from tests.pinned import cpu_env


def _run(*args):
    env = cpu_env()
    return subprocess.run([sys.executable, "-m", "headscope", "tokens", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


@pytest.fixture
def tokens(capsys, cli_shares_the_embedded_model):
    """`headscope tokens ARGS` in this process, on the session's embedded model (the table case below runs the real
    process)."""
    return lambda *args: run_cli(capsys, ["tokens", *args])


def test_json_has_the_documented_fields(tokens):
    done = tokens("1 2 3 4 ", "--answer", "5", "--contrast", "4", "--top-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["model"] == "SmolLM2-135M-Instruct"
    assert [t["position"] for t in out["tokens"]] == list(range(9))
    assert out["tokens"][0]["special"] is True and out["tokens"][2]["display"] == "·"
    assert set(out["tokens"][1]) >= {"position", "id", "text", "display", "special"}
    assert len(out["top_k"]) == 3 and out["top_k"][0]["text"] == "5"
    assert set(out["top_k"][0]) >= {"id", "text", "logit", "prob"}
    assert out["answer"]["rank"] == 1 and out["answer"]["ids"] == [out["top_k"][0]["id"]]
    assert set(out["answer"]) >= {"text", "ids", "rank", "logit", "prob"}
    assert out["logit_diff"] == pytest.approx(out["answer"]["logit"] - out["contrast"]["logit"])
    assert out["warnings"] == []


def test_json_without_answer_has_nulls_and_the_whitespace_warning(tokens):
    out = json.loads(tokens("1 2 3 4", "--json").stdout)
    assert out["answer"] is None and out["logit_diff"] is None
    assert any("whitespace token" in w for w in out["warnings"])


def test_table_output_names_positions_and_answers():
    done = _run("1 2 3 4 ", "--answer", "5")
    assert done.returncode == 0
    assert "pos" in done.stdout and "<|im_start|>" in done.stdout
    assert "answer '5'" in done.stdout and "rank 1" in done.stdout


# beyond the last CUDA device on any machine: "not available" on a CPU-only one, "only N visible" on a GPU one
MISSING_CUDA_DEVICE = f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize(("args", "message"), [
    ([""], "empty"),
    (["x", "--top-k", "0"], "top-k"),
    (["x", "--position", "5", "--device", "cpu"], "outside the prompt"),
    (["x", "--model", "/no/such/folder"], "does not exist"),
    (["x", "--device", MISSING_CUDA_DEVICE], "CUDA"),
])
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    """In-process (headscope.cli.main, as `python -m headscope` calls it): a process per case would spend seconds
    importing torch for a one-line error; the real process's exit code and stderr are checked in
    test_cli_bad_input.py's real-process cases and below."""
    code = main(["tokens", *args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_an_unknown_option_exits_2_with_one_usage_line_in_a_real_process():
    done = _run("x", "--bogus")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unrecognized arguments" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
