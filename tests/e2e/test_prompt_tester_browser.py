"""The prompt tester in a real browser: type a prompt, see its tokens. A screenshot is kept in test-artifacts/."""

from tests.e2e.browser_helpers import ARTIFACTS, FIRST_LOAD_MS, next_frames, wait_for_app


def _strip_texts(page):
    return page.locator('[data-testid="hs-token-strip"]').first.locator(".hs-text").all_inner_texts()


def test_typing_a_prompt_shows_its_token_table(page, app_url):
    wait_for_app(page, app_url)
    page.wait_for_selector('[data-testid="hs-token-strip"]', timeout=FIRST_LOAD_MS)
    assert _strip_texts(page)[1:] == ["1", "·", "2", "·", "3", "·", "4", "·"]  # the default prompt '1 2 3 4 '

    box = page.get_by_role("textbox", name="Prompt", exact=True)
    box.fill("Monday Tuesday Wednesday")
    box.press("Control+Enter")
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="hs-token-strip"] .hs-text')]
                 .some(e => e.textContent.includes('Wednesday'))""",
        timeout=60_000,
    )
    texts = _strip_texts(page)
    assert texts[0] == "<|im_start|>"
    assert "".join(texts[1:]).replace("·", " ") == "Monday Tuesday Wednesday"
    assert page.locator('[data-testid="stDataFrame"]').count() >= 2  # token table and top-k table
    page.set_viewport_size({"width": 1400, "height": 2200})  # Streamlit scrolls inside its own container
    next_frames(page)
    page.screenshot(path=str(ARTIFACTS / "prompt-tester.png"))


def test_script_in_a_prompt_is_shown_not_run(page, app_url):
    wait_for_app(page, app_url)
    page.wait_for_selector('[data-testid="hs-token-strip"]', timeout=FIRST_LOAD_MS)
    page.evaluate("window.__pwned = false")
    box = page.get_by_role("textbox", name="Prompt", exact=True)
    box.fill('<img src=x onerror="window.__pwned=true">')
    box.press("Control+Enter")
    page.wait_for_function(
        # querySelectorAll over the whole document: while a rerun replaces the strip there may be none (an empty
        # list, so the predicate is false and the wait goes on, where querySelector(...) would be null and throw)
        """() => [...document.querySelectorAll('[data-testid="hs-token-strip"]')]
                 .some(strip => [...strip.querySelectorAll('.hs-text')].map(e => e.textContent).join('')
                                .includes('onerror'))""",
        timeout=60_000,
    )
    assert page.evaluate("window.__pwned") is False
    assert page.locator('[data-testid="hs-token-strip"] img').count() == 0
