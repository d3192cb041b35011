"""AppTest of the attention-patterns page (embedded model): presets, free entry, offline views, downloads, scores."""

import pytest

from headscope.patterns import external_references
from tests.shown import shown


@pytest.fixture(autouse=True)
def own_results_cache(tmp_path, monkeypatch):
    """Each test starts with an empty results cache: no cached scores, no ablation sweeps."""
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _frames(app) -> list[str]:
    return [frame.proto.srcdoc for frame in app.get("iframe")]


def test_default_view_shows_the_top_sequence_heads_on_a_digits_prompt(run_page):
    app = run_page("pages/attention.py")
    assert not app.exception and not app.error
    assert app.text_area(key="prompt").value == "1 2 3 4 "
    preset = app.selectbox(key="preset")
    assert preset.value == "Top 8 by sequence-member score"
    assert not any(option.startswith("Study") for option in preset.options)  # no published candidates here
    assert any(c.value.startswith("Preset heads: ") for c in app.caption)
    grid, single = _frames(app)
    assert "CircuitsVis.AttentionHeads" in grid and "CircuitsVis.AttentionPattern" in single
    for frame in (grid, single):
        assert frame.startswith("<!doctype html>") and external_references(frame) == []
        assert frame.count("var CircuitsVis=") == 1
    assert grid.count("(KV ") == 8  # eight heads, each named with the KV head that serves it
    assert app.subheader[0].value == "8 heads on 9 tokens"


def test_typed_heads_override_the_preset_and_show_their_kv_heads(run_page):
    app = run_page("pages/attention.py")
    app.text_input(key="heads").input("4.4, 2.1").run()
    assert not app.exception and not app.error
    grid = _frames(app)[0]
    assert "L4H4 (KV 1)" in grid and "L2H1 (KV 0)" in grid and grid.count("(KV ") == 2
    kv_table = next(df.value for df in app.dataframe if "kv_head" in df.value.columns)
    assert list(kv_table["head"]) == ["4.4", "2.1"] and list(kv_table["kv_head"]) == [1, 0]
    single = app.selectbox(key="single")
    assert single.options == ["4.4", "2.1"]
    single.set_value("2.1").run()
    assert '"tokens": ["<|im_start|> ' not in _frames(app)[1]  # labels are display forms, not raw strings
    downloads = {button.proto.label for button in app.get("download_button")}
    assert downloads == {"Download view as offline HTML (for slides)", "Download pattern values (CSV)"}


def test_bad_head_lists_show_an_error_and_the_page_keeps_working(run_page):
    app = run_page("pages/attention.py")
    preset = next(shown(c.value) for c in app.caption if c.value.startswith("Preset heads: "))
    app.text_input(key="heads").input("31.0").run()
    assert not app.exception
    assert [shown(e.value) for e in app.error] == [
        "Head 31.0 is out of range: SmolLM2-135M-Instruct has layers 0–29 and heads 0–8."]
    assert len(_frames(app)) == 2  # the last view stays, labelled as such
    last_view = preset.replace("Preset heads: ", "Showing the last view: heads ")
    assert any(shown(c.value).startswith(last_view + " on the prompt '1 2 3 4 '") for c in app.caption)
    assert app.selectbox(key="score") is not None  # the scores section still renders
    app.text_input(key="heads").input("3-4").run()
    assert "Cannot read '3-4' as a head" in shown(app.error[0].value)
    app.text_input(key="heads").input("3.4").run()
    assert not app.error and len(_frames(app)) == 2


def test_computing_a_score_shows_a_heatmap_a_table_and_the_usable_lists(run_page):
    app = run_page("pages/attention.py")
    app.selectbox(key="score").set_value("successor").run()
    assert any("has not been computed" in info.value for info in app.info)
    app.button(key="ap_compute").click().run()
    assert not app.exception and not app.error
    # a static table, whose cells wrap: its reasons are never cut
    usage = next(table.value for table in app.table if "usable" in table.value.columns)
    assert dict(zip(usage["list"], usage["usable"], strict=True))["numbers 1–200"] == "no"
    assert any(len(reason) > 40 for reason in usage["why not"])
    table = next(df.value for df in app.dataframe if "score" in df.value.columns)
    assert len(table) == 270 and list(table.columns) == ["layer", "head", "kv_head", "score"]
    assert list(table["score"]) == sorted(table["score"], reverse=True)
    assert any("sequence" not in chart.proto.spec and "successor" in chart.proto.spec
               for chart in app.get("plotly_chart"))
    # Computed once: the next run loads it from the cache without a button.
    app.selectbox(key="score").set_value("copying").run()
    app.selectbox(key="score").set_value("successor").run()
    assert not app.info and any("Loaded from the results cache" in c.value for c in app.caption)


def test_top_heads_by_a_score_become_the_selection(run_page):
    app = run_page("pages/attention.py")
    app.selectbox(key="preset").set_value("Top 8 by copying score").run()
    assert not app.exception and not app.error
    caption = next(shown(c.value) for c in app.caption if c.value.startswith("Preset heads: "))
    assert len(caption.removeprefix("Preset heads: ").split(", ")) == 8


def test_a_pending_heatmap_click_lands_in_the_heads_box(run_page):
    app = run_page("pages/attention.py", ap_pending_heads="4.4, 23.0")
    assert not app.exception
    assert app.text_input(key="heads").value == "4.4, 23.0"
    assert "L23H0 (KV 0)" in _frames(app)[0]


def test_a_long_prompt_is_drawn_as_a_movable_window_of_its_positions(run_page):
    from headscope.patterns import DEFAULT_VIEW_TOKENS as DRAWN

    app = run_page("pages/attention.py")
    app.text_area(key="prompt").input("The cat sat on the mat while the dog slept by the door. " * 30)
    app.text_input(key="heads").input("3.4, 17.2").run()
    assert not app.exception and not app.error
    n = int(app.subheader[0].value.split(" on ")[1].split()[0].replace(",", ""))
    assert n > DRAWN
    window = app.number_input(key="ap_window")
    assert window.value == n - DRAWN
    caption = next(c.value for c in app.caption if c.value.startswith("Drawing positions"))
    assert caption.startswith(f"Drawing positions {n - DRAWN:,}–{n - 1:,} of {n:,}")
    assert f"from 0: add {n - DRAWN:,}." in caption  # circuitsvis numbers labels within the window
    grid = _frames(app)[0]
    labels = grid.split('"tokens": [', 1)[1].split("]", 1)[0]
    assert labels.count('", "') == DRAWN - 1  # one label per drawn position
    window.set_value(0).run()
    assert not app.exception
    assert any(c.value.startswith(f"Drawing positions 0–{DRAWN - 1:,} of") for c in app.caption)
    assert _frames(app)[0] != grid
    # more positions drawn on request (each costs the browser n² cells per head); the start stays where it was
    app.number_input(key="ap_window_size").set_value(DRAWN + 16).run()
    assert not app.exception
    labels = _frames(app)[0].split('"tokens": [', 1)[1].split("]", 1)[0]
    assert labels.count('", "') == DRAWN + 16 - 1
    assert any(c.value.startswith(f"Drawing positions 0–{DRAWN + 15:,} of") for c in app.caption)


def test_every_cached_sweep_is_its_own_preset(run_page, embedded_model):
    # two sweeps that differ only in their prompts (the seed) carried one label: the second could not be chosen
    from headscope.ablation import run_sweep
    from headscope.tasks import build_task_dataset

    sweeps = [run_sweep(embedded_model, build_task_dataset("digits", 3, seed=seed, model=embedded_model), "mean",
                        estimate=True) for seed in (0, 1)]
    app = run_page("pages/attention.py")
    presets = [option for option in app.selectbox(key="preset").options if "by ablation" in option]
    assert len(presets) == len(set(presets)) == 2
    for sweep in sweeps:
        (name,) = [p for p in presets if sweep.key["dataset_hash"][:6] in p]
        app.selectbox(key="preset").set_value(name).run()
        expected = ", ".join(head.label for head in sweep.top_heads(8))
        assert any(shown(c.value) == f"Preset heads: {expected}" for c in app.caption), expected


def test_a_sweep_preset_names_what_the_user_chose_and_the_default_preset_ignores_the_cache(run_page, embedded_model):
    before = run_page("pages/attention.py")
    default = before.selectbox(key="preset").value
    sweep_page = run_page("pages/ablation.py")
    sweep_page.number_input(key="n").set_value(3).run()
    sweep_page.number_input(key="seed").set_value(1).run()
    sweep_page.button(key="ab_preview").click().run(timeout=300)
    assert not sweep_page.exception and not sweep_page.error
    app = run_page("pages/attention.py")
    assert app.selectbox(key="preset").value == default  # a cached sweep does not become the default
    (preset,) = [option for option in app.selectbox(key="preset").options if "by ablation" in option]
    assert preset == "Top 8 by ablation: digits · mean · 3 prompts · seed 1 · estimate"


def test_a_narrow_window_stays_usable_on_a_shorter_prompt(run_page):
    # the count of positions drawn, chosen on a long prompt, outlives it: a shorter prompt is then drawn in a window
    app = run_page("pages/attention.py")
    app.text_area(key="prompt").input("The cat sat on the mat while the dog slept by the door. " * 8)
    app.text_input(key="heads").input("3.4").run()
    app.number_input(key="ap_window_size").set_value(16).run()
    app.text_area(key="prompt").input("The cat sat on the mat while the dog slept by the door. The cat sat").run()
    assert not app.exception and not app.error
    assert app.number_input(key="ap_window_size").value == 16
    assert any(c.value.startswith("Drawing positions") for c in app.caption)
