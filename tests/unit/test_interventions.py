"""The intervention vocabulary without a model: groups of edits to the backends' dense form, what is refused, and
results to JSON and back through the one helper."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from headscope.backends.interventions import (
    AblationGroups,
    EdgeGroups,
    Edit,
    InterventionGroup,
    PathEdge,
    Site,
    SiteKind,
    SourceKind,
    UnsupportedIntervention,
    ValueSource,
)
from headscope.component import Component, every_component
from headscope.methods import ABLATION_METHODS, method_for_source, methods_help
from headscope.serialize import NOT_STORED, from_payload, json_field, to_payload

MEAN = ValueSource(SourceKind.MEAN)


def test_ablation_groups_become_the_masks_one_component_per_group():
    components = every_component(3, 4)
    masks, source = AblationGroups.from_groups([InterventionGroup.ablating([c], MEAN) for c in components], 3, 4)
    assert source is SourceKind.MEAN and len(masks) == 15
    for index, component in enumerate(components):
        assert int(masks.heads[index].sum() + masks.mlps[index].sum()) == 1
        assert masks.holds(index, component)
    expected = AblationGroups.single_components(components, 3, 4)
    assert torch.equal(masks.heads, expected.heads) and torch.equal(masks.mlps, expected.mlps)


def test_a_group_of_several_components_and_an_empty_group():
    group = InterventionGroup.ablating([Component(0, 1), Component(2, 3), Component.mlp(1)], MEAN)
    masks, source = AblationGroups.from_groups([group, InterventionGroup(frozenset())], 3, 4)
    assert masks.heads[0].nonzero().tolist() == [[0, 1], [2, 3]] and masks.mlps[0].tolist() == [False, True, False]
    assert not masks.heads[1].any() and not masks.mlps[1].any() and source is SourceKind.MEAN
    assert AblationGroups.from_groups([InterventionGroup(frozenset())], 3, 4)[1] is None


def test_groups_add_to_a_base_and_join_at_their_lowest_layer():
    base = InterventionGroup.ablating([Component(2, 0)], MEAN)
    own = [InterventionGroup.ablating([Component(1, 3), Component.mlp(2)], MEAN), InterventionGroup.nothing(),
           InterventionGroup.ablating([Component.mlp(0)], MEAN)]
    masks, _ = AblationGroups.from_groups(own, 3, 4)
    assert masks.lowest_layers() == [1, 2, 0]  # a group editing nothing joins at the last layer
    base_masks, _ = AblationGroups.from_groups([base], 3, 4)
    merged = masks.union(base_masks)
    assert all(bool(merged.heads[g, 2, 0]) for g in range(3)) and bool(merged.heads[0, 1, 3])
    assert int(merged.heads.sum() + merged.mlps.sum()) == 3 + 3  # each group's own edits plus the base's one
    lowered, _ = AblationGroups.from_groups([base.with_edits_of(group) for group in own], 3, 4)
    assert torch.equal(lowered.heads, merged.heads) and torch.equal(lowered.mlps, merged.mlps)


def test_what_the_ablation_primitives_do_not_run_is_refused_by_name():
    q_input = Edit(Site(SiteKind.Q_INPUT, 2, 1), ValueSource(SourceKind.PAIRED))
    with pytest.raises(UnsupportedIntervention, match=r"q_input of 2\.1"):
        AblationGroups.from_groups([InterventionGroup(frozenset({q_input}))], 3, 4)
    some_positions = Edit(Site.output_of(Component(1, 0)), MEAN, positions=(3,))
    with pytest.raises(UnsupportedIntervention, match="positions"):
        AblationGroups.from_groups([InterventionGroup(frozenset({some_positions}))], 3, 4)
    mixed = [InterventionGroup.ablating([Component(0, 0)], MEAN),
             InterventionGroup.ablating([Component(1, 0)], ValueSource(SourceKind.ZERO))]
    with pytest.raises(UnsupportedIntervention, match="one value source"):
        AblationGroups.from_groups(mixed, 3, 4)


def test_sites_name_a_head_exactly_when_their_kind_needs_one():
    assert Site.output_of(Component(1, 2)) == Site(SiteKind.Z, 1, 2)
    assert Site.output_of(Component.mlp(1)) == Site(SiteKind.MLP_OUT, 1)
    assert Site(SiteKind.K_INPUT, 4, 0).component == Component(4, 0)
    for kind, head in [(SiteKind.Z, None), (SiteKind.V_INPUT, None), (SiteKind.MLP_OUT, 2), (SiteKind.RESID, 0)]:
        with pytest.raises(ValueError):
            Site(kind, 1, head)
    with pytest.raises(UnsupportedIntervention):
        _ = Site(SiteKind.RESID, 3).component
    assert Site(SiteKind.MLP_OUT, 3).component == Component.mlp(3)
    with pytest.raises(UnsupportedIntervention, match="attn_bias site belongs to no component"):
        _ = Site(SiteKind.ATTN_BIAS, 3).component  # the attention's bias is no MLP (nor a head)


def test_path_edges_are_edits_and_lower_back_to_their_edges():
    """An edge S → R(k) is a sender-change edit on R's input, S → logits one on the final residual's last position;
    groups of them lower to the edges (an empty group: the run), and anything else is refused by name."""
    sender = Component(0, 1)
    edges = [PathEdge(sender, Site(SiteKind.K_INPUT, 2, 0)), PathEdge(sender, None)]
    groups = [InterventionGroup.nothing()] + [edge.group(SourceKind.MEAN, 3) for edge in edges]
    (to_logits,) = groups[2].edits
    assert to_logits.site == Site(SiteKind.RESID, 3) and to_logits.positions == (-1,)
    assert to_logits.source == ValueSource.sender_change(sender, SourceKind.MEAN)
    assert EdgeGroups.applies(groups) and not EdgeGroups.applies([InterventionGroup.ablating([sender], MEAN)])
    lowered = EdgeGroups.from_groups(groups, 3)
    assert lowered == EdgeGroups((None, *edges), SourceKind.MEAN)
    assert lowered.receivers == [(1, edges[0])] and lowered.senders == [sender]
    with pytest.raises(UnsupportedIntervention, match="one sender replacement"):
        EdgeGroups.from_groups([edges[0].group(SourceKind.MEAN, 3), edges[1].group(SourceKind.ZERO, 3)], 3)
    with pytest.raises(UnsupportedIntervention, match="one edge"):
        EdgeGroups.from_groups([groups[1].with_edits_of(groups[2])], 3)
    with pytest.raises(UnsupportedIntervention, match="sender changes only"):
        EdgeGroups.from_groups([groups[1], InterventionGroup.ablating([Component(1, 0)], MEAN)], 3)
    at_z = Edit(Site(SiteKind.Z, 1, 0), ValueSource.sender_change(sender, SourceKind.ZERO))
    with pytest.raises(UnsupportedIntervention, match=r"z of 1\.0"):
        EdgeGroups.from_groups([InterventionGroup(frozenset({at_z}))], 3)
    with pytest.raises(ValueError):
        ValueSource.sender_change(Component.mlp(0), SourceKind.ZERO)
    with pytest.raises(ValueError):
        ValueSource(SourceKind.SENDER_CHANGE, sender=sender, replacement=SourceKind.GIVEN)


def test_every_method_is_a_value_source_and_the_help_names_each():
    for name, method in ABLATION_METHODS.items():
        assert method_for_source(SourceKind(method.source)) is method
        assert f"{name}: {method.help}" in methods_help()


@dataclass(frozen=True)
class _Part:
    layer: int
    head: int | None
    steps: int = json_field("step")

    json_derived: ClassVar[dict[str, str]] = {"label": "label"}

    @property
    def label(self) -> str:
        return Component(self.layer, self.head).label


@dataclass(frozen=True)
class _Result:
    name: str
    values: np.ndarray
    maybe: float | None
    heads: tuple[Component, ...]
    parts: tuple[_Part, ...]
    notes: tuple[str, ...] = ()
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict, metadata=NOT_STORED)


def test_results_go_to_json_and_back_from_their_fields():
    result = _Result("r", np.array([[1.5, np.nan], [0.0, -2.0]]), None, (Component(0, 1), Component(3, 2)),
                     (_Part(1, None, 4), _Part(0, 2, 5)), ("a note",), key={"k": 1})
    data = json.loads(json.dumps(to_payload(result)))
    assert "key" not in data and data["heads"] == [[0, 1], [3, 2]]
    assert data["parts"][0] == {"layer": 1, "head": None, "step": 4, "label": "MLP 1"}
    back = from_payload(_Result, data, key={"k": 2}, cached=True)
    np.testing.assert_array_equal(back.values, result.values)
    assert (back.name, back.maybe, back.heads, back.parts, back.notes) == (
        result.name, None, result.heads, result.parts, result.notes)
    assert back.cached and back.key == {"k": 2}
    assert from_payload(_Result, data | {"maybe": 2}).maybe == 2.0
