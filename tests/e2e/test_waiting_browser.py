"""Two browser sessions on one server: while one runs an exact sweep, the other's prompt tester gets its answer
between the sweep's chunks, with a notice saying what it waited for; a control changed during the sweep cancels it
and the page says so."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from tests.e2e.browser_helpers import ARTIFACTS, FIRST_LOAD_MS, wait_for_app, wait_until_idle

LOAD = FIRST_LOAD_MS


def _session(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    return context, context.new_page()


def test_prompt_tester_answers_during_another_sessions_sweep(browser, app_url):
    tester_context, tester = _session(browser)
    sweeper_context, sweeper = _session(browser)
    try:
        wait_for_app(tester, app_url)
        tester.wait_for_selector("text=Token table", timeout=LOAD)
        # 32 distinct step prompts: a sweep long enough to outlast the answers (24 digits prompts are 6 distinct)
        wait_for_app(sweeper, f"{app_url}/ablation?task=step&n=32&seed=77")
        sweeper.wait_for_selector("text=Run exact sweep", timeout=LOAD)
        sweeper.get_by_role("button", name="Run exact sweep").click()
        # under way: its progress bar has moved past 0 (the sweep holds the model chunk by chunk from here on)
        sweeper.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="stProgress"] [role="progressbar"]')]
                     .some(bar => Number(bar.getAttribute('aria-valuenow')) > 0)""", timeout=60_000)

        box = tester.get_by_role("textbox", name="Prompt", exact=True)
        waited_line = ""
        answered_in = []
        for attempt, prompt in enumerate(["Monday Tuesday Wednesday ", "one two three four ", "red green blue "]):
            assert sweeper.locator('[data-testid="stProgress"]').count() == 1, "the sweep ended before the test"
            started = time.perf_counter()
            box.fill(prompt)
            box.press("Control+Enter")
            notice = tester.get_by_text("Waiting for", exact=False)
            try:  # the notice lasts as long as the wait (a chunk of the sweep): a screenshot when it is caught
                notice.wait_for(timeout=3_000)
                caught = notice.first.inner_text()
                tester.screenshot(path=str(ARTIFACTS / f"waiting-notice-{attempt}.png"))
            except Exception:
                caught = ""
            assert not caught or "an exact ablation sweep in another session" in caught, caught
            tester.wait_for_function(f"() => document.body.innerText.includes({prompt.split()[0]!r})",
                                     timeout=60_000)
            wait_until_idle(tester)
            answered_in.append(time.perf_counter() - started)
            lines = tester.get_by_text("Waited", exact=False)
            if lines.count():  # answered after a wait: the notice became a line saying how long and for what
                waited_line = lines.first.inner_text()
                break
        assert "s for an exact ablation sweep in another session" in waited_line, waited_line
        assert tester.get_by_text("Waiting for", exact=False).count() == 0  # the notice is gone
        assert tester.get_by_role("button", name="Give up").count() == 0
        assert sweeper.locator('[data-testid="stProgress"]').count() == 1  # the sweep went on meanwhile
        print(f"prompt-tester answers during the sweep took {', '.join(f'{s:.1f} s' for s in answered_in)}")

        # a control changed while the sweep runs cancels it, and the page says so
        seed = sweeper.get_by_role("spinbutton", name="Seed")
        seed.fill("78")
        seed.press("Enter")
        sweeper.get_by_text("The sweep was cancelled because a control changed", exact=False).wait_for(timeout=60_000)
        expect(sweeper.locator('[data-testid="stProgress"]')).to_have_count(0, timeout=60_000)
    finally:
        tester_context.close()
        sweeper_context.close()
