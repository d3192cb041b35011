"""A change of the attention page's head list computes only the heads it adds (a long prompt's whole forward ran
again on every change); the ablation page's head view reads the same memo."""

import pytest

from headscope.pattern_memo import shared_pattern_memo


@pytest.fixture(autouse=True)
def own_results_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def test_changing_the_head_list_computes_only_the_added_heads(run_page):
    app = run_page("pages/attention.py")
    app.text_area(key="prompt").input("Monday Tuesday Wednesday Thursday").run()
    app.text_input(key="heads").input("4.4, 2.1").run()
    assert not app.exception and not app.error
    memo = shared_pattern_memo()
    before = memo.computed_heads
    app.text_input(key="heads").input("2.1, 4.4, 7.3").run()  # one head added, the others reordered
    assert not app.exception and not app.error
    assert memo.computed_heads == before + 1
    assert app.subheader[0].value == "3 heads on 5 tokens"
    app.text_input(key="heads").input("7.3").run()  # a head already seen: nothing computed
    assert memo.computed_heads == before + 1
    assert app.subheader[0].value == "1 head on 5 tokens"


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
