"""Every command's `--json` object has exactly the fields the documentation names (README's "Command line" section
and the page sections it links), no field missing and none unnamed; and each field is named in the documentation.

In-process (headscope.cli.main, as `python -m headscope` calls it) on the tiny model, except `circuit`, whose search
needs a model that continues digits (the embedded one, as an estimate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from headscope.cli import main

REPO = Path(__file__).resolve().parents[2]

# the documented fields, as README.md lists them (every command's object also carries `backend`)
DOCUMENTED = {
    "tokens": {"model", "tokens", "top_k", "answer", "logit_diff", "warnings", "position", "contrast", "notes",
               "backend"},
    "tokens.tokens[]": {"position", "id", "text", "display", "special"},
    "tokens.top_k[]": {"id", "text", "logit", "prob", "logprob"},
    "tokens.answer": {"text", "ids", "rank", "logit", "prob", "multi_token", "alternate"},
    "ablate": {"model", "task", "method", "n_prompts", "clean_ld", "corrupt_ld", "layers", "heads", "ablated_ld",
               "percent_of_clean", "mlp_ablated_ld", "seconds", "cached", "estimate", "seq_len", "token_labels",
               "first_prompt", "notes", "unit", "backend"},
    "heads": {"model", "score", "layers", "heads", "scores", "seconds", "cached", "compute_seconds", "inputs", "lists",
              "notes", "backend"},
    "circuit": {"model", "task", "method", "threshold", "clean_ld", "score", "heads", "mlps", "removed", "passes",
                "seconds", "cached", "circuit_ld", "kept_effects", "one_pass", "estimate", "n_layers", "n_heads",
                "n_prompts", "seq_len", "token_labels", "first_prompt", "evaluations", "batches", "path", "backend",
                "notes"},
    "circuit.removed[]": {"component", "score_after", "layer", "head", "ld_after", "pass"},
    "patterns": {"model", "backend", "prompt", "heads", "kv_heads", "tokens", "html", "csv", "seconds"},
    "ablate --per-prompt": {"model", "task", "method", "n_prompts", "clean_ld", "corrupt_ld", "layers", "heads",
                            "ablated_ld", "percent_of_clean", "mlp_ablated_ld", "seconds", "cached", "estimate",
                            "seq_len", "token_labels", "first_prompt", "notes", "unit", "backend", "per_prompt_ld",
                            "per_prompt_mlp_ld", "per_prompt_clean_ld"},
    "paths": {"model", "task", "sender", "receiver", "into", "direction", "method", "clean_ld", "corrupt_ld", "ld",
              "seconds", "cached", "to_logits_ld", "kv_grouped", "n_prompts", "backend"},
    "dla": {"model", "task", "clean_ld", "head_dla", "mlp_dla", "embed_dla", "bias_dla", "seconds", "cached", "total",
            "layers", "heads", "n_prompts", "seq_len", "soft_cap", "notes", "backend"},
    "lens": {"layers", "first_top1_layer", "model", "backend", "prompt", "answer", "contrast", "answer_id",
             "contrast_id"},
    "lens.layers[]": {"layer", "rank", "prob", "logit_diff"},
}
NOT_YET_IN_THE_README: set[str] = set()


def _json(capsys, argv: list[str]) -> dict:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _docs_text() -> str:
    texts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in texts if path.is_file())


def _assert_documented(name: str, got: set[str]) -> None:
    assert got == DOCUMENTED[name], (f"{name}: undocumented {sorted(got - DOCUMENTED[name])}, "
                                     f"missing {sorted(DOCUMENTED[name] - got)}")
    if name.split(".")[0] in NOT_YET_IN_THE_README:
        return
    docs = _docs_text()
    unnamed = [field for field in got if not re.search(rf"`{re.escape(field)}`", docs)]
    assert not unnamed, f"{name}: fields the documentation never names: {unnamed}"


def test_tokens_json(capsys, tiny_model_dir):
    out = _json(capsys, ["tokens", "1 2 3 4 ", "--answer", "5", "--contrast", "4", "--top-k", "3", "--model",
                         str(tiny_model_dir), "--device", "cpu", "--json"])
    _assert_documented("tokens", set(out))
    _assert_documented("tokens.tokens[]", set(out["tokens"][0]))
    _assert_documented("tokens.top_k[]", set(out["top_k"][0]))
    _assert_documented("tokens.answer", set(out["answer"]))
    assert out["backend"] == "bridge"


def test_ablate_json(capsys, tiny_model_dir):
    out = _json(capsys, ["ablate", "--task", "digits", "--n-prompts", "3", "--method", "zero", "--estimate",
                         "--no-cache", "--model", str(tiny_model_dir), "--device", "cpu", "--json"])
    _assert_documented("ablate", set(out))
    assert len(out["ablated_ld"]) == out["layers"] == 3 and len(out["ablated_ld"][0]) == out["heads"] == 4


def test_heads_json(capsys, tiny_model_dir):
    out = _json(capsys, ["heads", "--score", "previous-token", "--no-cache", "--model", str(tiny_model_dir),
                         "--device", "cpu", "--json"])
    _assert_documented("heads", set(out))
    assert len(out["scores"]) == out["layers"] == 3 and len(out["scores"][0]) == out["heads"] == 4


def test_circuit_json(capsys):
    out = _json(capsys, ["circuit", "--task", "digits", "--n-prompts", "2", "--estimate", "--no-cache", "--device",
                         "cpu", "--json"])
    _assert_documented("circuit", set(out))
    assert out["removed"], "an estimate of the embedded model's digits circuit removes components"
    _assert_documented("circuit.removed[]", set(out["removed"][0]))


def test_patterns_json(capsys, tiny_model_dir, tmp_path):
    out = _json(capsys, ["patterns", "--prompt", "1 2 3", "--heads", "0.1,2.3", "--html", str(tmp_path / "p.html"),
                         "--model", str(tiny_model_dir), "--device", "cpu", "--json"])
    _assert_documented("patterns", set(out))
    assert len(out["heads"]) == 2 and (tmp_path / "p.html").is_file()


def test_ablate_per_prompt_json(capsys, tiny_model_dir):
    out = _json(capsys, ["ablate", "--task", "digits", "--n-prompts", "3", "--method", "zero", "--per-prompt",
                         "--no-cache", "--model", str(tiny_model_dir), "--device", "cpu", "--json"])
    _assert_documented("ablate --per-prompt", set(out))
    assert len(out["per_prompt_ld"]) == out["n_prompts"] and len(out["per_prompt_ld"][0]) == out["layers"]


def test_paths_json(capsys, tiny_model_dir):
    out = _json(capsys, ["paths", "--task", "digits", "--n-prompts", "3", "--sender", "0.1", "--no-cache",
                         "--model", str(tiny_model_dir), "--device", "cpu", "--json"])
    _assert_documented("paths", set(out))
    assert out["ld"][0] == [None] * 4 and all(v is not None for v in out["ld"][1])  # layer 0 is no receiver of 0.1


def test_dla_json(capsys, tiny_model_dir):
    out = _json(capsys, ["dla", "--task", "digits", "--n-prompts", "3", "--no-cache", "--model", str(tiny_model_dir),
                         "--device", "cpu", "--json"])
    _assert_documented("dla", set(out))
    assert len(out["head_dla"]) == 3 and len(out["mlp_dla"]) == 3


def test_lens_json(capsys, tiny_model_dir):
    out = _json(capsys, ["lens", "1 2 3 4 ", "--answer", "5", "--contrast", "4", "--model", str(tiny_model_dir),
                         "--device", "cpu", "--json"])
    _assert_documented("lens", set(out))
    _assert_documented("lens.layers[]", set(out["layers"][0]))
    assert [row["layer"] for row in out["layers"]] == [-1, 0, 1, 2]
