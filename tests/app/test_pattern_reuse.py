"""A change of the attention page's head list, or of its window, runs no forward: the prompt's one forward serves
them all (a long prompt's whole forward ran again on every change); the ablation page's head view reads the same
memo."""

import pytest

from headscope.pattern_memo import shared_pattern_memo


@pytest.fixture(autouse=True)
def own_results_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def test_changing_the_head_list_runs_no_forward(run_page):
    app = run_page("pages/attention.py")
    memo = shared_pattern_memo()
    app.text_input(key="heads").input("4.4, 2.1").run()
    before = memo.forwards
    app.text_area(key="prompt").input("Monday Tuesday Wednesday Thursday").run()  # a new prompt: one forward
    assert not app.exception and not app.error
    assert memo.forwards == before + 1
    before = memo.forwards
    app.text_input(key="heads").input("2.1, 4.4, 3.3").run()  # one head added below the top one, the others reordered
    assert not app.exception and not app.error
    assert memo.forwards == before
    assert app.subheader[0].value == "3 heads on 5 tokens"
    app.text_input(key="heads").input("7.3").run()  # a head above them: one forward, up to its layer
    assert memo.forwards == before + 1
    app.text_input(key="heads").input("0.0, 7.3").run()
    assert memo.forwards == before + 1
    assert app.subheader[0].value == "2 heads on 5 tokens"


def test_a_prompt_tester_rerun_with_the_same_inputs_reuses_its_forward(run_page, monkeypatch):
    import headscope.predict as predict

    calls = []
    real = predict.analyze_prompt

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "analyze_prompt", counted)
    app = run_page("pages/prompt_tester.py")
    app.text_area(key="prompt").input("2 3 4 5 ").run()
    assert calls.count("2 3 4 5 ") == 1
    app.run()  # e.g. a click elsewhere on the page
    app.toggle(key="compare").set_value(True).run()  # the variant runs; the prompt itself is not run again
    assert calls.count("2 3 4 5 ") == 1 and calls.count("2 3 4 5") == 1
    assert not app.exception and not app.error
    app.number_input(key="top_k").set_value(5).run()  # another input: computed
    assert calls.count("2 3 4 5 ") == 2
