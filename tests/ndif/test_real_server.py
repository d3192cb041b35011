"""headscope's CLI against NDIF's own server (the `ndif` package, started by tests/ndif/serve.sh), compared number by
number with the local nnsight and TransformerLens (bridge) backends on the same weights.

Marked `ndif` (not in the default run): the server needs its own venv (`tests/ndif/serve.sh install`, ~4.5 min,
~1.7 GB) and starts in 1.5-4 min. Run:
    nice -n 19 .venv/bin/python -m pytest tests/ndif -m ndif -q
A test bed already up (serve.sh start) is used as it is; otherwise the session starts one and stops it after.

The embedded model (30 layers × 9 heads) carries the commands a study runs on it, with few prompts; the analyses'
full breadth (every ablation method, every head score, paths, DLA, lens, circuit) runs on the tiny random Llama,
where NDIF's per-job overhead, not the model, sets the time. Every family the nnsight backend serves has its tiny
model deployed: each runs `tokens` and `ablate` three ways.
"""

import pytest

from tests.ndif.realserver import HOSTED, TOLERANCE, three_ways, tiny_local, tiny_remote

pytestmark = pytest.mark.ndif

FAMILIES = ("llama", "mistral", "qwen2", "gemma2", "gpt2", "neox")  # headscope.backends.layouts.LAYOUTS' families
BREADTH = "llama"  # the tiny family the analyses' every option runs on (grouped K/V: 4 query heads over 2 KV heads)
ABLATE = ["ablate", "--task", "digits", "--n-prompts", "2", "--no-cache"]


def _tiny(command: list[str], ndif: dict, tmp_path, family: str = BREADTH) -> dict:
    return three_ways(command, ndif, tmp_path, remote_model=tiny_remote(family), local_model=tiny_local(family))


# ------------------------------------------------------------------------------------------------- embedded model


def test_tokens_match_local_backends(ndif, tmp_path):
    three_ways(["tokens", "The capital of France is", "--answer", " Paris", "--top-k", "10"], ndif, tmp_path)


def test_ablate_with_mlp_rows_matches_local_backends(ndif, tmp_path):
    result = three_ways([*ABLATE, "--method", "zero"], ndif, tmp_path)
    assert result["n_prompts"] == 2 and len(result["mlp_ablated_ld"]) == 30  # every head and every MLP row compared


def test_heads_match_local_backends(ndif, tmp_path):
    three_ways(["heads", "--score", "induction", "--no-cache"], ndif, tmp_path)


def test_lens_and_dla_match_local_backends(ndif, tmp_path):
    three_ways(["lens", "1 2 3 4 ", "--answer", "5", "--contrast", "6"], ndif, tmp_path / "lens")
    three_ways(["dla", "--task", "digits", "--n-prompts", "2", "--no-cache"], ndif, tmp_path / "dla")


def test_patterns_match_local_backends(ndif, tmp_path):
    from tests.ndif.realserver import run_cli

    command = ["patterns", "--prompt", "When Mary and John went to the store, John gave a drink to", "--heads",
               "3.4,5.1"]
    remote = run_cli([*command, "--html", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv"), "--model",
                      HOSTED, "--backend", "nnsight", "--remote"], ndif, tmp_path / "remote")
    local = run_cli([*command, "--html", str(tmp_path / "l.html"), "--csv", str(tmp_path / "l.csv"), "--model",
                     "embedded", "--backend", "bridge"], {}, tmp_path / "local")
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr[-2000:] + local.stderr[-2000:]
    rows_r = (tmp_path / "r.csv").read_text().splitlines()
    rows_l = (tmp_path / "l.csv").read_text().splitlines()
    assert len(rows_r) == len(rows_l) > 1
    compared = 0
    for row_r, row_l in zip(rows_r[1:], rows_l[1:], strict=True):
        for a, b in zip(row_r.split(","), row_l.split(","), strict=True):
            try:
                x, y = float(a), float(b)
            except ValueError:
                assert a == b
                continue
            assert abs(x - y) <= TOLERANCE, (row_r, row_l)
            compared += 1
    assert compared >= len(rows_l) - 1  # at least one attention value a row


# ------------------------------------------------------------------------------- every option, on the tiny Llama


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablate_every_method(ndif, tmp_path, method):
    result = _tiny([*ABLATE, "--method", method], ndif, tmp_path)
    assert len(result["mlp_ablated_ld"]) == 2


@pytest.mark.parametrize("score", ["previous-token", "duplicate-token", "induction", "sequence", "successor",
                                   "copying"])
def test_heads_every_score(ndif, tmp_path, score):
    _tiny(["heads", "--score", score, "--no-cache"], ndif, tmp_path)


@pytest.mark.parametrize("view", [["--sender", "0.1", "--into", "v", "--method", "mean"],
                                  ["--receiver", "1.2", "--into", "q", "--direction", "denoise"],
                                  ["--receiver", "logits"]], ids=["sender-v-mean", "receiver-q-denoise", "logits"])
def test_paths(ndif, tmp_path, view):
    _tiny(["paths", "--task", "digits", "--n-prompts", "4", *view, "--per-prompt", "--no-cache"], ndif, tmp_path)


def test_dla_and_lens(ndif, tmp_path):
    _tiny(["dla", "--task", "digits", "--n-prompts", "4", "--no-cache"], ndif, tmp_path / "dla")
    _tiny(["lens", "1 2 3 4 ", "--answer", "5", "--contrast", "6"], ndif, tmp_path / "lens")


def test_circuit(ndif, tmp_path):
    _tiny(["circuit", "--task", "digits", "--n-prompts", "4", "--method", "mean", "--one-pass", "--no-cache"], ndif,
          tmp_path)


# ---------------------------------------------------------------------------------------- every family's tiny model


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_tokens_and_ablate(ndif, tmp_path, family):
    _tiny(["tokens", "1 2 3 4 ", "--answer", "5", "--top-k", "5"], ndif, tmp_path / "tokens", family)
    if family == "gemma2":
        # the tiny Gemma-2's sliding window is 10 positions (tests/model/tiny_families.py): headscope refuses the
        # digit task's sweep on it locally ("prompts of 16 tokens run on the general path"), so `tokens` only
        return
    _tiny([*ABLATE, "--method", "resample"], ndif, tmp_path / "ablate", family)
