"""AppTest of the ablation page's direct effects: the toggle over the map, the DLA map, the sum check, the scatter of
direct against total effect, and what a clicked head writes. The numbers shown are the engine's (its correctness is
tests/model's); the page must show them, for the same prompts as the sweep."""

import base64
import json

import numpy as np
import pytest

from components.logit_attribution import DIRECT, TOTAL
from headscope.api import Model
from headscope.component import Component
from headscope.loading import ModelRequest
from headscope.logit_attribution import head_writes, run_dla
from headscope.tasks import build_task_dataset
from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _array(value) -> np.ndarray:
    """A Plotly JSON array: a list, or the typed-array form {"dtype", "bdata"(base64), "shape"}."""
    if not isinstance(value, dict):
        return np.asarray(value, dtype=float)
    flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).astype(float)
    shape = value.get("shape")
    return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat


def _markers(app, title_part: str) -> dict:
    """The first trace of the Plotly chart whose title holds `title_part`."""
    for chart in app.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if title_part in spec["layout"].get("title", {}).get("text", ""):
            return spec["data"][0]
    raise AssertionError(f"no chart titled …{title_part}…")


def test_direct_effects_toggle_map_sum_check_and_scatter(run_page, embedded_model):
    app = run_page("pages/ablation.py")
    app.number_input(key="n").set_value(2).run()
    app.button(key="ab_preview").click().run(timeout=300)  # the estimate: quick, and a sweep of the same prompts
    assert not app.exception and not app.error
    assert app.segmented_control(key="effect").value == TOTAL
    sweep = app.session_state["ab_result"][1]
    app.segmented_control(key="effect").set_value(DIRECT).run(timeout=300)
    assert not app.exception and not app.error

    # the engine's DLA of the same two prompts (the page's, read back from the results cache)
    dla = run_dla(embedded_model, build_task_dataset("digits", 2, seed=0, model=embedded_model))
    assert dla.cached and dla.n_prompts == 2
    n_layers, n_heads = dla.head_dla.shape

    cells = _markers(app, "direct logit attribution")
    colours = _array(cells["marker"]["color"])
    np.testing.assert_allclose(colours[: n_layers * n_heads], dla.head_dla.ravel(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(colours[n_layers * n_heads:], dla.mlp_dla, rtol=1e-5, atol=1e-9)

    check = next(shown(m.value) for m in app.markdown if "Sum check" in shown(m.value))
    parts = float(dla.head_dla.sum() + dla.mlp_dla.sum() + dla.embed_dla + dla.bias_dla)  # summed here
    assert f"= {parts:.3f};" in check and f"clean LD {dla.clean_ld:.3f}" in check
    assert f"the sweep's {sweep.clean_ld:.3f}" in check
    assert abs(parts - dla.clean_ld) <= 1e-3 * max(1.0, abs(dla.clean_ld))
    assert not [w for w in app.warning if "not to the clean LD" in shown(w.value)]

    # scatter: x the sweep's total effect (clean − ablated), y the direct effect, each point naming its head
    points = _markers(app, "Direct vs total")
    custom = _array(points["customdata"])
    layers, heads = custom[:, 0].astype(int), custom[:, 1].astype(int)
    total = sweep.clean_ld - sweep.ablated_ld
    np.testing.assert_allclose(_array(points["x"]), total[layers, heads], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(_array(points["y"]), dla.head_dla[layers, heads], rtol=1e-5, atol=1e-9)
    assert "head %{customdata[0]:.0f}.%{customdata[1]:.0f}" in points["hovertemplate"]

    # the line naming heads that act through later heads: the top 10 by total effect with direct < half of it
    top = np.argsort(-np.abs(total), axis=None, kind="stable")[:10]
    expected = [f"{i // n_heads}.{i % n_heads}" for i in top
                if dla.head_dla.ravel()[i] / total.ravel()[i] < 0.5]
    caption = next(shown(c.value) for c in app.caption if "act through later heads" in shown(c.value))
    assert caption.endswith(": " + (", ".join(expected) or "none") + ".")

    # the direct effects' confidence: the largest heads with the engine's bootstrap intervals and top-10 stability
    table = next(df.value for df in app.dataframe if "direct LD" in df.value.columns)
    confidence = dla.confidence()
    expected_heads = dla.top_heads(len(table))
    assert list(table["cell"]) == [head.label for head in expected_heads]
    rows = ([h.layer for h in expected_heads], [h.head for h in expected_heads])
    np.testing.assert_allclose(table["direct LD"], dla.head_dla[rows], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(table["low"], confidence.intervals.low[rows], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(table["high"], confidence.intervals.high[rows], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(table["in top-10"], confidence.stability.frequency[rows])
    assert list(table["crosses 0"]) == list(confidence.intervals.crosses_zero[rows])

    # Copy as code: the notebook's last line is the DLA of the same prompts, read back from the same cache
    cell = next(c.value for c in app.code if c.value.startswith("import headscope as hs")).splitlines()
    assert cell[-2:] == ["model.sweep(task='digits', n_prompts=2, seed=0, method='mean', estimate=True)",
                         "model.dla(task='digits', n_prompts=2, seed=0)"]
    notebook = eval(cell[-1], {"model": Model(embedded_model, ModelRequest())})
    assert notebook.result.cached and np.array_equal(notebook.result.head_dla, dla.head_dla)

    # other prompts chosen above: the sweep stays on screen as the last one, and no DLA of other prompts beside it
    app.number_input(key="seed").set_value(1).run()
    assert not app.exception and not app.error
    assert any("computed on the sweep's own prompts" in shown(i.value) for i in app.info)
    assert not [m for m in app.markdown if "Sum check" in shown(m.value)]


def test_a_selected_head_shows_its_direct_effect_and_what_it_writes(run_page, embedded_model):
    head = Component(3, 1)
    app = run_page("pages/ablation.py", n=2)
    app.button(key="ab_preview").click().run(timeout=300)
    app.session_state["ab_selected"] = head
    # a DLA run stopped by its Cancel button (the flags progress_with_cancel leaves): the page says so and waits
    app.session_state["dla_running"] = "direct logit attribution"
    app.session_state["dla_cancelled"] = True
    app.segmented_control(key="effect").set_value(DIRECT).run(timeout=300)
    assert not app.exception and not app.error
    assert any("direct logit attribution was cancelled" in shown(i.value) for i in app.info)
    assert not [m for m in app.markdown if "Sum check" in shown(m.value)]
    app.run()  # any other rerun keeps waiting
    assert not [m for m in app.markdown if "Sum check" in shown(m.value)]
    app.button(key="dla_start").click().run(timeout=300)
    assert not app.exception and not app.error
    assert any("Sum check" in shown(m.value) for m in app.markdown)
    dla = run_dla(embedded_model, build_task_dataset("digits", 2, seed=0, model=embedded_model))
    line = next(shown(m.value) for m in app.markdown if shown(m.value).startswith("Head 3.1"))
    assert line.endswith(f"direct effect {dla.head_dla[3, 1]:+.3f}")

    sweep = app.session_state["ab_result"][1]
    writes = head_writes(embedded_model, sweep.first_prompt, head, sweep.seq_len - 1, 10)
    promoted, suppressed = [df.value for df in app.dataframe if list(df.value.columns) == ["token", "id", "logit"]][:2]
    assert list(promoted["id"]) == [e.token_id for e in writes.promoted]
    np.testing.assert_allclose(promoted["logit"], [e.logit for e in writes.promoted], rtol=1e-5)
    assert list(suppressed["id"]) == [e.token_id for e in writes.suppressed]
    np.testing.assert_allclose(suppressed["logit"], [e.logit for e in writes.suppressed], rtol=1e-5)

    # an MLP's cell: what the MLP writes there (no OV view: that is a head's)
    app.query_params["head"] = "mlp24"  # as a click leaves it in the link (which wins over the session's head)
    app.run()
    assert not app.exception and not app.error
    assert any(shown(h.value).startswith("What MLP 24 writes") for h in app.subheader)
    tables = [df.value for df in app.dataframe if list(df.value.columns) == ["token", "id", "logit"]]
    mlp_writes = head_writes(embedded_model, sweep.first_prompt, Component.mlp(24), sweep.seq_len - 1, 10)
    assert len(tables) == 2 and list(tables[0]["id"]) == [e.token_id for e in mlp_writes.promoted]
