"""Direct effects on the ablation page in a real browser: the toggle over the map, and a click on a point of the
direct-vs-total scatter selecting that head (AppTest cannot click a Plotly point)."""

import re

import pytest

from tests.e2e.browser_helpers import (
    ARTIFACTS,
    FIRST_LOAD_MS,
    hover_plotly_point,
    next_frames,
    rerun_settled,
    wait_for_app,
)

TOPMOST_POINT = """points => {
    let best = 0;
    points.forEach((point, index) => {
        if (point.getBoundingClientRect().top < points[best].getBoundingClientRect().top) best = index;
    });
    return best;
}"""


@pytest.mark.slow  # ~40 s beyond the shared server's start; the click path is the heatmap's, covered by default
def test_direct_effect_toggle_and_a_scatter_click_selects_the_head(page, app_url):
    wait_for_app(page, f"{app_url}/ablation")
    page.wait_for_selector("text=Run exact sweep", timeout=FIRST_LOAD_MS)
    prompts = page.get_by_role("spinbutton", name="Prompts")
    prompts.fill("2")
    rerun_settled(page, lambda: prompts.press("Enter"))
    page.get_by_role("button", name="Instant estimate (attribution)").click()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
    rerun_settled(page, lambda: page.get_by_text("direct effect (DLA)", exact=True).click())
    page.get_by_text("Sum check").wait_for(timeout=120_000)
    assert "effect=direct" in page.url  # the choice is in the link

    scatter = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Direct vs total")
    scatter.wait_for(timeout=60_000)
    points = scatter.locator(".scatterlayer .trace").first.locator("path.point")
    assert points.count() == 30 * 9  # one point per head
    # the head drawn highest (largest direct effect) stands apart: its hover names it, its click selects it
    top = points.nth(points.evaluate_all(TOPMOST_POINT))
    where = hover_plotly_point(page, scatter, top)
    hover = scatter.locator(".hoverlayer .hovertext").first.text_content()  # an SVG text: no inner_text
    head = re.search(r"head (\d+\.\d+)", hover).group(1)
    page.mouse.click(*where)  # plotly clicks the point under its hover
    page.get_by_text(f"What head {head} writes", exact=False).wait_for(timeout=120_000)
    assert f"head={head}" in page.url
    page.get_by_text("Promoted", exact=True).first.wait_for(timeout=120_000)  # its tables, once computed
    page.set_viewport_size({"width": 1400, "height": 2400})
    next_frames(page)
    page.screenshot(path=str(ARTIFACTS / "direct-effects.png"))
