"""Path patching on the nnsight backend's dry run (its requests serialised as for NDIF and run here, the general
path through nnsight's own tracing) equals the bridge's path patching on the same weights, per prompt: senders to
receivers (q, grouped k/v), a receiver from its senders, the direct paths to the logits; noise and denoise; zero,
mean and resample. The run through the stand-in NDIF server is in test_nnsight_ndif_protocol.py."""

from __future__ import annotations

import numpy as np
import pytest

from headscope.component import Component
from headscope.path_patching import PathQuery, compute_paths
from tests.model.test_path_patching import TOLERANCE, _encoded, _nnsight

QUERIES = {
    "sender-k-resample": PathQuery(sender=Component(0, 1), into="k", method="resample"),
    "receiver-q-mean": PathQuery(receiver=Component(1, 3), into="q", method="mean"),
    "sender-v-zero-denoise": PathQuery(sender=Component(0, 2), into="v", direction="denoise"),
    "logits-zero": PathQuery(to_logits=True, method="zero"),
}


def _agree(loaded, names) -> None:
    bridge = loaded.backend
    dry = _nnsight(loaded).with_mode("simulate")
    sent = dry.requests_sent
    for name in names:
        query = QUERIES[name]
        expected = compute_paths(bridge, _encoded(bridge), query)
        got = compute_paths(dry, _encoded(dry), query)
        scale = max(1.0, float(np.nanmax(np.abs(expected.per_prompt_ld))))
        assert got.per_prompt_ld.shape == expected.per_prompt_ld.shape
        assert np.array_equal(np.isnan(got.per_prompt_ld), np.isnan(expected.per_prompt_ld)), name
        assert np.allclose(got.per_prompt_ld, expected.per_prompt_ld, atol=TOLERANCE * scale, equal_nan=True), name
        assert got.clean_ld == pytest.approx(expected.clean_ld, abs=TOLERANCE * scale)
        assert got.kv_grouped == expected.kv_grouped
        # the paths do something: the LDs differ from the unpatched run's by more than the tolerance
        assert np.nanmax(np.abs(expected.per_prompt_ld - expected.run_ld)) > 5 * TOLERANCE * scale, name
    assert dry.requests_sent > sent  # the dry run sent requests (no hooks on the local model)


def test_dry_run_equals_the_bridge_on_the_tiny_gqa_llama(tiny_family_loader):
    _agree(tiny_family_loader("llama"), QUERIES)


@pytest.mark.parametrize("family", ["gpt2", pytest.param("gemma2", marks=pytest.mark.slow),
                                    pytest.param("neox", marks=pytest.mark.slow)])
def test_dry_run_equals_the_bridge_on_other_families(tiny_family_loader, family):
    _agree(tiny_family_loader(family), ["sender-k-resample", "logits-zero"] if family == "gpt2" else QUERIES)
