"""Copy as code: the notebook lines a page gives are valid Python naming exactly the page's inputs, and the Python
API refuses bad input with the command line's one-line messages before any model loads."""

import ast
import contextlib
import io

import pytest

import headscope as hs
from headscope.api import backend_name, call_code, check_prompt_source, load_code, notebook_code
from headscope.cli import main
from headscope.loading import ModelRequest


def _call(line: str) -> tuple[str, list, dict]:
    call = ast.parse(line, mode="eval").body
    assert isinstance(call, ast.Call)
    return (ast.unparse(call.func), [ast.literal_eval(a) for a in call.args],
            {k.arg: ast.literal_eval(k.value) for k in call.keywords})


@pytest.mark.parametrize(("request_", "expected"), [
    (ModelRequest(), ("hs.load", [], {})),
    (ModelRequest("meta-llama/Llama-2-7b-hf", "cuda", "float16", backend="nnsight"),
     ("hs.load", ["meta-llama/Llama-2-7b-hf"], {"device": "cuda", "dtype": "float16", "backend": "nnsight"})),
    (ModelRequest("meta-llama/Llama-2-7b-hf", backend="ndif", api_key="secret"),
     ("hs.load", ["meta-llama/Llama-2-7b-hf"], {"remote": True})),
])
def test_the_load_line_names_what_differs_from_the_defaults_and_never_the_key(request_, expected):
    line = load_code(request_)
    assert line.startswith("model = ") and "secret" not in line
    assert _call(line.removeprefix("model = ")) == expected


def test_a_call_keeps_text_exactly_as_typed():
    prompt = 'He said "hi"\n\t$5 \\ ⟨U+FE0F⟩ \u200b'
    line = call_code("tokens", prompt, answer=" 5", contrast=None, top_k=7)
    assert _call(line) == ("model.tokens", [prompt], {"answer": " 5", "top_k": 7})
    assert "\n" not in line  # one line, whatever the prompt holds


def test_notebook_code_is_a_runnable_cell():
    cell = notebook_code(ModelRequest(), call_code("sweep", task="digits", n_prompts=16, seed=0, method="mean"))
    lines = cell.splitlines()
    assert lines[:2] == ["import headscope as hs", "model = hs.load()"]
    assert _call(lines[2]) == ("model.sweep", [], {"task": "digits", "n_prompts": 16, "seed": 0, "method": "mean"})
    compile(cell, "<cell>", "exec")


def _cli_error(argv: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 2
    return err.getvalue().strip().removeprefix("headscope: error: ")


@pytest.mark.parametrize(("argv", "check"), [
    (["ablate", "--dataset", "x.csv", "--step", "2"], lambda: check_prompt_source(None, True, None, None, 2)),
    (["ablate", "--dataset", "x.csv", "--n-prompts", "5"], lambda: check_prompt_source(None, True, 5, None, None)),
    (["circuit", "--dataset", "x.csv", "--seed", "3"], lambda: check_prompt_source(None, True, None, 3, None)),
    (["ablate", "--task", "digits", "--n-prompts", "0"], lambda: check_prompt_source("digits", False, 0, None, None)),
    (["ablate", "--task", "nope"], lambda: check_prompt_source("nope", False, None, None, None)),
    (["circuit", "--task", "digits", "--step", "2"], lambda: check_prompt_source("digits", False, None, None, 2)),
    (["tokens", "x", "--remote", "--backend", "bridge"], lambda: backend_name("bridge", True)),
    (["tokens", "x", "--remote", "--device", "cpu"], lambda: backend_name(None, True, "cpu")),
])
def test_bad_input_raises_the_command_lines_message(argv, check):
    with pytest.raises(hs.InputError) as raised:
        check()
    assert str(raised.value) == _cli_error(argv)


def test_the_package_exports_the_api_and_its_errors():
    assert {"load", "Model", "InputError", "ModelLoadError", "HeadscopeError", "__version__"} <= set(hs.__all__)
    assert issubclass(hs.InputError, hs.HeadscopeError) and issubclass(hs.InputError, ValueError)
