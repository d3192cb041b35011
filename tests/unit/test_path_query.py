"""The pure parts of path patching: which paths a query names, where a receiver's patch acts on a grouped-query
model, how per-path values become the grid, and the ranking of paths."""

from __future__ import annotations

import numpy as np
import pytest

from headscope.backends.interventions import PathEdge, Site, SiteKind, receiver_site
from headscope.component import Component
from headscope.errors import InputError
from headscope.path_patching import PathQuery, PathResult, _grid, partners


def test_partners_are_later_earlier_or_every_head():
    assert partners(PathQuery(sender=Component(1, 0)), 3, 2) == [Component(2, 0), Component(2, 1)]
    assert partners(PathQuery(receiver=Component(1, 1)), 3, 2) == [Component(0, 0), Component(0, 1)]
    assert len(partners(PathQuery(to_logits=True), 3, 2)) == 6


def test_grouped_keys_and_values_act_on_the_group_queries_on_the_head():
    head = Component(4, 7)
    assert receiver_site(SiteKind.K_INPUT, head, 3) == Site(SiteKind.K_INPUT, 4, 6)
    assert receiver_site(SiteKind.V_INPUT, head, 1) == Site(SiteKind.V_INPUT, 4, 7)
    assert receiver_site(SiteKind.Q_INPUT, head, 3) == Site(SiteKind.Q_INPUT, 4, 7)


def test_grid_spreads_a_group_value_over_its_query_heads_and_keeps_the_logits_path_apart():
    query = PathQuery(sender=Component(0, 1), into="v")
    edges = (PathEdge(Component(0, 1), Site(SiteKind.V_INPUT, 1, 0)),
             PathEdge(Component(0, 1), Site(SiteKind.V_INPUT, 1, 2)), PathEdge(Component(0, 1), None))
    per_edge = np.array([[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]])
    grid, to_logits = _grid(edges, per_edge, query, n_layers=2, n_heads=4, heads_per_kv=2)
    assert to_logits == 10.0
    assert np.isnan(grid[:, 0]).all()
    assert grid[:, 1].tolist() == [[1.0, 1.0, 5.0, 5.0], [3.0, 3.0, 7.0, 7.0]]


@pytest.mark.parametrize("query,message", [
    (PathQuery(), "exactly one"),
    (PathQuery(sender=Component(0, 0), to_logits=True), "exactly one"),
    (PathQuery(sender=Component(0, 0), into="o"), "Unknown input"),  # type: ignore[arg-type]
    (PathQuery(sender=Component(0, 0), direction="sideways"), "Unknown direction"),  # type: ignore[arg-type]
    (PathQuery(sender=Component(0, 0), direction="denoise", method="zero"), "noising only"),
])
def test_options_without_a_query_are_refused(query, message):
    with pytest.raises(InputError, match=message):
        query.check_options()


def test_top_paths_rank_by_the_size_of_the_change():
    ld = np.array([[np.nan, np.nan], [1.5, 0.2], [1.1, 0.9]])
    result = PathResult(model="m", task="t", query=PathQuery(sender=Component(0, 0)), clean_ld=1.0,
                        corrupt_ld=0.0, ld=ld, per_prompt_ld=ld[None], run_prompt_ld=np.array([1.0]),
                        to_logits_ld=None, kv_grouped=False,
                        n_prompts=1, seconds=0.0)
    ranked = result.top_paths(3)
    assert [head.label for head, _ in ranked] == ["1.1", "1.0", "2.0"]
    assert len(result.top_paths(10)) == 4  # the sender's own layer holds no partners
