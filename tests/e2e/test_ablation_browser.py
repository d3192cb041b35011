"""The ablation page in a real browser: run a sweep, click a heatmap cell, see that head's attention pattern."""

from pathlib import Path

from tests.e2e.browser_helpers import (
    ARTIFACTS,
    FIRST_LOAD_MS,
    click_plotly_point,
    next_frames,
    rerun_settled,
    wait_for_app,
)

# counts the script runs that start from now on (the app's script state turning to "running"); one observer per page
COUNT_RUNS = """() => {
  window.__hsRunsStarted = 0;
  if (window.__hsRunCounter) return;
  let last = null;
  window.__hsRunCounter = new MutationObserver(() => {
    const state = document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state');
    if (state === 'running' && last !== 'running') window.__hsRunsStarted += 1;
    last = state;
  });
  window.__hsRunCounter.observe(document, {subtree: true, attributes: true,
                                           attributeFilter: ['data-test-script-state']});
}"""
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def test_run_sweep_click_cell_see_pattern(page, app_url):
    wait_for_app(page, f"{app_url}/ablation")
    page.wait_for_selector("text=Run exact sweep", timeout=FIRST_LOAD_MS)
    # a first visit straight to /ablation still gets app.py's navigation and model picker
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Ablation heatmap" in nav and "Prompt tester" in nav
    assert page.get_by_text("Model", exact=True).count() >= 1
    prompts = page.get_by_role("spinbutton", name="Prompts")
    prompts.fill("2")
    rerun_settled(page, lambda: prompts.press("Enter"))
    page.get_by_role("button", name="Run exact sweep").click()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for(timeout=60_000)
    points = chart.locator(".scatterlayer .trace").first.locator("path.point")
    assert points.count() == 30 * 9 + 30  # every head plus the MLP column
    page.wait_for_selector(IDLE, timeout=120_000)
    page.evaluate(COUNT_RUNS)
    click_plotly_point(page, chart, points.nth(8 * 9 + 1))  # layer 8, head 1, then another cell
    page.get_by_text("Attention pattern of head 8.1 on", exact=False).wait_for(timeout=120_000)
    page.wait_for_selector(IDLE, timeout=120_000)
    page.evaluate(COUNT_RUNS)
    click_plotly_point(page, chart, points.nth(5 * 9 + 2))  # layer 5, head 2
    heading = page.get_by_text("Attention pattern of head 5.2 on", exact=False)  # not the spinner
    heading.wait_for(timeout=120_000)
    frame = page.frame_locator('[data-testid="stIFrame"], iframe').last
    frame.locator("canvas, svg").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=120_000)
    # the click is read by a callback before the page's run: one run per click, not one to read it and one to show it
    assert page.evaluate("window.__hsRunsStarted") == 1
    assert "head=5.2" in page.url  # the callback wrote the selection to the link as well
    page.set_viewport_size({"width": 1400, "height": 2000})
    next_frames(page)
    page.screenshot(path=str(ARTIFACTS / "ablation-heatmap.png"))
    assert "Head 5.2" in page.inner_text("body")

    with page.expect_download(timeout=120_000) as png:
        # the map's own button (by its key): while the page reruns below the map, a stale copy may still stand
        page.locator(".st-key-ab_png").get_by_role("button", name="Download figure (PNG)").first.click()
    assert png.value.suggested_filename.endswith(".png")
    assert Path(png.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download(timeout=60_000) as csv:
        page.locator(".st-key-ab_csv").get_by_role("button", name="Download grid (CSV)").first.click()
    rows = Path(csv.value.path()).read_text(encoding="utf-8").splitlines()
    assert rows[1] == "layer,component,head,ablated_ld,percent_of_clean,change,normalized"
    assert len(rows) == 2 + 30 * 9 + 30  # comment line, header, every head and every MLP


def test_a_running_sweep_can_be_cancelled(page, app_url):
    wait_for_app(page, f"{app_url}/ablation")
    page.wait_for_selector("text=Run exact sweep", timeout=FIRST_LOAD_MS)
    seed = page.get_by_role("spinbutton", name="Seed")
    seed.fill("41")  # prompts no earlier run has cached
    rerun_settled(page, lambda: seed.press("Enter"))
    page.get_by_role("button", name="Run exact sweep").first.click()
    page.wait_for_selector('[data-testid="stProgress"]', timeout=60_000)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("The sweep was cancelled").wait_for(timeout=60_000)
    # nothing half-done is shown: at most the earlier sweep of this session, labelled as such
    if page.locator('[data-testid="stMetric"]').count():
        assert page.get_by_text("Showing the last sweep").count() == 1
    page.get_by_role("button", name="Instant estimate (attribution)").first.click()  # and the page still works
    page.get_by_text("Estimate", exact=True).wait_for(timeout=120_000)
    assert page.get_by_text("Showing the last sweep").count() == 0
