"""Every page at a projector's sizes (1280×720, 1920×1080), in the usual and the presentation mode: screenshots under
test-artifacts/presentation/, and no button label, metric, choice or table cell cut short (an element that clips
its text has a scrollWidth beyond its clientWidth)."""

from __future__ import annotations

import pytest

from tests.e2e.browser_helpers import ARTIFACTS, FIRST_LOAD_MS, next_frames, wait_for_app, wait_until_idle

LOAD = FIRST_LOAD_MS
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
PAGES = {  # small configurations, their results computed once by the test (an estimate each)
    "prompt-tester": "/?prompt=1%202%203%204%20",
    "ablation": "/ablation?n=3",
    "attention": "/attention?heads=3.4%2C%2017.2%2C%205.1",
    "circuit": "/circuit?n=2&one_pass=true",
    "paths": "/paths?n=2&sender=27.3&head=28.2",  # 18 receivers of 2 prompts, one selected: its pattern below
}

CUT_TEXT = """() => {
  const selectors = ['button', 'button *', '[data-testid="stMetricLabel"] *', '[data-testid="stMetricValue"]',
                     '[data-testid="stMetricDelta"] *', '[data-baseweb="select"] *', '[data-testid="stTable"] td',
                     '[data-testid="stTable"] th', '[data-testid="stExpander"] summary *',
                     '[data-testid="stWidgetLabel"] *', '[data-testid="stCaptionContainer"]'];
  const cut = [];
  for (const selector of selectors) {
    for (const el of document.querySelectorAll(selector)) {
      if (!el.offsetParent || !el.innerText || !el.innerText.trim()) continue;  // hidden, or no text of its own
      if (el.closest('[data-testid="stSidebar"][aria-expanded="false"]')) continue;
      const style = getComputedStyle(el);
      const clips = style.overflowX !== 'visible' || style.textOverflow === 'ellipsis';
      if (clips && el.scrollWidth > el.clientWidth + 1) {
        cut.push(`${selector}: "${el.innerText.trim().slice(0, 60)}" (${el.scrollWidth} > ${el.clientWidth} px)`);
      }
    }
  }
  return [...new Set(cut)];
}"""


WRAPPED_LABELS = """() => [...document.querySelectorAll('h4')]
  .filter(h => h.getClientRects().length && h.offsetHeight > 1.5 * parseFloat(getComputedStyle(h).lineHeight))
  .map(h => `wrapped thumbnail label: "${h.innerText}"`)"""


# every plotly chart on the page drawn (plotly draws after Streamlit's run has ended)
CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
  .every(chart => chart.querySelector('.main-svg'))"""


def settled(page, name: str, timeout_ms: int = 60_000):
    """Wait until what the page draws after its run is there: its plotly charts, and on the attention page
    circuitsvis' thumbnails in their frame (returned); then two animation frames, so that it is laid out. A
    condition, not a fixed pause: as long as it takes on a loaded machine, and no longer."""
    page.wait_for_function(CHARTS_DRAWN, timeout=timeout_ms)
    frame = None
    waited = 0
    while name == "attention" and frame is None:
        frame = next((f for f in page.frames if f.locator("h4").count()), None)
        if frame is None:
            assert waited < timeout_ms, "circuitsvis drew no thumbnails"
            page.wait_for_timeout(100)
            waited += 100
    next_frames(page)
    return frame


@pytest.fixture(scope="module")
def computed(browser, app_url):
    """The estimates the pages show, and the paths of one sender, computed once through the pages themselves."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        for name in ("ablation", "circuit"):
            wait_for_app(page, app_url + PAGES[name])
            page.get_by_role("button", name="Instant estimate (attribution)").first.wait_for(timeout=LOAD)
            wait_until_idle(page)
            page.get_by_role("button", name="Instant estimate (attribution)").first.click()
            page.wait_for_selector('[data-testid="stMetric"]', timeout=600_000)
            wait_until_idle(page)
        wait_for_app(page, app_url + PAGES["paths"])
        page.get_by_role("button", name="Run path patching").wait_for(timeout=LOAD)
        wait_until_idle(page)
        page.get_by_role("button", name="Run path patching").click()
        page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
        wait_until_idle(page)
    finally:
        context.close()


# Both modes at the smaller projector size by default (the type's sizes are fixed, so 720p's narrower columns cut text
# first); 1080p, the same pages with more room, in the slow run.
@pytest.mark.parametrize("present", [False, True], ids=["usual", "presentation"])
@pytest.mark.parametrize("size", [pytest.param(size, marks=[pytest.mark.slow] if size != "720p" else [])
                                  for size in SIZES])
def test_every_page_at_projector_sizes_has_nothing_cut(browser, app_url, computed, size, present):
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    folder = ARTIFACTS / "presentation"
    folder.mkdir(parents=True, exist_ok=True)
    problems = {}
    try:
        for name, path in PAGES.items():
            url = app_url + path + (("&" if "?" in path else "?") + "present=1" if present else "")
            wait_for_app(page, url)
            page.wait_for_selector('[data-testid="stMetric"], [data-testid="stIFrame"], iframe', timeout=LOAD)
            wait_until_idle(page)
            thumbnails = settled(page, name)
            mode = "present" if present else "usual"
            page.screenshot(path=str(folder / f"{name}-{size}-{mode}.png"))
            page.screenshot(path=str(folder / f"{name}-{size}-{mode}-full.png"), full_page=True)
            cut = page.evaluate(CUT_TEXT)
            if thumbnails is not None:  # circuitsvis' thumbnail labels ("L17H2 (KV 0)") on one line each
                cut += thumbnails.evaluate(WRAPPED_LABELS)
            if cut:
                problems[name] = cut
            if present:
                assert "present=1" in page.url, name
                assert page.locator('[data-testid="stSidebar"][aria-expanded="true"]').count() == 0, name
    finally:
        context.close()
    assert not problems, problems
