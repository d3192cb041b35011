"""A job estimated above HEADSCOPE_MAX_JOB_SECONDS waits for a confirmation on the page, with its estimate and what
to do; "Run anyway" runs it, a change of the controls forgets it."""

import pytest

from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("HEADSCOPE_MAX_JOB_SECONDS", "0.000001")


def test_a_long_sweep_asks_first_and_runs_on_run_anyway(run_page):
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(3).run()
    app.button(key="ab_run").click().run(timeout=300)
    assert not app.exception
    asked = [shown(w.value) for w in app.warning if "would take about" in shown(w.value)]
    assert len(asked) == 1 and "fewer prompts" in asked[0] and "HEADSCOPE_MAX_JOB_SECONDS" in asked[0]
    assert not app.metric  # nothing ran
    app.button(key="ab_run_anyway").click().run(timeout=600)
    assert not app.exception and not app.error
    assert {m.label: m.value for m in app.metric}["Prompts"] == "3"
    assert not [w for w in app.warning if "would take about" in shown(w.value)]


def test_a_held_job_is_forgotten_when_the_controls_change(run_page):
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(3).run()
    app.button(key="ab_run").click().run(timeout=300)
    assert app.button(key="ab_run_anyway")
    app.number_input(key="n").set_value(4).run(timeout=300)
    assert not [w for w in app.warning if "would take about" in shown(w.value)]
    assert not app.metric


def test_a_long_circuit_search_asks_first(run_page):
    app = run_page("pages/circuit.py")
    app.number_input(key="n").set_value(3).run()
    app.button(key="ci_run").click().run(timeout=300)
    assert not app.exception
    asked = [shown(w.value) for w in app.warning if "would take about" in shown(w.value)]
    assert len(asked) == 1 and asked[0].startswith("The circuit search would take about")
    assert app.button(key="ci_run_anyway")
    app.button(key="ci_drop_pending").click().run(timeout=300)
    assert not [w for w in app.warning if "would take about" in shown(w.value)]


def test_a_long_path_patching_job_asks_first(run_page):
    app = run_page("pages/paths.py")
    app.button(key="pa_run").click().run(timeout=300)
    assert not app.exception
    asked = [shown(w.value) for w in app.warning if "would take about" in shown(w.value)]
    assert len(asked) == 1 and asked[0].startswith("Path patching would take about")
    assert app.button(key="pa_run_anyway")
    app.button(key="pa_drop_pending").click().run(timeout=300)
    assert not [w for w in app.warning if "would take about" in shown(w.value)]
