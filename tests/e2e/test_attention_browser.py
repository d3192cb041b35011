"""The attention-patterns page and its exported HTML in a real browser, offline: circuitsvis draws, nothing is fetched
from elsewhere, the console stays clean. Screenshots are kept in test-artifacts/.
"""

from urllib.parse import urlparse

from tests.e2e.browser_helpers import (
    ARTIFACTS,
    FIRST_LOAD_MS,
    next_frames,
    rerun_settled,
    wait_for_app,
    wait_for_text_in_frame,
    wait_until_idle,
)

FRAME = 'iframe[title="Attention patterns of the selected heads"]'


def _record_requests(page) -> list[str]:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def _foreign(urls: list[str], allowed_host: str | None) -> list[str]:
    """Requests that left the machine (anything but the app's own server, files, data: and about:)."""
    out = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in ("data", "about", "blob", "file"):
            continue
        if allowed_host is not None and parsed.netloc == allowed_host:
            continue
        out.append(url)
    return out


def _open_attention_page(page, app_url):
    """Through the navigation, as a user does (loading /attention directly makes Streamlit probe
    /attention/_stcore/..., which 404s)."""
    wait_for_app(page, app_url)
    page.get_by_role("link", name="Attention patterns").click()
    page.wait_for_selector(FRAME, timeout=FIRST_LOAD_MS)
    frame = page.frame_locator(FRAME)
    frame.locator("[id^=circuits-vis] canvas").first.wait_for(timeout=60_000)
    return frame


def test_grid_and_single_head_views_draw_offline(page, app_url):
    urls = _record_requests(page)
    frame = _open_attention_page(page, app_url)
    assert frame.locator("[id^=circuits-vis] canvas").count() >= 9  # 8 thumbnails and the zoomed head
    assert frame.get_by_text("Head Selector").count() == 1
    assert frame.get_by_text("(KV ", exact=False).count() >= 8
    single = page.frame_locator('iframe[title^="Attention pattern of head"]')
    single.locator("[id^=circuits-vis] canvas").first.wait_for(timeout=60_000)
    page.set_viewport_size({"width": 1400, "height": 2600})
    next_frames(page)
    page.screenshot(path=str(ARTIFACTS / "attention-patterns.png"))
    assert page.console_errors == []
    assert _foreign(urls, urlparse(app_url).netloc) == []


def test_clicking_a_heatmap_cell_adds_the_head_to_the_view(page, app_url):
    _open_attention_page(page, app_url)
    box = page.get_by_role("textbox", name="Heads (layer.head, …) — overrides the preset")
    box.fill("4.4, 2.1")
    box.press("Enter")
    wait_for_text_in_frame(page, FRAME, "L2H1 (KV 0)")
    wait_until_idle(page)
    score_box = page.get_by_role("combobox", name="Score", exact=True)
    score_box.scroll_into_view_if_needed()
    score_box.click()
    rerun_settled(page, page.get_by_role("option", name="successor", exact=True).click)
    compute = page.get_by_role("button", name="Compute")
    if compute.count():  # no stored scores for this score yet
        compute.click()
    point = page.locator(".js-plotly-plot .scatterlayer .trace").first.locator("path.point").nth(3 * 9 + 4)
    point.wait_for(timeout=120_000)  # layer 3, head 4: points run layer by layer
    point.click(force=True)  # plotly's drag layer lies on top of the points and takes the click
    page.wait_for_function(
        """() => [...document.querySelectorAll('input')].some(e => e.value.split(', ').includes('3.4'))""",
        timeout=60_000,
    )
    assert box.input_value() == "4.4, 2.1, 3.4"
    wait_for_text_in_frame(page, FRAME, "L3H4 (KV 1)")
    assert page.console_errors == []


def test_downloaded_html_renders_offline_in_chromium(page, app_url, tmp_path):
    _open_attention_page(page, app_url)
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download view as offline HTML (for slides)").click()
    saved = tmp_path / "attention.html"
    download.value.save_as(saved)
    text = saved.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")

    urls = _record_requests(page)
    page.console_errors.clear()
    page.goto(saved.as_uri())
    page.wait_for_selector("[id^=circuits-vis] canvas", timeout=60_000)
    views = page.locator("[id^=circuits-vis]")
    assert views.count() == 2
    assert views.nth(0).locator("canvas").count() >= 9 and views.nth(1).locator("canvas").count() == 1
    assert page.locator("h1").inner_text().startswith("Attention patterns")
    page.set_viewport_size({"width": 1200, "height": 2400})
    next_frames(page)
    page.screenshot(path=str(ARTIFACTS / "attention-export.png"))
    assert page.console_errors == []
    assert _foreign(urls, None) == []
