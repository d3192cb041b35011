"""AppTest of the ablation page on a small dataset, with results kept in a temporary cache."""

import pytest

from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _frames(app):
    return [df.value for df in app.dataframe]


def test_exact_sweep_shows_heatmap_metrics_and_top_heads(run_page, embedded_model):
    app = run_page("pages/ablation.py")
    assert not app.exception
    app.number_input(key="n").set_value(3).run()
    app.button(key="ab_run").click().run(timeout=600)
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert float(metrics["Clean LD"]) > 0
    assert (metrics["Prompts"], metrics["Tokens each"]) == ("3", "9")
    top = next(f for f in _frames(app) if "% of clean" in f.columns)
    assert len(top) == 12
    figure = app.get("plotly_chart")[0].proto.spec
    assert '"square"' in figure  # a scatter of square cells: clicks select
    # rerunning the page (e.g. another visitor) finds the sweep in the cache at once
    again = run_page("pages/ablation.py", n=3)
    metrics = {m.label: m.value for m in again.metric}
    assert float(metrics["Clean LD"]) > 0


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


def test_clear_cached_results_forgets_the_sweep(run_page):
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(2).run()
    app.button(key="ab_preview").click().run(timeout=300)
    assert app.metric
    app.button(key="ab_clear").click().run()
    assert not app.exception
    assert not app.metric  # nothing cached, nothing shown
