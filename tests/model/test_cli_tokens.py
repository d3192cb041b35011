"""`python -m headscope tokens`: the JSON contract, the table, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest


def _run(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "headscope", "tokens", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def test_json_has_the_documented_fields():
    done = _run("1 2 3 4 ", "--answer", "5", "--contrast", "4", "--top-k", "3", "--json")
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


def test_json_without_answer_has_nulls_and_the_whitespace_warning():
    out = json.loads(_run("1 2 3 4", "--json").stdout)
    assert out["answer"] is None and out["logit_diff"] is None
    assert any("whitespace token" in w for w in out["warnings"])


def test_table_output_names_positions_and_answers():
    done = _run("1 2 3 4 ", "--answer", "5")
    assert done.returncode == 0
    assert "pos" in done.stdout and "<|im_start|>" in done.stdout
    assert "answer '5'" in done.stdout and "rank 1" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    ([""], "empty"),
    (["x", "--top-k", "0"], "top-k"),
    (["x", "--position", "5"], "outside the prompt"),
    (["x", "--model", "/no/such/folder"], "does not exist"),
    (["x", "--device", "cuda"], "CUDA"),
    (["x", "--bogus"], "unrecognized arguments"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    done = _run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
