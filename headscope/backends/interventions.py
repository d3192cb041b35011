"""The intervention vocabulary: what an analysis asks a backend to change, as data (headscope.backends.base holds
the contract that runs it).

A `Site` (a head's z, its query/key/value input, an MLP's output, the residual at a layer; read-only kinds for
`Backend.read_sites`), a `ValueSource` (zero, the mean over a reference set, the paired row of another run, a given
tensor), an `Edit` (site, source, positions) and an `InterventionGroup` (the edits one group of rows carries).
`LogitDiffTask` is what an intervened run measures; `AblationGroups` is the backends' dense lowering of z/MLP groups,
`EdgeGroups` their lowering of path patching's edges (a sender's change carried into one receiver's input).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import torch

from headscope.component import Component

# ---------------------------------------------------------------------------------------------------------------
# What an ablated run measures and ablates


@dataclass(frozen=True)
class LogitDiffTask:
    """Prompts of one length and their answers: LD = Σ_prompt weight · (logit[correct] − logit[incorrect]) at the
    last position. clean[prompt, pos], corrupted[prompt | corrupted prompt, pos] (None without corrupted prompts),
    correct[prompt], incorrect[prompt], weights[prompt] (sum 1; a repeated prompt counts once with its weight)."""

    clean: torch.Tensor
    corrupted: torch.Tensor | None
    correct: torch.Tensor
    incorrect: torch.Tensor
    weights: torch.Tensor

    @property
    def n_prompts(self) -> int:
        return int(self.clean.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean.shape[1])

    @property
    def answer_ids(self) -> torch.Tensor:
        """ids[prompt, 2]: correct, incorrect."""
        return torch.stack([self.correct, self.incorrect], dim=1)


@dataclass(frozen=True)
class AblationGroups:
    """The backends' dense lowering of InterventionGroups that replace head z and MLP outputs: which components each
    group of rows ablates, heads[group, layer, head] and mlps[group, layer] (bool, CPU). Engines state
    InterventionGroups; the backends and the evaluator's fast path run this form (`from_groups`).

    A group runs every prompt of the task once; group-major rows (group 0's prompts first).
    """

    heads: torch.Tensor
    mlps: torch.Tensor

    @property
    def n_groups(self) -> int:
        return int(self.heads.shape[0])

    def __len__(self) -> int:
        return self.n_groups

    def select(self, index: Sequence[int] | slice) -> AblationGroups:
        if isinstance(index, slice):
            return AblationGroups(self.heads[index], self.mlps[index])
        rows = torch.as_tensor(list(index), dtype=torch.long)
        return AblationGroups(self.heads[rows], self.mlps[rows])

    @classmethod
    def empty(cls, n_groups: int, n_layers: int, n_heads: int) -> AblationGroups:
        return cls(torch.zeros(n_groups, n_layers, n_heads, dtype=torch.bool),
                   torch.zeros(n_groups, n_layers, dtype=torch.bool))

    @classmethod
    def single_components(cls, components: Sequence[Component], n_layers: int, n_heads: int) -> AblationGroups:
        """One group per component: a head ablates that head's z, an MLP that layer's MLP output."""
        groups = cls.empty(len(components), n_layers, n_heads)
        for index, component in enumerate(components):
            groups.mark(index, component)
        return groups

    def mark(self, index: int, component: Component) -> None:
        """Add a component to group `index`."""
        if component.head is None:
            self.mlps[index, component.layer] = True
        else:
            self.heads[index, component.layer, component.head] = True

    def holds(self, index: int, component: Component) -> bool:
        if component.head is None:
            return bool(self.mlps[index, component.layer])
        return bool(self.heads[index, component.layer, component.head])

    @classmethod
    def from_groups(cls, groups: Sequence[InterventionGroup], n_layers: int, n_heads: int
                    ) -> tuple[AblationGroups, SourceKind | None]:
        """The dense form of groups that replace head z and MLP outputs at every position, all from one value source
        (what the backends' ablation primitives run), and that source (None when no group edits anything). Other
        sites, positions or mixed sources raise UnsupportedIntervention: they need an engine module of their own."""
        out = cls.empty(len(groups), n_layers, n_heads)
        source: ValueSource | None = None
        heads: tuple[list[int], list[int], list[int]] = ([], [], [])  # group, layer, head of every z edit
        mlps: tuple[list[int], list[int]] = ([], [])  # group, layer of every MLP edit
        for index, group in enumerate(groups):
            for edit in group.edits:
                site = edit.site
                if edit.positions is not None or (site.kind is not SiteKind.Z and site.kind is not SiteKind.MLP_OUT):
                    raise UnsupportedIntervention(f"{edit.describe()}: the ablation primitives replace head z and "
                                                  "MLP outputs at every position only.")
                if edit.source is not source:
                    if source is not None and edit.source != source:
                        raise UnsupportedIntervention(f"{edit.describe()}: one value source per evaluation "
                                                      f"({source.kind} given first).")
                    source = edit.source
                if site.head is None:
                    mlps[0].append(index)
                    mlps[1].append(site.layer)
                else:
                    heads[0].append(index)
                    heads[1].append(site.layer)
                    heads[2].append(site.head)
        out.heads[heads] = True  # one indexed write for every edit (thousands of groups lower in milliseconds)
        out.mlps[mlps] = True
        return out, None if source is None else source.kind

    def union(self, base: AblationGroups) -> AblationGroups:
        """Every group with base's one group added to it."""
        return AblationGroups(self.heads | base.heads[:1], self.mlps | base.mlps[:1])

    def lowest_layers(self) -> list[int]:
        """The lowest layer each group touches (the last layer for a group touching none)."""
        touched = self.heads.any(dim=2) | self.mlps  # [group, layer]
        n_layers = int(self.heads.shape[1])
        first = torch.where(touched.any(dim=1), touched.int().argmax(dim=1), torch.tensor(n_layers - 1))
        return [int(layer) for layer in first.tolist()]

    def layers_touched(self) -> list[int]:
        """Layers in which some group ablates something (ascending)."""
        touched = self.heads.any(dim=(0, 2)) | self.mlps.any(dim=0)
        return [int(i) for i in torch.nonzero(touched).flatten()]


# ---------------------------------------------------------------------------------------------------------------
# Interventions as data: where (site), with what (value source), at which positions, in groups of rows


class UnsupportedIntervention(NotImplementedError):
    """An intervention the vocabulary can state but no engine path runs yet."""


class SiteKind(StrEnum):
    """What an edit replaces. Shapes per row of a batch (pos: every input position, BOS included):

    - Z: a head's z, its attention output before W_O: [pos, d_head] (the ablation sites);
    - Q_INPUT / K_INPUT / V_INPUT: the residual one head's query / key / value reads, before the block's attention
      norm: [pos, d_model] (path patching: only that head sees the edited value; on grouped-query models K and V
      inputs are per KV group, `head` naming any query head of the group);
    - MLP_OUT: a layer's MLP output: [pos, d_model];
    - RESID: the residual stream entering a layer: [pos, d_model] (layer n_layers: after the last block);
    - HEAD_OUT (read only): what one head adds to the residual, z·W_O[head] (Gemma-2: through the post-attention
      norm with its scale frozen from the layer's whole attention output): [pos, d_model];
    - ATTN_BIAS (read only): what a layer's attention adds whatever its heads do (b_O, through a frozen
      post-attention norm where the family has one): [pos, d_model].
    Read by `Backend.read_sites`, MLP_OUT is what the MLP adds to the residual (after a post-MLP norm where the
    family has one), RESID 0 the embeddings."""

    Z = "z"
    Q_INPUT = "q_input"
    K_INPUT = "k_input"
    V_INPUT = "v_input"
    MLP_OUT = "mlp_out"
    RESID = "resid"
    HEAD_OUT = "head_out"
    ATTN_BIAS = "attn_bias"


HEAD_SITES = (SiteKind.Z, SiteKind.Q_INPUT, SiteKind.K_INPUT, SiteKind.V_INPUT, SiteKind.HEAD_OUT)
COMPONENTLESS = (SiteKind.RESID, SiteKind.ATTN_BIAS)


@dataclass(frozen=True)
class Site:
    """One place in the forward pass: a kind, a layer and (for head sites) a head."""

    kind: SiteKind
    layer: int
    head: int | None = None

    def __post_init__(self) -> None:
        if (self.kind in HEAD_SITES) != (self.head is not None):
            raise ValueError(f"A {self.kind} site {'needs' if self.kind in HEAD_SITES else 'takes no'} head.")

    @classmethod
    def output_of(cls, component: Component) -> Site:
        """Where ablating a component acts: a head's z, or the MLP's output."""
        if component.head is None:
            return cls(SiteKind.MLP_OUT, component.layer)
        return cls(SiteKind.Z, component.layer, component.head)

    @property
    def component(self) -> Component:
        """The component the site belongs to: its head, or its layer's MLP (MLP_OUT). RESID and ATTN_BIAS belong to
        none (the attention's bias is added whatever its heads do; it is no head and no MLP)."""
        if self.kind in COMPONENTLESS:
            raise UnsupportedIntervention(f"A {self.kind} site belongs to no component.")
        return Component(self.layer, self.head)

    def describe(self) -> str:
        where = f"{self.layer}.{self.head}" if self.head is not None else f"layer {self.layer}"
        return f"{self.kind} of {where}"


class SourceKind(StrEnum):
    """Where an edit's value comes from: ZERO; MEAN, the position-wise mean over a reference run's prompts (every
    corrupted prompt); PAIRED, the same site on the paired row of another run (the corrupted prompt of this row:
    resampling, activation patching); GIVEN, a tensor the caller holds, broadcastable over [row, pos, ...site];
    SENDER_CHANGE, the site's value in the run plus Δ_S, the change of what a sender head S writes into the residual
    when its z is replaced (by ZERO, MEAN or PAIRED) — path patching's edge, an additive edit the backend computes:
    on a Q/K/V input only that receiver reads it; on RESID n_layers at the last position it reaches the logits
    through the final norm with its scale frozen from the run (the sender's direct path)."""

    ZERO = "zero"
    MEAN = "mean"
    PAIRED = "paired"
    GIVEN = "given"
    SENDER_CHANGE = "sender_change"


SENDER_REPLACEMENTS = (SourceKind.ZERO, SourceKind.MEAN, SourceKind.PAIRED)


@dataclass(frozen=True)
class ValueSource:
    """A value source; `reference` names the run MEAN and PAIRED read ("corrupted": the task's corrupted prompts;
    "clean" for denoising), `value` the GIVEN tensor (compared by identity); SENDER_CHANGE: `sender` and how its z
    is replaced (`replacement`: ZERO, MEAN or PAIRED from the task's corrupted prompts)."""

    kind: SourceKind
    reference: str = "corrupted"
    value: torch.Tensor | None = field(default=None, compare=False, hash=False)
    sender: Component | None = None
    replacement: SourceKind | None = None

    def __post_init__(self) -> None:
        if (self.kind is SourceKind.SENDER_CHANGE) != (self.sender is not None):
            raise ValueError("A sender change, and only a sender change, names its sender.")
        if self.kind is SourceKind.SENDER_CHANGE and self.replacement not in SENDER_REPLACEMENTS:
            raise ValueError(f"A sender's z is replaced by one of {', '.join(SENDER_REPLACEMENTS)}.")

    @classmethod
    def sender_change(cls, sender: Component, replacement: SourceKind, reference: str = "corrupted") -> ValueSource:
        """Δ of sender head S's write when its z is replaced by `replacement` (path patching's edge value)."""
        if sender.head is None:
            raise ValueError(f"A sender is a head, not {sender.label}.")
        return cls(SourceKind.SENDER_CHANGE, reference, sender=sender, replacement=replacement)


@dataclass(frozen=True)
class Edit:
    """Replace `site` with `source`'s value at `positions` (None: every position)."""

    site: Site
    source: ValueSource
    positions: tuple[int, ...] | None = None

    def describe(self) -> str:
        at = "every position" if self.positions is None else f"positions {list(self.positions)}"
        return f"{self.site.describe()} ← {self.source.kind} at {at}"


@dataclass(frozen=True)
class InterventionGroup:
    """The edits one group of rows carries (every prompt of the task once, with all of them applied)."""

    edits: frozenset[Edit]

    @classmethod
    def ablating(cls, components: Iterable[Component], source: ValueSource) -> InterventionGroup:
        """Each component's output replaced by the source at every position (an ablation)."""
        return cls(frozenset(Edit(Site.output_of(c), source) for c in components))

    @classmethod
    def nothing(cls) -> InterventionGroup:
        """No edit: the run itself."""
        return cls(frozenset())

    def with_edits_of(self, other: InterventionGroup) -> InterventionGroup:
        """This group's edits and other's together."""
        return InterventionGroup(self.edits | other.edits) if other.edits else self


# ---------------------------------------------------------------------------------------------------------------
# Path patching's edges: the backends' lowering of sender-change edits


@dataclass(frozen=True)
class PathEdge:
    """One path: sender head → receiver site (Q/K/V input of a later head; K/V per KV group), or None: the logits."""

    sender: Component
    receiver: Site | None

    def edit(self, replacement: SourceKind, n_layers: int, reference: str = "corrupted") -> Edit:
        """The edge as an edit: the sender's change on the receiver's input, or on the final residual's last
        position (the logits)."""
        source = ValueSource.sender_change(self.sender, replacement, reference)
        if self.receiver is None:
            return Edit(Site(SiteKind.RESID, n_layers), source, positions=(-1,))
        return Edit(self.receiver, source)

    def group(self, replacement: SourceKind, n_layers: int, reference: str = "corrupted") -> InterventionGroup:
        return InterventionGroup(frozenset([self.edit(replacement, n_layers, reference)]))


RECEIVER_KINDS = (SiteKind.Q_INPUT, SiteKind.K_INPUT, SiteKind.V_INPUT)


def receiver_site(kind: SiteKind, head: Component, heads_per_kv: int) -> Site:
    """The site a receiver head's input patch acts on: its own query input, or its KV group's key/value input
    (named by the group's first query head) on a grouped-query model."""
    assert head.head is not None
    if kind is SiteKind.Q_INPUT or heads_per_kv == 1:
        return Site(kind, head.layer, head.head)
    return Site(kind, head.layer, head.head - head.head % heads_per_kv)


@dataclass(frozen=True)
class EdgeGroups:
    """The backends' lowering of groups that each carry at most one sender-change edit: edges[group] (None: a group
    with no edit, the run itself) and how every sender's z is replaced. Path patching states InterventionGroups
    (`PathEdge.group`); the backends' `edge_logit_diffs` runs this form."""

    edges: tuple[PathEdge | None, ...]
    replacement: SourceKind

    def __len__(self) -> int:
        return len(self.edges)

    @staticmethod
    def applies(groups: Sequence[InterventionGroup]) -> bool:
        """Whether the groups carry sender changes (then every edit must be one)."""
        return any(edit.source.kind is SourceKind.SENDER_CHANGE for group in groups for edit in group.edits)

    @classmethod
    def from_groups(cls, groups: Sequence[InterventionGroup], n_layers: int) -> EdgeGroups:
        """The edges of groups holding one sender-change edit each (or none), all with one replacement; anything
        else raises UnsupportedIntervention."""
        edges: list[PathEdge | None] = []
        replacement: SourceKind | None = None
        for group in groups:
            if not group.edits:
                edges.append(None)
                continue
            if len(group.edits) != 1:
                raise UnsupportedIntervention("A path group carries one sender change (one edge).")
            (edit,) = group.edits
            source, site = edit.source, edit.site
            if source.kind is not SourceKind.SENDER_CHANGE or source.sender is None:
                raise UnsupportedIntervention(f"{edit.describe()}: path groups carry sender changes only.")
            if replacement not in (None, source.replacement):
                raise UnsupportedIntervention(f"{edit.describe()}: one sender replacement per evaluation "
                                              f"({replacement} given first).")
            replacement = source.replacement
            if site.kind in RECEIVER_KINDS and edit.positions is None:
                edges.append(PathEdge(source.sender, site))
            elif site.kind is SiteKind.RESID and site.layer == n_layers and edit.positions == (-1,):
                edges.append(PathEdge(source.sender, None))
            else:
                raise UnsupportedIntervention(f"{edit.describe()}: a sender's change reaches a receiver's Q/K/V "
                                              "input at every position, or the final residual's last position.")
        return cls(tuple(edges), replacement or SourceKind.ZERO)

    @property
    def receivers(self) -> list[tuple[int, PathEdge]]:
        """(group, edge) of the edges into a head's input."""
        return [(index, edge) for index, edge in enumerate(self.edges) if edge is not None and edge.receiver]

    @property
    def senders(self) -> list[Component]:
        return sorted({edge.sender for edge in self.edges if edge is not None})
