"""AppTest of the ablation page's confidence displays on the embedded model (grouped-query: 9 query heads over 3 KV
heads, so the unit choice shows): a KV-group sweep with its bootstrap intervals and top-10 stability, and the estimate
beside the exact sweep with Spearman's ρ. The numbers themselves are tested in tests/unit and tests/model; here, that
the page shows the numbers headscope.confidence computes from the sweep it shows."""

import pytest

from headscope.confidence import estimate_agreement, ranking_confidence
from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _frame(app, column):
    return next(df.value for df in app.dataframe if column in df.value.columns)


def test_kv_group_sweep_shows_intervals_stability_and_estimate_vs_exact(run_page, embedded_model):
    app = run_page("pages/ablation.py")
    assert not app.exception
    app.number_input(key="n").set_value(3).run()
    assert [o for o in app.radio(key="unit").options] == ["Query head", "KV group"]
    app.radio(key="unit").set_value("kv-group").run()
    app.button(key="ab_preview").click().run(timeout=300)
    assert not app.exception and not app.error
    # the estimate has no per-prompt values: the page says so instead of intervals
    assert any("Intervals need each prompt's own LD" in shown(c.value) for c in app.caption)
    app.button(key="ab_run").click().run(timeout=600)
    assert not app.exception and not app.error
    result = app.session_state["ab_result"][1]
    assert not result.estimate and result.unit == "kv-group" and result.ablated_ld.shape == (30, 3)
    assert result.per_prompt_ld.shape == (3, 30, 3)

    # intervals: the table lists the largest cells with the interval and stability computed from the sweep's values
    expected = ranking_confidence(result.per_prompt_change)
    table = _frame(app, "crosses 0")
    assert len(table) == 15
    for _, row in table.iterrows():
        layer, group = map(int, row["cell"].split(".kv"))
        assert row["low"] == pytest.approx(expected.intervals.low[layer, group], abs=1e-9)
        assert row["high"] == pytest.approx(expected.intervals.high[layer, group], abs=1e-9)
        assert row["in top-10"] == pytest.approx(expected.stability.frequency[layer, group], abs=1e-9)
        assert row["crosses 0"] == bool(expected.intervals.crosses_zero[layer, group])
    assert {m.label: m.value for m in app.metric}["Resamples"] == "1000"
    assert any("over 3 prompts, 1000 resamples, seed 0." in shown(c.value) for c in app.caption)
    from components.confidence_view import intervals_csv

    lines = intervals_csv(result, expected).splitlines()  # what the download button offers: every cell
    assert lines[1] == "layer,cell,change,low,high,crosses_zero,in_top_10" and len(lines) == 2 + 30 * 3
    assert any(b.label == "Download intervals (CSV)" for b in app.get("download_button"))

    # estimate vs exact: both sweeps are in the cache now, so the scatter and Spearman's ρ show
    from headscope.ablation import load_sweep, prepare_dataset
    from headscope.tasks import build_task_dataset

    encoded = prepare_dataset(embedded_model, build_task_dataset("digits", 3, seed=0, model=embedded_model))
    estimate = load_sweep(embedded_model, encoded, "mean", True, False, unit="kv-group")
    assert estimate is not None
    agreement = estimate_agreement(estimate.change, result.change)
    assert {m.label: m.value for m in app.metric}["Spearman's ρ"] == f"{agreement.spearman:.3f}"
    worst = _frame(app, "estimate rank")
    assert list(worst["cell"]) == [result.cell_label(*cell) for cell in agreement.worst]
    charts = [chart.proto.spec for chart in app.get("plotly_chart")]
    assert any("Spearman" in spec for spec in charts)

    # direct effects are per query head: on a KV-group map the toggle says so instead of drawing a mismatched scatter
    from components.logit_attribution import DIRECT

    app.segmented_control(key="effect").set_value(DIRECT).run(timeout=300)
    assert not app.exception and not app.error
    assert any("Direct effects are per query head" in shown(i.value) for i in app.info)
