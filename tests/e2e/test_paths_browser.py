"""The Paths page in a real browser: run a sender's paths, click a receiver's cell, see its attention pattern, and
re-centre the page on it ("Paths from")."""

from urllib.parse import parse_qs, urlsplit

from tests.e2e.browser_helpers import (
    ARTIFACTS,
    FIRST_LOAD_MS,
    click_plotly_point,
    next_frames,
    rerun_settled,
    wait_for_app,
)


def _cells(page):
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for(timeout=60_000)
    return chart, chart.locator(".scatterlayer .trace").first.locator("path.point")


def test_click_a_receiver_see_its_pattern_and_recentre_on_it(page, app_url):
    wait_for_app(page, f"{app_url}/paths?n=2&sender=27.3")
    page.wait_for_selector("text=Run path patching", timeout=FIRST_LOAD_MS)
    assert "Paths" in page.locator('[data-testid="stSidebarNav"]').inner_text()
    page.get_by_role("button", name="Run path patching").click()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
    chart, points = _cells(page)
    assert points.count() == 2 * 9  # the receivers of layers 28 and 29; nothing drawn for the other heads
    click_plotly_point(page, chart, points.nth(2))  # layer 28, head 2 (cells run layer by layer)
    # the heading (the spinner's "Computing the attention pattern of head 28.2…" says it too while it runs)
    page.get_by_role("heading", name="Attention pattern of head 28.2").first.wait_for(timeout=120_000)
    frame = page.frame_locator('[data-testid="stIFrame"], iframe').last
    frame.locator("canvas, svg").first.wait_for(timeout=60_000)
    assert parse_qs(urlsplit(page.url).query)["head"] == ["28.2"]
    link = page.get_by_role("link", name="Open head 28.2 on the attention page")
    assert parse_qs(urlsplit(link.get_attribute("href")).query)["heads"] == ["28.2"]
    page.set_viewport_size({"width": 1400, "height": 2000})
    next_frames(page)
    page.screenshot(path=str(ARTIFACTS / "paths-page.png"))

    rerun_settled(page, lambda: page.get_by_role("button", name="Paths from 28.2").click(), timeout_ms=300_000)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
    _chart, points = _cells(page)
    assert points.count() == 9  # 28.2's receivers: layer 29
    query = parse_qs(urlsplit(page.url).query)
    assert query["sender"] == ["28.2"] and "head" not in query
    assert page.get_by_role("textbox", name="Sender head (layer.head)").input_value() == "28.2"
