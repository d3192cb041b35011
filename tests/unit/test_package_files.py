"""The package's metadata and the `headscope run` command, without building anything (tests/model/test_package.py
builds and installs the wheel)."""

import tomllib
from pathlib import Path

import headscope
from headscope.cli import main, streamlit_flags
from headscope.paths import app_folder, in_checkout

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "headscope.__version__"}
    assert headscope.__version__.count(".") == 2


def test_from_the_checkout_the_app_is_the_checkouts_own():
    assert in_checkout()
    assert app_folder() == ROOT


def test_run_passes_the_apps_streamlit_settings_as_flags():
    flags = streamlit_flags(ROOT / ".streamlit" / "config.toml")
    assert "--server.headless=true" in flags and "--server.fileWatcherType=none" in flags
    assert "--browser.gatherUsageStats=false" in flags and "--theme.base=light" in flags


def test_run_refuses_a_bad_port_in_one_line(capsys):
    assert main(["run", "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "headscope: error: --port must be from 1 to 65535, got 70000."
