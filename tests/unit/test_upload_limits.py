"""Upload limits (rows, bytes) and files that are not datasets: each refused with a message naming the problem."""

from __future__ import annotations

import json

import pytest

from headscope.errors import InputError
from headscope.tasks import UploadLimits, load_dataset_bytes, load_dataset_file, load_dataset_text

ROW = '"1 2 3 4 ",5,4\n'
HEADER = "prompt,correct,incorrect\n"


def _csv(rows: int) -> str:
    return HEADER + ROW * rows


def test_defaults_are_2000_rows_and_5_mb(monkeypatch):
    monkeypatch.delenv("HEADSCOPE_UPLOAD_MAX_ROWS", raising=False)
    monkeypatch.delenv("HEADSCOPE_UPLOAD_MAX_MB", raising=False)
    limits = UploadLimits.from_env()
    assert (limits.max_rows, limits.max_bytes) == (2000, 5 * 2**20)
    assert limits.describe() == "at most 2,000 rows and 5 MB"


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HEADSCOPE_UPLOAD_MAX_ROWS", "10")
    monkeypatch.setenv("HEADSCOPE_UPLOAD_MAX_MB", "0.5")
    limits = UploadLimits.from_env()
    assert (limits.max_rows, limits.max_bytes) == (10, 2**19)
    assert load_dataset_text(_csv(10), "d.csv").items  # exactly at the limit: accepted
    with pytest.raises(InputError, match=r"11 rows, more than the 10 .*HEADSCOPE_UPLOAD_MAX_ROWS"):
        load_dataset_text(_csv(11), "d.csv")


@pytest.mark.parametrize(("name", "value"), [("HEADSCOPE_UPLOAD_MAX_ROWS", "lots"), ("HEADSCOPE_UPLOAD_MAX_ROWS", "0"),
                                             ("HEADSCOPE_UPLOAD_MAX_ROWS", "1.5"), ("HEADSCOPE_UPLOAD_MAX_MB", "-1"),
                                             ("HEADSCOPE_UPLOAD_MAX_MB", "inf"), ("HEADSCOPE_UPLOAD_MAX_MB", "nan"),
                                             ("HEADSCOPE_UPLOAD_MAX_MB", "1e300")])
def test_a_bad_limit_setting_is_named(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=name):
        UploadLimits.from_env()


def test_row_limit_applies_to_json_too():
    rows = [{"prompt": "1 2 3 4 ", "correct": "5", "incorrect": "4"}] * 3
    limits = UploadLimits(max_rows=2)
    with pytest.raises(InputError, match="3 rows, more than the 2"):
        load_dataset_text(json.dumps(rows), "d.json", limits)
    assert len(load_dataset_text(json.dumps(rows[:2]), "d.json", limits)) == 2


def test_byte_limit_is_checked_before_parsing():
    data = _csv(200).encode()
    limits = UploadLimits(max_rows=10_000, max_bytes=len(data) - 1)
    shown = rf"the file is {len(data):,} bytes, more than the {len(data) - 1:,} bytes .*HEADSCOPE_UPLOAD_MAX_MB"
    with pytest.raises(InputError, match=r"d\.csv: " + shown):
        load_dataset_bytes(data, "d.csv", limits)
    assert len(load_dataset_bytes(data, "d.csv", UploadLimits(max_bytes=len(data)))) == 200


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty"),
    (b"   \n\n", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
    ("prompt,correct,incorrect\n\"caf\u00e9\",1,2\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset 29\)"),
    (b"\xff\xfep\x00r\x00", "not a text file"),  # UTF-16
])
def test_files_that_are_not_utf8_text_are_refused(data, message):
    with pytest.raises(InputError, match=message):
        load_dataset_bytes(data, "d.csv")


def test_a_utf8_byte_order_mark_is_accepted():
    dataset = load_dataset_bytes(b"\xef\xbb\xbf" + _csv(2).encode(), "d.csv")
    assert dataset.items[0].prompt == "1 2 3 4 "


@pytest.mark.parametrize(("text", "name", "message"), [
    ("prompt\n1\n", "d.csv", "missing column.*correct, incorrect"),
    ("a,b\n1,2\n", "d.csv", "missing column.*prompt, correct, incorrect"),
    ('"unterminated\n', "d.csv", "no rows"),
    ("42", "d.json", "expected a list of objects"),
    ('"text"', "d.json", "expected a list of objects"),
    ("[[1, 2, 3]]", "d.json", "expected a list of objects"),
    ('[{"prompt": "1 2 3 4 ", "correct": 5, "incorrect": "4"}]', "d.json", "row 1: correct must be text in quotes"),
    ('[{"prompt": "1 2 3 4 ", "correct": null, "incorrect": "4"}]', "d.json", "row 1: empty correct"),
    ("[" * 100_000, "d.json", "not valid JSON"),
    ("x", "d.xlsx", "unsupported file type .xlsx"),
])
def test_files_of_the_wrong_shape_are_explained(text, name, message):
    with pytest.raises(InputError, match=message):
        load_dataset_text(text, name)


def test_cli_file_reads_no_more_than_the_limit(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text(_csv(50_000))
    with pytest.raises(InputError, match=r"big\.csv: the file is"):
        load_dataset_file(path, UploadLimits(max_bytes=1000))


@pytest.mark.parametrize("make", ["folder", "missing", "device"])
def test_cli_paths_that_are_not_files(tmp_path, make):
    path = {"folder": tmp_path, "missing": tmp_path / "nope.csv", "device": "/dev/zero"}[make]
    with pytest.raises(InputError, match="Cannot read dataset"):
        load_dataset_file(path)
