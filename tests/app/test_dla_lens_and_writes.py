"""AppTest of the logit lens on the prompt tester and of "what a head writes" on the attention page: the numbers shown
are the engine's (headscope.lens, headscope.logit_attribution; their correctness is tests/model's)."""

import numpy as np

from headscope.component import Component
from headscope.lens import logit_lens
from headscope.logit_attribution import head_writes, ov_view
from headscope.tokens import tokenize_prompt
from tests.shown import shown

EFFECT_COLUMNS = ["token", "id", "logit"]


def _effect_tables(app):
    return [df.value for df in app.dataframe if list(df.value.columns) == EFFECT_COLUMNS]


def _same_effects(frame, effects):
    assert list(frame["id"]) == [e.token_id for e in effects]
    assert list(frame["token"]) == [e.token for e in effects]  # visible whitespace: the engine's display form
    np.testing.assert_allclose(frame["logit"], [e.logit for e in effects], rtol=1e-5, atol=1e-9)


def test_attention_page_shows_what_the_chosen_head_writes_and_its_ov_view(run_page, embedded_model):
    app = run_page("pages/attention.py", ap_pending_heads="4.4, 2.1")  # as a click on a score heatmap leaves it
    assert not app.exception and not app.error
    prompt = app.text_area(key="prompt").value
    head = Component(4, 4)  # the single-head view's first head
    assert any(shown(s.value) == "What head 4.4 writes" for s in app.subheader)
    last = len(tokenize_prompt(embedded_model, prompt)) - 1
    promoted, suppressed, ov_promoted, ov_suppressed = _effect_tables(app)
    writes = head_writes(embedded_model, prompt, head, last, 10)
    _same_effects(promoted, writes.promoted)
    _same_effects(suppressed, writes.suppressed)
    typed = app.text_input(key=f"ap_writes_ov_token_{last}").value  # the token at the chosen position
    ov = ov_view(embedded_model, head, typed, 10)
    _same_effects(ov_promoted, ov.promoted)
    _same_effects(ov_suppressed, ov.suppressed)

    # another position and k; then an OV token that is not one token: a message, the page keeps working
    app.selectbox(key="ap_writes_position").set_value(2)
    app.number_input(key="ap_writes_k").set_value(3).run()
    promoted = _effect_tables(app)[0]
    _same_effects(promoted, head_writes(embedded_model, prompt, head, 2, 3).promoted)
    app.text_input(key="ap_writes_ov_token_2").input("a whole sentence of tokens").run()
    assert not app.exception and app.error
    assert len(_effect_tables(app)) == 2  # the position's tables stay; the OV view gives way to the message
    app.text_input(key="ap_writes_ov_token_2").input("").run()
    assert not app.exception and not app.error
    assert any("Type a token" in shown(c.value) for c in app.caption)


def test_logit_lens_shows_with_the_first_answer_then_has_a_row_per_layer_and_marks_the_first_top1_layer(
        run_page, monkeypatch):
    """The lens comes from the prompt tester's own forward (issue 20: Ctrl+Enter): on a fresh server it shows with
    the first answer, with no TransformerLens set-up, no button and no note. Then a row per layer, the engine's
    numbers."""
    from headscope import registry
    from tests.pinned import EMBEDDED_ON_CPU

    fresh = registry.ModelRegistry()  # a model as a fresh server has it: hooks not set up yet
    monkeypatch.setattr(registry, "_SHARED", fresh)
    app = run_page("pages/prompt_tester.py")  # "1 2 3 4 ", answer 5, contrast 4
    assert not app.exception and not app.error
    model = fresh.loaded(EMBEDDED_ON_CPU)
    assert not model.hooks_ready  # the lens needed none
    assert not any("hooks" in shown(c.value) or "next run" in shown(c.value) for c in app.caption)
    assert not any("logit lens" in button.label for button in app.button)

    lens = logit_lens(model, "1 2 3 4 ", "5", "4")
    table = next(df.value for df in app.dataframe if "top-1" in df.value.columns)
    assert len(table) == model.info.n_layers + 1 == len(lens.layers)  # the embeddings, then each layer
    assert table["after"].iloc[0] == "embed" and list(table["after"][1:]) == [
        str(layer) for layer in range(model.info.n_layers)]
    assert list(table["rank"]) == [entry.rank for entry in lens.layers]
    np.testing.assert_allclose(table["probability"], [entry.prob for entry in lens.layers], rtol=1e-5)
    np.testing.assert_allclose(table["logit difference"], [entry.logit_diff for entry in lens.layers], rtol=1e-5,
                               atol=1e-6)
    assert lens.first_top1_layer is not None  # the model answers 5: the answer is top-1 by the last layer
    marked = table.index[table["top-1"] == "✓ first"].tolist()
    assert marked == [lens.first_top1_layer + 1]
    assert any(shown(m.value) == f"The answer '5' is first the top-1 token after layer {lens.first_top1_layer}."
               for m in app.markdown)
    # without a contrast answer the logit difference column goes
    app.text_input(key="contrast").input("").run()
    table = next(df.value for df in app.dataframe if "top-1" in df.value.columns)
    assert "logit difference" not in table.columns and not app.exception
