"""Copy as code: the notebook lines a page gives reproduce its view, run against the same model and the same
results cache (a sweep computed on the page opens at once in the notebook)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import headscope as hs
from headscope.api import Model
from headscope.loading import ModelRequest
from tests.app.linked import TIMEOUT, open_page


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _cell(app: AppTest) -> str:
    (cell,) = [code.value for code in app.code if code.value.startswith("import headscope as hs")]
    return cell


def _run_cell(cell: str, embedded_model) -> object:
    """The cell's lines run as a notebook would, `hs.load()` answered by the already loaded embedded model (the
    line itself is checked to ask for it); the value of the last line."""
    lines = cell.splitlines()
    # the pages' model is pinned to the CPU in float32 in the tests (tests/app/conftest.py): the line names that
    assert lines[1] == "model = hs.load(device='cpu', dtype='float32')"
    scope = {"hs": hs, "model": Model(embedded_model, ModelRequest())}
    for line in lines[2:-1]:
        exec(line, scope)
    return eval(lines[-1], scope)


def test_the_prompt_testers_code_gives_its_numbers(embedded_model):
    params = {"prompt": 'Monday "Tuesday" Wednesday', "answer": " Thursday", "contrast": " Friday", "top_k": "7",
              "position": "2"}
    app = open_page("pages/prompt_tester.py", params)
    assert not app.exception and not app.error
    cell = _cell(app)
    assert cell.splitlines()[-1] == ("model.tokens('Monday \"Tuesday\" Wednesday', answer=' Thursday', "
                                     "contrast=' Friday', top_k=7, position=2)")
    tokens = _run_cell(cell, embedded_model)
    page_top_k = next(frame for frame in (f.value for f in app.dataframe) if "logprob" in frame.columns)
    assert len(page_top_k) == 7 == len(tokens.top_k)
    assert list(page_top_k["id"]) == [p.id for p in tokens.top_k]
    assert tokens.position == 2


def test_the_ablation_pages_code_opens_its_sweep_from_the_cache(embedded_model):
    app = open_page("pages/ablation.py", {"n": "3", "seed": "1", "method": "zero"})
    app.button(key="ab_preview").click().run(timeout=TIMEOUT)
    assert not app.exception and not app.error
    cell = _cell(app)
    assert cell.splitlines()[-1] == ("model.sweep(task='digits', n_prompts=3, seed=1, method='zero', "
                                     "estimate=True)")
    sweep = _run_cell(cell, embedded_model)
    assert sweep.cached and sweep.estimate  # the page's result, not a new computation
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Clean LD"] == f"{sweep.clean_ld:.3f}" and metrics["Prompts"] == str(sweep.n_prompts)
