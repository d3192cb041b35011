"""Bad input through every command: exit code 2, exactly one line on stderr naming the problem, no traceback.

Most cases run `headscope.cli.main` in this process (an uncaught exception would fail the test outright); a few run
`python -m headscope` in a subprocess to check the real exit code and stderr. Cases that need a model use the tiny
random Llama in a local folder, which loads in a second or two.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch

from headscope.cli import main
from tests.pinned import cpu_env

# one past the last CUDA device on any machine: "CUDA is not available" without a GPU, "only N CUDA device(s)" with
MISSING_CUDA_DEVICE = f"cuda:{torch.cuda.device_count()}"
LATIN1 = "prompt,correct,incorrect\n\"café \",1,2\n".encode("latin-1")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"
DIGITS = [{"prompt": f"{i} {i + 1} {i + 2} {i + 3} ", "correct": str(i + 4), "incorrect": str(i + 3)}
          for i in range(1, 5)]


@pytest.fixture
def files(tmp_path):
    """Dataset files that are not usable datasets, by name."""
    made = {
        "empty.csv": b"",
        "blank.csv": b"\n\n  \n",
        "picture.csv": PNG,
        "latin.csv": LATIN1,
        "huge.csv": ("prompt,correct,incorrect\n" + '"1 2 3 4 ",5,4\n' * 2001).encode(),
        "shape.json": b'{"rows": 3}',
        "numbers.json": json.dumps([{"prompt": "1 2 3 4 ", "correct": 5, "incorrect": 4}]).encode(),
        "columns.csv": b"question,answer\nx,y\n",
        "broken.json": b'[{"prompt": ',
        "notes.txt": b"prompt,correct,incorrect\n",
        "uneven.json": json.dumps([*DIGITS[:2], {"prompt": "1 2 3 4 5 6 ", "correct": "7", "incorrect": "6"}]).encode(),
        "same.json": json.dumps([{"prompt": "1 2 3 4 ", "correct": "5", "incorrect": "5"}]).encode(),
        "good.json": json.dumps(DIGITS).encode(),
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def _fails_cleanly(capsys, argv: list[str], message: str) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("headscope: error: ") and "Traceback" not in captured.err
    assert message in lines[0], lines[0]


def _argparse_fails_cleanly(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


# ------------------------------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize(("argv", "message"), [
    ([], "the following arguments are required: command"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["tokens"], "the following arguments are required: prompt"),
    (["tokens", "x", "--top-k", "abc"], "argument --top-k: invalid int value: 'abc'"),
    (["tokens", "x", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["ablate"], "one of the arguments --task --dataset is required"),
    (["ablate", "--task", "digits", "--dataset", "d.csv"], "not allowed with argument"),
    (["ablate", "--task", "digits", "--n-prompts", "many"], "invalid int value: 'many'"),
    (["heads"], "the following arguments are required: --score"),
    (["heads", "--score", "bogus"], "argument --score: invalid choice: 'bogus'"),
    (["patterns", "--prompt", "x", "--heads", "1.1"], "the following arguments are required: --html"),
])
def test_usage_errors(capsys, argv, message):
    _argparse_fails_cleanly(capsys, argv, message)


# ------------------------------------------------------------------------------------------------ before any model


@pytest.mark.parametrize(("argv", "message"), [
    (["tokens", ""], "The prompt is empty"),
    (["tokens", "x", "--top-k", "0"], "top-k must be a whole number from 1 to 200"),
    (["tokens", "x", "--top-k", "100000"], "top-k must be a whole number from 1 to 200"),
    (["tokens", "x", "--dtype", "float8"], "Unknown dtype 'float8'"),
    (["tokens", "x", "--device", "tpu"], "Unknown device 'tpu'"),
    (["tokens", "x", "--device", MISSING_CUDA_DEVICE], "CUDA"),
    (["tokens", "x", "--dtype", "float16", "--device", "cpu"], "dtype float16 on the CPU is not supported"),
    (["tokens", "x", "--model", "/no/such/folder"], "does not exist"),
    (["tokens", "x", "--model", "not a hub id!"], "neither an existing folder nor a valid hub id"),
    (["tokens", "x", "--model", "nobody-here/no-such-model"], "not reachable"),
    (["ablate", "--task", "nope"], "Unknown task 'nope'"),
    (["ablate", "--task", "digits", "--method", "nope"], "Unknown ablation method 'nope'"),
    (["ablate", "--task", "digits", "--n-prompts", "0"], "--n-prompts must be from 1 to 4096"),
    (["ablate", "--dataset", "x.csv", "--step", "2"], "--step applies to a built-in task"),
    (["ablate", "--dataset", "x.csv", "--n-prompts", "5"], "--n-prompts applies to a built-in task"),
    (["circuit", "--dataset", "x.csv", "--seed", "3"], "--seed applies to a built-in task"),
    (["heads", "--score", "induction", "--task", "digits"], "--task applies to the sequence score"),
    (["heads", "--score", "sequence", "--task", "nope"], "Unknown task 'nope'"),
    (["tokens", "a\udcffb"], "The prompt is not valid UTF-8 (byte 0xff at character 1)"),
    (["patterns", "--prompt", "\udce9t\udce9", "--heads", "1.1", "--html", "o.html"],
     "The prompt is not valid UTF-8 (byte 0xe9 at character 0)"),
    (["heads", "--score", "induction", "--top", "0"], "--top must be at least 1"),
    (["heads", "--score", "induction", "--prompt", ""], "The prompt is empty"),
    (["heads", "--score", "successor", "--prompt", "x"], "--prompt applies to the pattern scores"),
    (["patterns", "--prompt", "x", "--heads", "3-4", "--html", "o.html"], "Cannot read '3-4' as a head"),
    (["patterns", "--prompt", "x", "--heads", "", "--html", "o.html"], "head"),
    (["patterns", "--prompt", "x", "--heads", "1.1", "--single", "2.2", "--html", "o.html"], "--single 2.2"),
    (["patterns", "--prompt", "", "--heads", "1.1", "--html", "o.html"], "The prompt is empty"),
    (["patterns", "--prompt", "x", "--heads", "1.1", "--html", "/no/such/dir/o.html"], "does not exist"),
])
def test_input_errors_before_loading(capsys, argv, message):
    _fails_cleanly(capsys, argv, message)


@pytest.mark.parametrize(("name", "message"), [
    ("empty.csv", "empty.csv: the file is empty."),
    ("blank.csv", "blank.csv: the file is empty."),
    ("picture.csv", "picture.csv: this is not a text file (it holds NUL bytes)"),
    ("latin.csv", "latin.csv: not UTF-8 text (byte 0xe9 at offset"),
    ("huge.csv", "huge.csv: 2,001 rows, more than the 2,000"),
    ("shape.json", "shape.json: expected a list of objects"),
    ("numbers.json", "numbers.json: row 1: correct, incorrect must be text in quotes, not 5"),
    ("columns.csv", "columns.csv: missing column(s) prompt, correct, incorrect"),
    ("broken.json", "broken.json: not valid JSON"),
    ("notes.txt", "notes.txt: unsupported file type .txt"),
    ("missing.csv", "does not exist"),
    (".", "is a folder"),
])
def test_dataset_files_that_are_not_datasets(capsys, files, name, message):
    _fails_cleanly(capsys, ["ablate", "--dataset", str(files / name)], message)


def test_dataset_over_the_byte_limit(capsys, files, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_UPLOAD_MAX_MB", "0.01")
    _fails_cleanly(capsys, ["ablate", "--dataset", str(files / "huge.csv")],
                   "more than the 10,485 bytes a dataset may have here")


def test_a_device_file_is_not_read(capsys):
    _fails_cleanly(capsys, ["ablate", "--dataset", "/dev/zero"], "is not a regular file")


def test_bad_limit_settings(capsys, files, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_UPLOAD_MAX_ROWS", "lots")
    _fails_cleanly(capsys, ["ablate", "--dataset", str(files / "good.json")], "HEADSCOPE_UPLOAD_MAX_ROWS must be")


BAD_SETTINGS = [("HEADSCOPE_MEMORY_BUDGET_MB", "abc"), ("HEADSCOPE_CHUNK_TARGET_MB", "inf"),
                ("HEADSCOPE_UPLOAD_MAX_MB", "1e300")]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_bad_memory_and_limit_settings_name_the_variable(capsys, files, tiny_model_dir, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    _fails_cleanly(capsys, ["ablate", "--dataset", str(files / "good.json"), "--method", "zero", "--model",
                            str(tiny_model_dir), "--no-cache"], name)


def test_a_cache_folder_that_is_a_file_is_one_line(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("HEADSCOPE_CACHE_DIR", str(blocker))
    _fails_cleanly(capsys, ["prepare"], "HEADSCOPE_CACHE_DIR")


def test_a_result_that_cannot_be_saved_is_still_printed(capsys, files, tiny_model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(blocker / "results"))
    argv = ["ablate", "--dataset", str(files / "good.json"), "--method", "zero", "--model", str(tiny_model_dir),
            "--estimate", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ablated_ld"]  # the computed sweep, printed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "was not saved" in lines[0] and "Traceback" not in captured.err


def test_output_to_a_stream_that_is_not_utf8_is_escaped(tiny_model_dir, monkeypatch):
    # in this process, on a latin-1 stdout as PYTHONIOENCODING=latin-1 gives a process (main reconfigures the stream
    # it finds; a real process would spend its time importing torch)
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding="latin-1"))
    assert main(["tokens", "1\n2", "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
    sys.stdout.flush()
    assert b"\\u21b5" in out.getvalue()  # the newline marker, escaped instead of a UnicodeEncodeError


def test_hub_switched_off(capsys, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_ALLOW_HUB", "0")
    _fails_cleanly(capsys, ["tokens", "x", "--model", "meta-llama/Llama-2-7b-hf"], "switched off")


# ------------------------------------------------------------------------------------------------ with a model


@pytest.mark.parametrize(("argv", "message"), [
    (["tokens", "x", "--position", "99"], "Position 99 is outside the prompt"),
    (["tokens", "1 " * 300], "reads at most 256"),
    (["tokens", "x", "--answer", ""], None),  # an empty answer is no answer: exit 0
    (["heads", "--score", "sequence", "--task", "nope"], "Unknown task 'nope'"),
    (["patterns", "--prompt", "x", "--heads", "9.0", "--html", "{tmp}/o.html"], "Head 9.0 is out of range"),
    (["patterns", "--prompt", "x", "--heads", "1.1", "--html", "{tmp}/o.html", "--csv", "{tmp}/no/o.csv"],
     "does not exist"),
    (["ablate", "--dataset", "{tmp}/uneven.json"], "Prompts in one run must have equal token length"),
    (["ablate", "--dataset", "{tmp}/same.json"], "Row 1: correct and incorrect answers start with the same token"),
    (["ablate", "--dataset", "{tmp}/good.json", "--method", "resample"], "resample"),
])
def test_input_errors_found_with_the_model(capsys, files, tiny_model_dir, argv, message):
    argv = [arg.replace("{tmp}", str(files)) for arg in argv] + ["--model", str(tiny_model_dir), "--no-cache"
                                                                 if argv[0] in ("ablate", "heads") else "--json"]
    if message is None:
        assert main(argv) == 0
        return
    _fails_cleanly(capsys, argv, message)


# ------------------------------------------------------------------------------------------------ real processes


# Real processes: an input error and a usage error end before torch is imported (a second or two each); the case
# that loads a model first spends its time importing and loading (about 10x as long) and leaves through the same
# exit, its message checked in-process above (test_input_errors_found_with_the_model): slow.
@pytest.mark.parametrize(("argv", "message"), [
    (["ablate", "--dataset", "{tmp}/picture.csv"], "not a text file"),
    (["tokens", "x", "--top-k", "abc"], "invalid int value"),
    pytest.param(["patterns", "--prompt", "x", "--heads", "99.0", "--html", "{tmp}/o.html", "--model", "{model}"],
                 "Head 99.0 is out of range", marks=pytest.mark.slow),
])
def test_real_process_exits_2_with_one_line_and_no_traceback(files, tiny_model_dir, argv, message):
    argv = [arg.replace("{tmp}", str(files)).replace("{model}", str(tiny_model_dir)) for arg in argv]
    done = subprocess.run([sys.executable, "-m", "headscope", *argv], capture_output=True, text=True, timeout=300,
                          env=cpu_env(), check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert done.stdout == ""
