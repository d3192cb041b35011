"""The Paths page's grid: its title (Plotly's never wraps) fits the map column at a projector's 1280 px with the
sidebar open, and says the model, the task and which paths."""

import json

import numpy as np
import pytest

from components.path_view import path_figure
from headscope.component import Component
from headscope.path_patching import PathQuery, PathResult

MAP_COLUMN_PX = 400  # half the main area at 1280×720 with the sidebar open (measured in Chromium: 820 px)


@pytest.mark.parametrize("query", [PathQuery(sender=Component(20, 1)), PathQuery(receiver=Component(29, 8), into="k",
                                                                                 direction="denoise"),
                                   PathQuery(to_logits=True, direction="denoise")])
def test_the_grid_and_its_title_fit_the_map_column(query):
    ld = np.ones((30, 9))
    result = PathResult(model="SmolLM2-135M-Instruct", task="number-words", query=query, clean_ld=2.0,
                        corrupt_ld=0.5, ld=ld, per_prompt_ld=ld[None], run_prompt_ld=np.array([2.0]),
                        to_logits_ld=None, kv_grouped=False,
                        n_prompts=1, seconds=0.0)
    figure = path_figure(result)
    assert figure.layout.width <= MAP_COLUMN_PX
    title = json.loads(figure.to_json())["layout"]["title"]["text"]
    first, second = title.split("<br>")
    assert first == "SmolLM2-135M-Instruct · number-words" and query.direction in second


def test_a_change_that_rounds_to_zero_keeps_its_digits():
    from components.path_view import signed_change

    assert [signed_change(v) for v in (-0.00042, 0.0, 0.0123, -1.5)] == ["-0.00042", "+0.000", "+0.012", "-1.500"]
