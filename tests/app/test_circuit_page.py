"""AppTest of the circuit page: find a circuit, draw it, compare two cached circuits and an uploaded one."""

import json

import pytest

from components.preload import is_preload
from headscope.circuit import CircuitResult
from headscope.component import Component
from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _small(app, method="mean"):
    app.number_input(key="n").set_value(2).run()
    app.checkbox(key="one_pass").check().run()
    app.selectbox(key="method").set_value(method).run()
    return app


def test_find_circuit_draws_grid_diagram_line_tables_and_compares(run_page, embedded_model):
    app = _small(run_page("pages/circuit.py"))
    assert not app.exception
    # nothing found yet, nothing drawn but the hidden chart that has the browser load the chart code before the search
    assert [is_preload(chart.proto.id) for chart in app.get("plotly_chart")] == [True]
    app.button(key="ci_run").click().run(timeout=900)
    assert not app.exception and not app.error
    result = app.session_state["ci_result"]
    assert isinstance(result, CircuitResult) and not result.estimate
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Circuit score"] == f"{result.score:.1f}%" and result.score >= 80.0
    assert metrics["Heads kept"] == f"{len(result.heads)} / 270" and metrics["MLPs kept"] == f"{len(result.mlps)} / 30"
    assert metrics["Passes"] == "1"
    charts = [c.proto.spec for c in app.get("plotly_chart")]
    assert len(charts) >= 3  # grid, layered diagram, score line
    grid = json.loads(charts[0])
    names = {trace.get("name") for trace in grid["data"]}
    assert {"kept head", "removed"} <= names
    cells = sum(len(trace["x"]) for trace in grid["data"] if trace.get("name"))
    assert cells == 30 * 10  # every head and every MLP, once
    kept_trace = next(t for t in grid["data"] if t.get("name") == "kept head")
    assert sorted(map(tuple, kept_trace["customdata"])) == sorted((h.layer, h.head) for h in result.heads)
    frames = [df.value for df in app.dataframe]
    removal = next(f for f in frames if "score after (%)" in f.columns)
    assert len(removal) == len(result.removals)
    kept = next(f for f in frames if "score without it (%)" in f.columns)
    assert len(kept) == result.size

    # a second circuit (zero ablation), then both compared on one grid
    _small(app, "zero")
    app.button(key="ci_run").click().run(timeout=900)
    assert not app.exception and not app.error
    second = app.session_state["ci_result"]
    metrics = {m.label: m.value for m in app.metric}
    # |A ∩ B| / |A ∪ B| over heads and MLPs, computed here from the two circuits' own lists
    first_parts = {("head", h.layer, h.head) for h in result.heads} | {("mlp", m) for m in result.mlps}
    second_parts = {("head", h.layer, h.head) for h in second.heads} | {("mlp", m) for m in second.mlps}
    expected = len(first_parts & second_parts) / len(first_parts | second_parts)
    assert metrics["Jaccard (A, B)"] == f"{expected:.3f}"
    overlap = json.loads(app.get("plotly_chart")[-1].proto.spec)
    assert "Overlap of 2 circuits" in overlap["layout"]["title"]["text"]
    assert {t.get("name") for t in overlap["data"]} & {"shared", "only A", "only B"}


def test_estimate_is_labelled_and_a_cached_circuit_shows_at_once(run_page):
    app = _small(run_page("pages/circuit.py"))
    app.button(key="ci_estimate").click().run(timeout=600)
    assert not app.exception and not app.error
    assert any("Estimate" in w.value for w in app.warning)
    again = _small(run_page("pages/circuit.py"))  # another visitor: the estimate is read from the cache
    assert again.session_state["ci_result"].estimate and again.session_state["ci_result"].cached
    app.button(key="ci_clear").click().run()
    app.button(key="ci_clear_yes").click().run()
    assert not app.exception and not app.metric


def test_a_task_the_model_cannot_do_shows_an_error_and_the_step_task_takes_a_step(run_page):
    app = _small(run_page("pages/circuit.py"))
    app.selectbox(key="task").set_value("letters").run()  # the embedded model prefers the wrong letter
    app.number_input(key="n").set_value(8).run()
    app.button(key="ci_estimate").click().run(timeout=600)
    assert not app.exception
    assert any("≤ 0" in e.value for e in app.error)
    app.selectbox(key="task").set_value("step").run()
    app.number_input(key="step").set_value(3).run()
    assert not app.exception and not app.error


def test_the_task_in_a_link_is_its_name(run_page):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file("../../pages/circuit.py", default_timeout=300)
    app.query_params["task"] = "months"
    app.run()
    assert not app.exception and app.selectbox(key="task").value == "months"


def test_an_upload_gets_the_checks_and_limits_of_the_ablation_page(run_page):
    app = run_page("pages/circuit.py")
    app.radio(key="source").set_value("Upload a dataset").run()
    assert any("Limits on this server" in c.value for c in app.caption)
    app.file_uploader(key="ci_upload").upload("latin.csv", 'prompt,correct,incorrect\n"café ",1,2\n'.encode("latin-1"),
                                              "text/csv").run()
    assert any("not UTF-8" in shown(e.value) for e in app.error)
    assert app.button(key="ci_run").disabled
    bom = '\ufeffprompt,correct,incorrect\n"1 2 3 4 ",5,4\n"2 3 4 5 ",6,5\n'.encode()
    app.file_uploader(key="ci_upload").upload("excel.csv", bom, "text/csv").run()
    assert not app.error and not app.button(key="ci_run").disabled


def test_the_selected_head_is_in_the_link(run_page):
    app = _small(run_page("pages/circuit.py"))
    app.button(key="ci_estimate").click().run(timeout=300)
    app.session_state["ci_selected"] = Component(23, 3)
    app.run()
    assert not app.exception and app.query_params.get("head") == "23.3"
    assert any("23.3" in s.value for s in app.subheader)


def test_a_search_stopped_before_its_end_says_so_on_the_next_run(run_page):
    # a control changed while a search ran stops it (Streamlit reruns the page): the search's flag is still set
    app = run_page("pages/circuit.py", ci_running="search")
    assert not app.exception
    assert any("The search was cancelled because a control changed" in shown(i.value) for i in app.info)
    app.run()  # said once
    assert not any("was cancelled" in shown(i.value) for i in app.info)
    # the Cancel button's own flag: cancelled, with no reason to give
    app = run_page("pages/circuit.py", ci_running="estimate", ci_cancelled=True)
    assert any(shown(i.value).startswith("The estimate was cancelled; nothing was stored") for i in app.info)
