"""The installable package: the wheel's contents, and the `headscope` command of an installed copy (not the checkout)
running the embedded model and serving the app.

The wheel is built without build isolation (the setuptools already installed) and installed without dependencies into
a fresh virtualenv that sees this one's packages through a .pth file: offline, and a test of the package itself rather
than of the registries (`.ci/run` installs from the registries into a clean virtualenv).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

import headscope
from tests.serving import start_healthy_server, stop

ROOT = Path(__file__).resolve().parents[2]
APP_FILES = {"headscope/_app/app.py", "headscope/_app/pages/prompt_tester.py", "headscope/_app/pages/ablation.py",
             "headscope/_app/pages/attention.py", "headscope/_app/pages/circuit.py",
             "headscope/_app/components/__init__.py", "headscope/_app/components/share.py",
             "headscope/_app/docs/icon.png", "headscope/_app/.streamlit/config.toml"}

NOT_SOURCE = (".git", ".venv", "cache", "build", "dist", "*.egg-info", "test-artifacts", "__pycache__", ".pytest_cache",
              ".ruff_cache")

pytestmark = pytest.mark.slow  # a wheel build and a virtualenv: about 40 s here


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "headscope"  # a copy: setuptools builds in the tree it is given
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(out), str(source)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("headscope-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv holding the wheel; its other packages are this environment's (a .pth file)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    return venv


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HEADSCOPE_CACHE_DIR", "VIRTUAL_ENV")}
    return env | {"HF_HUB_OFFLINE": "1"} | extra


def test_the_wheel_holds_the_package_its_types_marker_and_the_app(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"headscope/__init__.py", "headscope/cli.py", "headscope/backends/bridge.py", "headscope/py.typed"} <= names
    assert names >= APP_FILES
    assert not any(name.startswith(("tests/", "components/", "pages/", "bench/")) for name in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert f"Version: {headscope.__version__}\n" in text
    requires = [line for line in text.splitlines() if line.startswith("Requires-Dist:")]
    core = [line for line in requires if "extra ==" not in line]
    assert any("transformer-lens" in line for line in core)
    assert not any("streamlit" in line for line in core)  # the dashboard is the app extra
    assert any("streamlit" in line and 'extra == "app"' in line for line in requires)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "headscope = headscope.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_installed_command_runs_the_embedded_model(installed, tmp_path):
    env = _clean_env(HEADSCOPE_CACHE_DIR=str(ROOT / "cache"), HEADSCOPE_RESULTS_DIR=str(tmp_path / "results"))
    done = subprocess.run([installed / "bin" / "headscope", "tokens", "1 2 3 4 ", "--answer", "5", "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["model"] == "SmolLM2-135M-Instruct"
    assert out["top_k"][0]["text"] == "5" and out["answer"]["rank"] == 1


def test_the_installed_package_is_not_the_checkout(installed, tmp_path):
    """Imported from the virtualenv, it keeps its cache in the user's cache folder and finds the app inside itself."""
    code = ("import headscope, headscope.paths as p; print(headscope.__file__); print(p.in_checkout()); "
            "print(p.cache_dir()); print(p.app_folder())")
    done = subprocess.run([installed / "bin" / "python", "-c", code], capture_output=True, text=True,
                          env=_clean_env(XDG_CACHE_HOME=str(tmp_path / "xdg")), cwd=tmp_path, check=True)
    module, checkout, cache, app = done.stdout.splitlines()
    assert Path(module).is_relative_to(installed)
    assert checkout == "False"
    assert Path(cache) == tmp_path / "xdg" / "headscope"
    assert Path(app) == Path(module).parent / "_app"


def test_headscope_run_serves_the_app_from_the_installed_package(installed, tmp_path):
    env = _clean_env(HEADSCOPE_CACHE_DIR=str(ROOT / "cache"), HEADSCOPE_RESULTS_DIR=str(tmp_path / "results"))
    # healthy on a port of its own: tests/serving.py tries another port where one was taken before the server bound it,
    # and counts an answer only from a live server whose own log names the port
    server, port = start_healthy_server(
        lambda port: [str(installed / "bin" / "headscope"), "run", "--port", str(port)], env, tmp_path / "server.log",
        cwd=tmp_path)
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=10) as answer:
            assert answer.read().decode() == "ok"
    finally:
        stop(server)
