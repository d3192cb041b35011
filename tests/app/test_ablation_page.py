"""AppTest of the ablation page on a small dataset, with results kept in a temporary cache."""

import itertools

import numpy as np
import pytest

from components.preload import HIDDEN, is_preload
from headscope import job_time
from headscope.component import Component
from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _frames(app):
    return [df.value for df in app.dataframe]


def shown_charts(app):
    """The page's charts less the hidden one that preloads the chart code (components/preload.py)."""
    return [chart for chart in app.get("plotly_chart") if not is_preload(chart.proto.id)]


def test_before_a_sweep_the_chart_and_table_code_is_preloaded_hidden(run_page):
    # the browser evaluates Plotly's code (~0.9 s) the first time a page shows a chart: before the sweep, not after
    app = run_page("pages/ablation.py")
    assert not app.exception and not shown_charts(app)
    assert [is_preload(chart.proto.id) for chart in app.get("plotly_chart")] == [True]
    assert len(app.dataframe) == 1 and any(HIDDEN in block.proto.body for block in app.get("html"))


def test_the_block_cost_is_measured_before_the_click(run_page, monkeypatch):
    # the time limit's estimate measures a block once per model and prompt length: on the page's first run, so that
    # the click on Run does not wait for it
    monkeypatch.setattr(job_time, "_measured", {})
    app = run_page("pages/ablation.py")
    assert not app.exception and len(job_time._measured) == 1


def test_exact_sweep_shows_heatmap_metrics_and_top_heads(run_page, embedded_model):
    app = run_page("pages/ablation.py")
    assert not app.exception
    app.number_input(key="n").set_value(3).run()
    app.button(key="ab_run").click().run(timeout=600)
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    result = app.session_state["ab_result"][1]  # the sweep the page computed (its numbers: tests/model)
    assert metrics["Clean LD"] == f"{result.clean_ld:.3f}" and result.clean_ld > 2  # the model continues digits
    assert metrics["Corrupted LD"] == f"{result.corrupt_ld:.3f}"
    assert (metrics["Prompts"], metrics["Tokens each"]) == ("3", "9")
    top = next(f for f in _frames(app) if "% of clean" in f.columns)
    # the 12 heads whose ablation moves LD most, each with its own numbers, computed here from the raw sweep
    change = result.ablated_ld - result.clean_ld
    order = np.argsort(-np.abs(change), axis=None, kind="stable")[:12]
    expected = [np.unravel_index(i, change.shape) for i in order]
    assert set(top["head"]) == {f"{layer}.{head}" for layer, head in expected}
    for _, row in top.iterrows():
        layer, head = map(int, row["head"].split("."))
        assert row["ablated LD"] == pytest.approx(round(float(result.ablated_ld[layer, head]), 3), abs=1e-9)
        percent = 100 * float(result.ablated_ld[layer, head]) / result.clean_ld
        assert row["% of clean"] == pytest.approx(round(percent, 1), abs=0.11)  # shown to 0.1
    figure = app.get("plotly_chart")[0].proto.spec
    assert '"square"' in figure  # a scatter of square cells: clicks select
    # rerunning the page (e.g. another visitor) finds the sweep in the cache at once
    again = run_page("pages/ablation.py", n=3)
    metrics = {m.label: m.value for m in again.metric}
    assert metrics["Clean LD"] == f"{result.clean_ld:.3f}"
    assert {m.label: m.proto.delta for m in again.metric}["Computed in"] == "cached"


def test_estimate_is_labelled_as_such(run_page):
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(3).run()
    app.button(key="ab_preview").click().run(timeout=300)
    assert not app.exception
    assert any("Estimate" in w.value for w in app.warning)
    method = next(m for m in app.metric if m.label == "Method")
    assert (shown(method.value), method.proto.delta) == ("mean", "estimate")


def test_task_the_model_never_gets_right_shows_an_error_and_the_page_keeps_working(run_page):
    app = run_page("pages/ablation.py")
    app.selectbox(key="task").set_value("months").run()
    app.number_input(key="n").set_value(3).run()
    app.checkbox(key="only_correct").check().run()
    app.button(key="ab_preview").click().run(timeout=300)
    assert not app.exception
    assert any("gets none of the" in shown(e.value) for e in app.error)
    app.checkbox(key="only_correct").uncheck().run()
    app.button(key="ab_preview").click().run(timeout=300)
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert (metrics["Prompts"], metrics["Tokens each"]) == ("3", "5")


def test_clear_asks_first_and_removes_only_this_models_sweeps(run_page):
    from headscope.ablation import CACHE_KIND
    from headscope.results_cache import ResultsCache

    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(2).run()
    app.button(key="ab_preview").click().run(timeout=300)
    _identity, sweep = app.session_state["ab_result"]
    cache = ResultsCache()
    other = {**sweep.key, "model_source": "another/model"}  # a colleague's sweep of another model
    cache.store(CACHE_KIND, other, {"anything": 1})
    # read back from the cache, a sweep's time is the original computation's
    again = run_page("pages/ablation.py", n=2)
    shown_metrics = {m.label: (m.value, m.proto.delta, m.proto.help) for m in again.metric}
    assert "Time" not in shown_metrics
    value, delta, help_text = shown_metrics["Computed in"]
    assert value.endswith(" s") and delta == "cached" and f"Computed in {value} on cpu" in shown(help_text)

    clear = app.button(key="ab_clear")
    assert shown(clear.label) == "Clear this model's cached sweeps…"
    clear.click().run()
    assert not app.exception and app.metric  # nothing removed before the confirmation
    assert any("Remove 1 cached sweep of SmolLM2-135M-Instruct" in shown(w.value) for w in app.warning)
    app.button(key="ab_clear_yes").click().run()
    assert not app.exception
    assert not app.metric  # nothing of this model cached, nothing shown
    assert len(cache.entries(CACHE_KIND)) == 1 and cache.load(CACHE_KIND, other) == {"anything": 1}


def test_clearing_is_off_on_a_shared_server_unless_allowed(run_page, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_NETWORK_MODE", "1")
    assert run_page("pages/ablation.py").button(key="ab_clear").disabled
    monkeypatch.setenv("HEADSCOPE_ALLOW_CLEAR", "1")
    assert not run_page("pages/ablation.py").button(key="ab_clear").disabled


def test_an_upload_error_gets_no_hint_to_press_run_below_it(run_page):
    app = run_page("pages/ablation.py")
    app.radio(key="source").set_value("Upload a dataset").run()
    assert next(shown(i.value) for i in app.info if "press Run exact sweep" in shown(i.value)).startswith("Upload")
    app.file_uploader(key="ab_upload").upload("bad.csv", b"prompt,answer\n1,2\n", "text/csv").run()
    assert not app.exception and app.error
    assert not [i for i in app.info if "press" in i.value]


def test_another_models_sweep_is_never_shown_as_this_ones(run_page):
    # the last sweep is kept with the model it came from: after a model switch it names that model instead of
    # drawing its numbers (and its heads, which the loaded model may not have) under the loaded model
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(2).run()
    app.button(key="ab_preview").click().run(timeout=300)
    identity, sweep = app.session_state["ab_result"]
    app.session_state["ab_result"] = ({**identity, "model_source": "another/model"}, sweep)
    app.number_input(key="n").set_value(5).run()  # a configuration with nothing cached
    assert not app.exception and not shown_charts(app)
    assert any("not of the model loaded now" in c.value for c in app.caption)


def test_a_head_the_sweep_does_not_have_is_not_selected(run_page):
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(2).run()
    app.button(key="ab_preview").click().run(timeout=300)
    identity, sweep = app.session_state["ab_result"]
    # a sweep of a smaller model under the same identity: a link's head=23.3 exists in the model, not in the sweep
    small = type(sweep)(**{**sweep.__dict__, "ablated_ld": sweep.ablated_ld[:3, :4],
                           "mlp_ablated_ld": sweep.mlp_ablated_ld[:3]})
    app.session_state["ab_result"] = (identity, small)
    app.number_input(key="n").set_value(5).run()
    app.query_params["head"] = "23.3"
    app.run()
    assert not app.exception and "head" not in app.query_params  # the link's head is dropped
    # the same head held in the session (selected on a larger sweep), with none in the URL
    app.session_state["ab_selected"] = Component(23, 3)
    app.run()
    assert not app.exception and "head" not in app.query_params


def test_the_estimate_asked_for_stays_on_screen_when_another_control_changes(run_page):
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(2).run()
    app.button(key="ab_run").click().run(timeout=600)  # an exact sweep is cached for this configuration
    app.button(key="ab_preview").click().run(timeout=300)
    method = next(m for m in app.metric if m.label == "Method")
    assert method.proto.delta == "estimate"
    app.selectbox(key="show").set_value("change from clean").run()
    method = next(m for m in app.metric if m.label == "Method")
    assert method.proto.delta == "estimate"  # not swapped for the cached exact sweep


def test_the_step_task_has_its_step_here_as_on_the_circuit_page(run_page):
    app = run_page("pages/ablation.py")
    app.selectbox(key="task").set_value("step").run()
    app.number_input(key="step").set_value(3).run()
    app.number_input(key="n").set_value(2).run()
    app.button(key="ab_preview").click().run(timeout=300)
    assert not app.exception and not app.error
    _, sweep = app.session_state["ab_result"]
    numbers = [int(word) for word in sweep.first_prompt.split()]
    assert {b - a for a, b in itertools.pairwise(numbers)} == {3}
