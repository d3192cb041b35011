"""AppTest of the Paths page on the embedded model (30 layers × 9 heads, 3 KV heads), kept small: a sender in layer
27 has 18 receivers, a receiver in layer 1 has 9 senders. The numbers themselves are checked in tests/model; here the
page shows the result it computed, blank where a head is no partner, reads it back from the cache, reopens a link's
view, re-centres on a clicked head and refuses heads that have no partners with a message."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from components.path_view import paths_csv
from headscope.api import Model
from headscope.component import Component
from headscope.loading import ModelRequest
from tests.app.linked import TIMEOUT, open_page
from tests.shown import shown

PAGE = "pages/paths.py"


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _metrics(app) -> dict[str, str]:
    return {shown(m.label): m.value for m in app.metric}


def _cells(app) -> list[tuple[int, int]]:
    """The (layer, head) of every cell the grid draws (its first trace: the clickable squares)."""
    custom = json.loads(app.get("plotly_chart")[0].proto.spec)["data"][0]["customdata"]
    if isinstance(custom, dict):  # Plotly's typed-array form of a numpy array
        shape = [int(n) for n in custom["shape"].split(",")]
        custom = np.frombuffer(base64.b64decode(custom["bdata"]), dtype=custom["dtype"]).reshape(shape)
    return [(round(float(row[0])), round(float(row[1]))) for row in custom]


def _result(app):
    return app.session_state["pa_result"][1]


def _check_confidence(app, result, model) -> None:
    """The Confidence expander lists the strongest paths with the interval and top-10 share of a bootstrap computed
    here: each prompt's change is its patched LD minus its own clean LD (the backend's answer logits, whose mean is
    the clean LD the path run measured), resampled with the draw docs/confidence.md states."""
    import torch

    from headscope.tasks import build_task_dataset, prepare_dataset

    encoded = prepare_dataset(model, build_task_dataset("digits", result.n_prompts, seed=0, model=model))
    logits = model.answer_logits(encoded.clean, torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1))
    run = (logits[:, 0] - logits[:, 1]).double().numpy()
    assert run.mean() == pytest.approx(result.clean_ld, abs=1e-5)
    partners = np.isfinite(result.ld)
    effects = result.per_prompt_ld[:, partners] - run[:, None]  # [prompt, partner]
    draws = np.random.default_rng(0).integers(0, len(run), size=(1000, len(run)))
    means = effects[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    share = np.zeros(effects.shape[1])
    for sample in np.abs(means):
        share[np.argsort(-sample)[:10]] += 1
    cells = [f"{layer}.{head}" for layer, head in zip(*np.nonzero(partners), strict=True)]
    table = next(frame.value for frame in app.dataframe if "crosses 0" in frame.value.columns)
    top = next(frame.value for frame in app.dataframe if "patched LD" in frame.value.columns)
    assert list(table["cell"]) == list(top["head"]) and len(table) == 12
    for _, row in table.iterrows():
        at = cells.index(row["cell"])
        assert (row["low"], row["high"]) == pytest.approx((low[at], high[at]), abs=1e-9)
        assert row["in top-10"] == pytest.approx(share[at] / 1000, abs=1e-12)
        assert row["crosses 0"] == bool(low[at] <= 0 <= high[at])
        assert row["change"] == pytest.approx(effects[:, at].mean(), abs=1e-5)
    assert _metrics(app)["Resamples"] == "1000"
    assert any(shown(e.label).startswith("Confidence: 95% intervals") for e in app.expander)


def test_sender_view_shows_its_receivers_and_reads_back_from_the_cache(embedded_model):
    app = open_page(PAGE, {"n": "2", "sender": "27.3"})
    assert not app.exception and not app.error
    app.button(key="pa_run").click().run(timeout=TIMEOUT)
    assert not app.exception and not app.error
    result = _result(app)
    assert (result.query.sender, result.query.receiver, result.query.into) == (Component(27, 3), None, "q")
    assert (result.query.direction, result.query.method) == ("noise", "resample")
    metrics = _metrics(app)
    assert metrics["Clean LD"] == f"{result.clean_ld:.3f}" and result.clean_ld > 1  # the model continues digits
    assert metrics["Prompts"] == "2" and metrics["27.3 → logits"] == f"{result.to_logits_ld:.3f}"
    # every head of layers 28 and 29 is drawn, and nothing else: the sender's own and earlier layers stay blank
    assert sorted(_cells(app)) == [(layer, head) for layer in (28, 29) for head in range(9)]
    assert np.isnan(result.ld[:28]).all() and np.isfinite(result.ld[28:]).all()
    # the strongest paths, computed here from the raw grid
    top = next(frame.value for frame in app.dataframe if "patched LD" in frame.value.columns)
    change = result.ld[28:] - result.clean_ld
    order = np.argsort(-np.abs(change), axis=None, kind="stable")[:len(top)]
    assert list(top["head"]) == [f"{28 + i // 9}.{i % 9}" for i in order]
    assert list(top["change"]) == pytest.approx([round(float(change.flat[i]), 3) for i in order], abs=1e-9)
    # the CSV: every head, its value only where it is a receiver
    rows = paths_csv(result).splitlines()
    assert rows[0].startswith("# model=SmolLM2-135M-Instruct task=digits view=sender head=27.3 into=q")
    assert rows[1] == "layer,head,valid_partner,patched_ld,change" and len(rows) == 2 + 270
    value = float(result.ld[28, 4])
    assert rows[2 + 28 * 9 + 4] == f"28,4,True,{value!r},{value - result.clean_ld!r}"
    assert rows[2 + 27 * 9 + 4] == "27,4,False,,"
    _check_confidence(app, result, embedded_model)

    again = open_page(PAGE, {"n": "2", "sender": "27.3"})  # another visitor: from the results cache at once
    assert not again.exception
    assert _metrics(again)["Clean LD"] == metrics["Clean LD"]
    assert {m.label: m.proto.delta for m in again.metric}["Computed in"] == "cached"

    # Copy as code: the notebook's call opens the page's result from the same cache
    (cell,) = [code.value for code in again.code if code.value.startswith("import headscope as hs")]
    call = cell.splitlines()[-1]
    assert call == "model.paths(task='digits', n_prompts=2, seed=0, sender=(27, 3))"
    paths = eval(call, {"model": Model(embedded_model, ModelRequest())})
    assert paths.result.cached and np.array_equal(paths.result.ld, result.ld, equal_nan=True)

    # a receiver clicked (as the grid's click does), then "Paths from" it: the page re-centres on it and runs
    again.query_params["head"] = "28.1"
    again.run()
    assert any("Attention pattern of head 28.1" in shown(h.value) for h in again.subheader)
    assert shown(again.button(key="pa_into").label) == "Paths into 28.1" and not again.button(key="pa_into").disabled
    again.button(key="pa_from").click().run(timeout=TIMEOUT)
    assert not again.exception and not again.error
    assert again.text_input(key="sender").value == "28.1" and "head" not in again.query_params
    assert _result(again).query.sender == Component(28, 1)
    assert sorted(_cells(again)) == [(29, head) for head in range(9)]


def test_a_link_reopens_the_receiver_view_with_its_selected_head(embedded_model):
    params = {"n": "2", "view": "Receiver ← senders", "receiver": "1.4", "into": "k", "direction": "denoise",
              "show": "patched LD"}
    first = open_page(PAGE, params)
    first.button(key="pa_run").click().run(timeout=TIMEOUT)
    assert not first.exception and not first.error
    computed = _result(first)
    assert computed.kv_grouped and computed.query.receiver == Component(1, 4)

    app = open_page(PAGE, {**params, "head": "0.7"})  # a new session: from the cache, head 0.7 selected
    assert not app.exception and not app.error
    assert (app.radio(key="view").value, app.text_input(key="receiver").value) == ("Receiver ← senders", "1.4")
    assert (app.radio(key="into").value, app.radio(key="direction").value) == ("k", "denoise")
    assert app.selectbox(key="method").disabled  # denoise carries the clean value: no method
    assert {m.label: m.proto.delta for m in app.metric}["Computed in"] == "cached"
    assert sorted(_cells(app)) == [(0, head) for head in range(9)]
    assert "LD with the path patched" in app.get("plotly_chart")[0].proto.spec  # show=patched LD's colour bar
    assert any("the k input of 1.4 is its KV group's (1.3, 1.4, 1.5)" in shown(i.value) for i in app.info)
    assert _metrics(app)["Run's LD"] == f"{computed.corrupt_ld:.3f}"  # denoise patches the corrupted run
    # intervals of the corrupted run's paired effects; the receiver's k input is its KV group's, but each of the 9
    # senders is its own path (its own value), so all 9 count, and with 9 cells the top-9 keeps every one
    assert _metrics(app)["Stable in the top-10"] == "9"
    detail = next(shown(m.value) for m in app.markdown if m.value.startswith("**Head"))
    change = computed.ld[0, 7] - computed.corrupt_ld  # below 0.0005 here: two significant digits, never "-0.000"
    written = f"{change:+.3f}" if abs(change) >= 0.0005 else f"{change:+.2g}"
    assert detail == f"Head 0.7 (KV head 2): LD with its path patched {computed.ld[0, 7]:.3f}, change {written}"
    assert any("Attention pattern of head 0.7" in shown(h.value) for h in app.subheader)
    (cell,) = [code.value for code in app.code if code.value.startswith("import headscope as hs")]
    assert cell.splitlines()[-1] == ("model.paths(task='digits', n_prompts=2, seed=0, receiver=(1, 4), into='k', "
                                     "direction='denoise')")
    assert app.button(key="pa_into").disabled  # layer 0: nothing earlier writes to it
    assert not app.button(key="pa_from").disabled


@pytest.mark.parametrize(("params", "said"), [
    ({"sender": "29.2"}, "Sender 29.2 is in the last layer: no later head reads it"),
    ({"view": "Receiver ← senders", "receiver": "0.1"}, "Receiver 0.1 is in layer 0: no earlier head writes to it"),
    ({"sender": "30.1"}, "No head 30.1: this model has 30 layers of 9 heads"),
    ({"sender": "three"}, "Cannot read 'three' as a sender head"),
])
def test_a_head_without_partners_is_refused_with_a_message(params, said):
    app = open_page(PAGE, {"n": "2", **params})
    assert not app.exception
    assert any(said in shown(error.value) for error in app.error)
    assert app.button(key="pa_run").disabled
    key = "receiver" if "receiver" in params else "sender"
    app.text_input(key=key).set_value("2.1").run()  # and the page keeps working
    assert not app.exception and not app.error and not app.button(key="pa_run").disabled


def test_the_logits_view_has_no_head_box_and_no_input_choice():
    app = open_page(PAGE, {"n": "2", "view": "Every head → logits (direct effect)"})
    assert not app.exception and not app.error
    assert not [box for box in app.text_input if box.key in ("sender", "receiver")]
    assert app.radio(key="into").disabled and not app.button(key="pa_run").disabled


def test_the_logits_view_draws_every_head(embedded_model):
    app = open_page(PAGE, {"n": "2", "view": "Every head → logits (direct effect)"})
    app.button(key="pa_run").click().run(timeout=TIMEOUT)
    assert not app.exception and not app.error
    result = _result(app)
    assert result.query.to_logits and result.to_logits_ld is None
    assert sorted(_cells(app)) == [(layer, head) for layer in range(30) for head in range(9)]
    rows = paths_csv(result).splitlines()
    assert rows[1] == "layer,head,valid_partner,patched_ld,change" and len(rows) == 2 + 270
    # "Paths from" a clicked head switches the view to that head as the sender
    app.query_params["head"] = "28.1"
    app.run()
    app.button(key="pa_from").click().run(timeout=TIMEOUT)
    assert not app.exception and not app.error
    assert (app.radio(key="view").value, app.text_input(key="sender").value) == ("Sender → receivers", "28.1")
    assert _result(app).query.sender == Component(28, 1) and not app.radio(key="into").disabled


def test_a_link_to_an_uploaded_datasets_paths_opens_them_from_the_cache(embedded_model):
    rows = [{"prompt": f"{i} {i + 1} {i + 2} {i + 3} ", "correct": str(i + 4), "incorrect": str(i + 3),
             "corrupted_prompt": f"{i + 3} {i} {i + 2} {i + 1} "} for i in range(1, 3)]
    app = open_page(PAGE, {"sender": "28.1"})
    app.radio(key="source").set_value("Upload a dataset").run()
    app.file_uploader(key="pa_upload").upload("two.json", json.dumps(rows).encode(), "application/json").run()
    app.button(key="pa_run").click().run(timeout=TIMEOUT)
    assert not app.exception and not app.error
    computed = _result(app)
    # the page writes the file's name and hash; the widgets' own parameters are the browser's to write
    params = {"source": "Upload a dataset", "sender": "28.1", "dataset": app.query_params["dataset"],
              "data": app.query_params["data"]}
    assert params["dataset"] == "two.json" and computed.key["dataset_hash"].startswith(params["data"])

    linked = open_page(PAGE, params)  # no file in this session: the result comes from the cache by its hash
    assert not linked.exception and not linked.error
    assert any("The paths of 'two.json' from the results cache" in shown(c.value) for c in linked.caption)
    assert _metrics(linked)["Clean LD"] == f"{computed.clean_ld:.3f}"
    assert sorted(_cells(linked)) == [(29, head) for head in range(9)]
    # the result keeps its run's per-prompt LDs: its intervals show without the file
    assert not any("Intervals need" in shown(c.value) for c in linked.caption)
    other = open_page(PAGE, {**params, "sender": "27.1"})  # a query nobody ran on that file
    assert not other.exception and not other.get("plotly_chart")
    assert any("not in this server's results cache" in shown(i.value) for i in other.info)


def test_a_backend_without_path_patching_says_so(embedded_model, monkeypatch):
    """Every backend runs paths now (NDIF through nnsight's tracing); one that does not (the Backend interface's own
    default, as a new backend starts) gets the page's message, not a traceback, and nothing is cached."""
    from headscope.backends.base import Backend

    monkeypatch.setattr(type(embedded_model), "edge_logit_diffs", Backend.edge_logit_diffs)
    app = open_page(PAGE, {"n": "2", "view": "Every head → logits (direct effect)"})
    app.button(key="pa_run").click().run(timeout=TIMEOUT)
    assert not app.exception
    assert any("Path patching does not run on the" in shown(error.value) for error in app.error)
    assert "pa_result" not in app.session_state
