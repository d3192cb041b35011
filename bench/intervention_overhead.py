"""What stating interventions as data costs: building InterventionGroups and lowering them to the backends' dense
masks, model-free, on the embedded model's shape (30 layers × 9 heads), beside the masks the engines built before.

    python bench/intervention_overhead.py
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headscope.backends.interventions import AblationGroups, InterventionGroup, SourceKind, ValueSource
from headscope.circuit import _Candidates, _components
from headscope.component import every_component

L, H = 30, 9
SOURCE = ValueSource(SourceKind.MEAN)
COMPONENTS = every_component(L, H)


def best_of(fn, n: int = 5) -> float:
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    def sweep_groups() -> None:
        groups = [InterventionGroup.ablating([c], SOURCE) for c in COMPONENTS]
        AblationGroups.from_groups(groups, L, H)[0].lowest_layers()

    def sweep_masks() -> None:
        AblationGroups.single_components(COMPONENTS, L, H)

    print(f"sweep, {len(COMPONENTS)} groups: {1e3 * best_of(sweep_groups):.1f} ms "
          f"(masks alone: {1e3 * best_of(sweep_masks):.1f} ms)")
    base_heads, base_mlps = torch.zeros(L, H, dtype=torch.bool), torch.zeros(L, dtype=torch.bool)
    for c in COMPONENTS[:150]:
        if c.head is None:
            base_mlps[c.layer] = True
        else:
            base_heads[c.layer, c.head] = True

    def circuit_batch() -> None:
        candidates = _Candidates(9, base_heads, base_mlps)
        for index, component in enumerate(COMPONENTS[200:209]):
            candidates.mark(index, component)
        [candidates.key(g) for g in range(len(candidates))]
        groups = [InterventionGroup.ablating(_components(candidates.heads[g] & ~base_heads,
                                                         candidates.mlps[g] & ~base_mlps), SOURCE)
                  for g in range(len(candidates))]
        AblationGroups.from_groups(groups, L, H)[0].union(AblationGroups(base_heads[None], base_mlps[None]))

    batch = best_of(circuit_batch)
    print(f"circuit, a batch of 9 candidates over a 150-component set: {1e3 * batch:.2f} ms; 300 batches "
          f"{300 * batch:.2f} s")
    base = InterventionGroup.ablating(COMPONENTS[:150], SOURCE)

    def general() -> None:
        merged = [base.with_edits_of(InterventionGroup.ablating([c], SOURCE)) for c in COMPONENTS[150:]]
        AblationGroups.from_groups(merged, L, H)

    print(f"general path, 150 groups each with a 150-edit base, merged and lowered: {1e3 * best_of(general, 3):.1f} ms")


if __name__ == "__main__":
    main()
