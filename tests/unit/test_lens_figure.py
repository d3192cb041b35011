"""The logit lens figure, built as one Plotly layout: a panel per measure over one x axis, the first top-1 layer
marked in each, with and without a contrast answer (without one, rounding once put a panel's domain below 0)."""

import pytest

from components.lens_view import lens_figure
from headscope.lens import LensLayer, LensResult


@pytest.mark.parametrize("contrast", ["4", None])
def test_a_panel_per_measure_over_one_x_axis(contrast):
    layers = tuple(LensLayer(layer, max(1, 300 // (layer + 2)), 0.03 * (layer + 1),
                             None if contrast is None else 0.5 * layer) for layer in range(-1, 30))
    figure = lens_figure(LensResult("5", contrast, layers, 23))
    rows = 2 if contrast is None else 3
    assert [trace.yaxis for trace in figure.data] == ["y", "y2", "y3"][:rows]
    assert list(figure.data[0].y) == [entry.rank for entry in layers]
    assert list(figure.data[1].y) == [entry.prob for entry in layers]
    domains = [figure.layout[f"yaxis{'' if row == 0 else row + 1}"].domain for row in range(rows)]
    assert all(0 <= low < high <= 1 for low, high in domains)
    assert all(domains[row][0] > domains[row + 1][1] for row in range(rows - 1))  # top to bottom, not overlapping
    assert figure.layout.yaxis.type == "log" and figure.layout.yaxis.autorange == "reversed"
    assert figure.layout.xaxis.anchor == f"y{rows}"  # the one x axis under the bottom panel
    assert [shape.x0 for shape in figure.layout.shapes] == [23] * rows
    assert [a.text for a in figure.layout.annotations][-1] == (
        "probability of the answer" if contrast is None else "logit[answer] − logit[contrast]")
    assert not lens_figure(LensResult("5", contrast, layers, None)).layout.shapes  # never top-1: no mark
