"""The app's NDIF backend in a real browser against NDIF's own server (tests/ndif/serve.sh): load a served model
through the sidebar, run the prompt tester and a small ablation sweep; the numbers equal the local nnsight backend's.
Marked `ndif` (and it needs Chromium, as tests/e2e does)."""

import json
from pathlib import Path

import pytest

from tests import serving
from tests.e2e.browser_helpers import ARTIFACTS, rerun_settled, wait_for_app
from tests.e2e.conftest import start_healthy_server
from tests.ndif.realserver import (
    REPO,
    assert_same_numbers,
    cached_files,
    local_json,
    run_cli,
    tiny_local,
    tiny_remote,
)
from tests.pinned import cpu_env

pytestmark = pytest.mark.ndif

SERVED = tiny_remote("llama")


@pytest.fixture(scope="module")
def ndif_app(ndif, tmp_path_factory):
    """A streamlit server whose environment points the NDIF backend at the local NDIF; returns (url, results)."""
    results = tmp_path_factory.mktemp("ndif-app-results")
    env = cpu_env(PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=str(results), **ndif)
    ARTIFACTS.mkdir(exist_ok=True)
    server, port = start_healthy_server(env, ARTIFACTS / "streamlit-ndif-server.log")
    yield f"http://localhost:{port}", results
    serving.stop(server)


def _load_served_model(page) -> None:
    sidebar = page.locator('[data-testid="stSidebar"]')
    rerun_settled(page, lambda: sidebar.get_by_text("NDIF (remote)", exact=True).click())
    hub_id = sidebar.get_by_role("textbox", name="Hub id")
    hub_id.fill(SERVED)
    rerun_settled(page, lambda: hub_id.press("Enter"))
    rerun_settled(page, lambda: sidebar.get_by_role("button", name="Load model").click(), timeout_ms=300_000)
    _wait_for_served_model_card(page)


def _wait_for_served_model_card(page) -> None:
    """The sidebar's model card shows the served tiny model on NDIF (2 layers; the embedded model has 30)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stSidebar"]')]
                 .some(bar => bar.innerText.includes('NDIF (remote) · 2 layers'))""",
        timeout=120_000)


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_prompt_tester_and_sweep_on_ndif_match_local(ndif_app, page, tmp_path):
    url, results = ndif_app
    wait_for_app(page, url)
    page.wait_for_selector('[data-testid="hs-token-strip"]', timeout=180_000)
    _load_served_model(page)

    # the prompt tester, on NDIF: its answer's rank and logit difference equal the local nnsight backend's
    # the default prompt, '1 2 3 4 ', runs on the newly loaded model by itself (typing the same text starts no run)
    assert page.get_by_role("textbox", name="Prompt", exact=True).input_value() == "1 2 3 4 "
    page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
    answer = page.get_by_role("textbox", name="Expected answer").input_value()
    contrast = page.get_by_role("textbox", name="Contrast answer").input_value()
    local = local_json(["tokens", "1 2 3 4 ", "--answer", answer, "--contrast", contrast, "--model",
                        tiny_local("llama"), "--backend", "nnsight"], tmp_path / "local-tokens")
    assert _metric(page, "Logit difference") == f"{local['logit_diff']:.3f}"
    assert _metric(page, "Rank of answer") == str(local["answer"]["rank"])
    page.screenshot(path=str(ARTIFACTS / "ndif-prompt-tester.png"))

    # a small sweep on the ablation page, on NDIF: its cached result equals the local nnsight backend's
    # through the app's own navigation: a new address would start a new session, back on the default local model
    page.get_by_role("link", name="Ablation heatmap").click()
    page.wait_for_selector("text=Run exact sweep", timeout=180_000)
    _wait_for_served_model_card(page)
    prompts = page.get_by_role("spinbutton", name="Prompts")
    prompts.fill("2")
    rerun_settled(page, lambda: prompts.press("Enter"))
    page.get_by_role("button", name="Run exact sweep").click()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=600_000)
    page.screenshot(path=str(ARTIFACTS / "ndif-ablation.png"))
    remote_files = [f for f in cached_files(results) if f.parent.name == "ablation"]
    assert len(remote_files) == 1, cached_files(results)
    done = run_cli(["ablate", "--task", "digits", "--n-prompts", "2", "--method", "mean", "--model",
                    tiny_local("llama"), "--backend", "nnsight"], {}, tmp_path / "local-sweep")
    assert done.returncode == 0, done.stderr[-2000:]
    local_files = [f for f in cached_files(tmp_path / "local-sweep") if f.parent.name == "ablation"]
    assert len(local_files) == 1
    remote_entry = json.loads(Path(remote_files[0]).read_text())
    assert SERVED in json.dumps(remote_entry["key"]), remote_entry["key"]
    remote_payload = remote_entry["payload"]
    local_payload = json.loads(Path(local_files[0]).read_text())["payload"]
    assert assert_same_numbers(remote_payload, local_payload, "the page's NDIF sweep vs local nnsight") > 10
    assert not page.console_errors
