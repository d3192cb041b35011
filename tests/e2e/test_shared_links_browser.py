"""Shareable views in a real browser: a link opens the same view in another browser session, a changed control is
written into the URL, a reload keeps the view, and state survives switching pages."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect

from tests.e2e.browser_helpers import (
    ARTIFACTS,
    FIRST_LOAD_MS,
    click_plotly_point,
    next_frames,
    rerun_settled,
    stable_box,
    wait_for_app,
    wait_until_idle,
)

LOAD = FIRST_LOAD_MS


def value_is(box, value: str) -> None:
    """The control shows `value` (waiting for the page to settle: a widget may be redrawn as the script reruns)."""
    expect(box).to_have_value(value, timeout=30_000)


def _params(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def _copy_link(page) -> str:
    page.get_by_role("button", name="Copy link").click()
    code = page.get_by_test_id("stCode").last
    code.wait_for(timeout=30_000)
    link = code.inner_text().strip()
    page.keyboard.press("Escape")
    return link


def _new_session(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    return context, context.new_page()


def test_prompt_tester_link_reload_and_other_session(page, browser, app_url):
    wait_for_app(page, f"{app_url}/?prompt=Monday%20Tuesday%20Wednesday&answer=%20Thursday&top_k=7&position=2")
    page.wait_for_selector("text=Token table", timeout=LOAD)
    value_is(page.get_by_role("textbox", name="Prompt", exact=True), "Monday Tuesday Wednesday")
    value_is(page.get_by_role("textbox", name="Expected answer"), " Thursday")
    value_is(page.get_by_role("spinbutton", name="Top-k"), "7")
    page.get_by_text("Next token after position 2", exact=False).wait_for(timeout=30_000)

    box = page.get_by_role("textbox", name="Prompt", exact=True)
    box.fill("January February March")
    # the run the new prompt starts ends before the link is copied and the page reloaded ("4 tokens" was already
    # shown for the first prompt, so waiting for it waits for nothing)
    rerun_settled(page, lambda: box.press("Control+Enter"))
    page.wait_for_function("() => location.search.includes('January')", timeout=30_000)
    assert _params(page.url)["prompt"] == ["January February March"]
    page.get_by_text("4 tokens", exact=True).wait_for(timeout=60_000)
    link = _copy_link(page)
    assert _params(link) == _params(page.url)

    page.reload()
    page.wait_for_selector("text=Token table", timeout=LOAD)
    value_is(page.get_by_role("textbox", name="Prompt", exact=True), "January February March")

    context, other = _new_session(browser)
    try:
        wait_for_app(other, link)
        other.wait_for_selector("text=Token table", timeout=LOAD)
        value_is(other.get_by_role("textbox", name="Prompt", exact=True), "January February March")
        value_is(other.get_by_role("spinbutton", name="Position (-1 = last)"), "2")
        other.get_by_text("Next token after position 2", exact=False).wait_for(timeout=30_000)
    finally:
        context.close()


def test_attention_link_selects_its_heads(page, app_url):
    wait_for_app(page, f"{app_url}/attention?heads=23.3")
    frame = page.frame_locator('iframe[title="Attention patterns of the selected heads"]')
    frame.locator("[id^=circuits-vis] canvas").first.wait_for(timeout=LOAD)
    value_is(page.get_by_role("textbox", name="Heads (layer.head, …) — overrides the preset"), "23.3")
    assert frame.get_by_text("L23H3 (KV 1)").count() >= 1
    page.get_by_text("1 head on", exact=False).wait_for(timeout=30_000)
    # the frame fits its view: no band of blank space below the drawing
    grid = page.locator('iframe[title="Attention patterns of the selected heads"]')
    deadline = time.monotonic() + 30  # the frame is resized to its drawing once that is drawn: wait for it
    while True:
        frame_height = stable_box(grid)["height"]
        content = grid.element_handle().content_frame().evaluate(
            "() => document.documentElement.getBoundingClientRect().height")
        if frame_height <= content + 40 or time.monotonic() > deadline:
            break
        next_frames(page)
    assert frame_height <= content + 40, (frame_height, content)


def test_ablation_link_with_a_selected_head_opens_in_another_session(page, browser, app_url):
    wait_for_app(page, f"{app_url}/ablation?n=3&seed=5&method=zero&show=change%20from%20clean")
    page.wait_for_selector("text=Run exact sweep", timeout=LOAD)
    page.get_by_role("button", name="Instant estimate (attribution)").click()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
    wait_until_idle(page)
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    target = chart.locator(".scatterlayer .trace").first.locator("path.point").nth(7 * 9 + 4)  # layer 7, head 4
    click_plotly_point(page, chart, target)
    page.get_by_text("Attention pattern of head 7.4", exact=False).wait_for(timeout=120_000)
    page.wait_for_function("() => location.search.includes('head=7.4')", timeout=30_000)
    params = _params(page.url)
    assert params["n"] == ["3"] and params["seed"] == ["5"] and params["method"] == ["zero"]
    assert params["show"] == ["change from clean"] and params["head"] == ["7.4"]
    link = _copy_link(page)

    context, other = _new_session(browser)
    try:
        wait_for_app(other, link)
        other.get_by_text("Attention pattern of head 7.4", exact=False).wait_for(timeout=LOAD)
        other.get_by_text("cached", exact=True).first.wait_for(timeout=60_000)
        other.screenshot(path=str(ARTIFACTS / "ablation-shared-link.png"), full_page=True)
        metrics = other.locator('[data-testid="stMetric"]').all_text_contents()
        assert any("cached" in metric for metric in metrics), metrics  # read back, not recomputed
        assert "Head 7.4 (KV head 1)" in other.inner_text("body")
        value_is(other.get_by_role("spinbutton", name="Seed"), "5")
    finally:
        context.close()

    # "Download figure (PNG)" right after "Download grid (CSV)" yields a file
    with page.expect_download(timeout=60_000) as csv:
        page.get_by_role("button", name="Download grid (CSV)").click()
    with page.expect_download(timeout=120_000) as png:
        page.get_by_role("button", name="Download figure (PNG)").click()
    assert Path(png.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = Path(csv.value.path()).read_text(encoding="utf-8").splitlines()
    assert rows[2].split(",")[:3] == ["0", "head 0", "0"]  # heads written as integers, not 0.0


def test_state_survives_switching_pages(page, app_url):
    wait_for_app(page, app_url)
    page.wait_for_selector("text=Token table", timeout=LOAD)
    box = page.get_by_role("textbox", name="Prompt", exact=True)
    box.fill("one two three")
    box.press("Control+Enter")
    page.get_by_text("4 tokens", exact=True).wait_for(timeout=60_000)
    page.get_by_role("link", name="Ablation heatmap").click()
    page.wait_for_selector("text=Run exact sweep", timeout=LOAD)
    # The change must reach the server before the page switch: Streamlit's frontend writes the URL at once, but a
    # rerun asked for while the page's first run is still going is merged into the page switch that follows and its
    # widget values are dropped (seen on a loaded machine: the server never ran with seed 12). A user's click is
    # slower than that; the test waits for the page's run to end, then for the run the change starts.
    wait_until_idle(page, LOAD)
    seed = page.get_by_role("spinbutton", name="Seed")
    seed.fill("12")
    rerun_settled(page, lambda: seed.press("Enter"))
    page.wait_for_function("() => location.search.includes('seed=12')", timeout=30_000)
    page.get_by_role("link", name="Prompt tester").click()
    page.wait_for_selector("text=Token table", timeout=LOAD)
    value_is(page.get_by_role("textbox", name="Prompt", exact=True), "one two three")
    assert _params(page.url)["prompt"] == ["one two three"]  # back in the URL too
    page.get_by_role("link", name="Ablation heatmap").click()
    page.wait_for_selector("text=Run exact sweep", timeout=LOAD)
    value_is(page.get_by_role("spinbutton", name="Seed"), "12")
