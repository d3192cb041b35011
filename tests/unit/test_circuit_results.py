"""Circuit results without a model: the JSON round trip, uploaded circuits, and the overlap of circuits."""

import json

import numpy as np
import pytest

from headscope.circuit import (
    CircuitResult,
    KeptEffect,
    Removal,
    check_threshold,
    visiting_order,
)
from headscope.circuit_compare import CircuitSet, compare_circuits, parse_circuit_json
from headscope.component import Component
from headscope.errors import InputError


def _result(**changes):
    base = dict(
        model="m", task="digits", method="mean", threshold=80.0, one_pass=False, estimate=False, n_layers=2,
        n_heads=3, n_prompts=4, seq_len=9, clean_ld=2.0, circuit_ld=1.7,
        heads=(Component(0, 1), Component(1, 2)), mlps=(0,),
        removals=(Removal(1, None, 1.9, 95.0, 1), Removal(1, 0, 1.8, 90.0, 1), Removal(1, 1, 1.75, 87.5, 1),
                  Removal(0, 0, 1.72, 86.0, 1), Removal(0, 2, 1.7, 85.0, 2)),
        kept_effects=(KeptEffect(1, 2, 1.0, 50.0), KeptEffect(0, None, 1.2, 60.0), KeptEffect(0, 1, 1.5, 75.0)),
        passes=3, seconds=1.5,
    )
    return CircuitResult(**(base | changes))


def test_visiting_order_is_last_layer_first_mlp_then_heads():
    assert visiting_order(2, 2) == [Component(1, None), Component(1, 0), Component(1, 1), Component(0, None),
                                    Component(0, 0), Component(0, 1)]


def test_labels_round_trip():
    for component in [Component(3, 24), Component(0, None), Component(31, 0)]:
        assert Component.parse(component.label) == component
        assert Component.parse(component.url_text) == component
    assert Component(5).label == "MLP 5" and Component(5, 2).label == "5.2" and Component(5).url_text == "mlp5"
    assert Component.parse("mlp 5") == Component.mlp(5) and Component.parse("(3:24)") == Component(3, 24)
    for bad in ["5", "a.b", "mlp", "5.2.1", ""]:
        with pytest.raises(ValueError):
            Component.parse(bad)
    assert sorted([Component(1), Component(1, 2), Component(0), Component(1, 0)]) == [
        Component(0), Component(1, 0), Component(1, 2), Component(1)]  # heads of a layer, then its MLP


def test_json_round_trip_keeps_everything():
    result = _result()
    data = json.loads(json.dumps(result.to_json()))
    assert data["heads"] == [[0, 1], [1, 2]] and data["mlps"] == [0]
    assert data["removed"][0] == {"component": "MLP 1", "layer": 1, "head": None, "score_after": 95.0,
                                  "ld_after": 1.9, "pass": 1}
    assert data["score"] == pytest.approx(85.0)
    back = CircuitResult.from_json(data, {"k": 1})
    assert back.removals == result.removals and back.kept_effects == result.kept_effects
    assert back.heads == result.heads and back.mlps == result.mlps and back.cached and back.key == {"k": 1}
    assert back.head_mask().sum() == 2 and back.mlp_mask().tolist() == [True, False]
    assert back.removal_of(Component(0, 2)) == (5, result.removals[4]) and back.removal_of(Component(0, 1)) is None
    download = json.loads(result.download_json())
    assert download["heads"] == [[0, 1], [1, 2]] and download["mlps"] == [0]
    assert parse_circuit_json(result.download_json(), "x.json").components == result.circuit_set().components


def test_uploaded_circuits_are_checked():
    circuit = parse_circuit_json(json.dumps({"heads": [[0, 1], [9, 8]], "mlps": [0, 4], "model": "gpt2",
                                             "task": "numerals"}), "up.json")
    assert circuit.heads == {Component(0, 1), Component(9, 8)} and circuit.mlps == {0, 4}
    assert (circuit.n_layers, circuit.n_heads) == (10, 9) and "gpt2" in circuit.label
    assert parse_circuit_json('{"heads": [[1, 1]]}', "h.json").mlps == frozenset()
    for text, message in [("{", "not valid JSON"), ("[]", "expected an object"), ('{"heads": [[1]]}', "each head"),
                          ('{"heads": [[1, -2]]}', "each head"), ('{"heads": [["1", 2]]}', "each head"),
                          ('{"heads": [], "mlps": [true]}', "mlps"), ('{"heads": []}', "no component"),
                          ('{"heads": [[1, 1]], "n_layers": "x"}', "n_layers"),
                          # a few bytes that would ask for a 600 × 600 grid (or 10⁵ × 10⁵) are refused
                          ('{"heads": [[0, 0]], "n_layers": 600, "n_heads": 600}', "beyond any model"),
                          ('{"heads": [[99999, 0]]}', "beyond any model"), ('{"heads": [], "mlps": [300]}', "beyond")]:
        with pytest.raises(InputError, match=message):
            parse_circuit_json(text, "bad.json")


def test_comparison_counts_overlap_and_jaccard():
    a = CircuitSet("A", frozenset({Component(0, 0), Component(1, 1), Component(2, 2)}), frozenset({0}), 3, 3)
    b = CircuitSet("B", frozenset({Component(0, 0), Component(1, 2)}), frozenset({0, 1}), 3, 3)
    comparison = compare_circuits([a, b])
    assert comparison.shared == {Component(0, 0), Component(0, None)}
    assert comparison.only(0) == {Component(1, 1), Component(2, 2)}
    assert comparison.only(1) == {Component(1, 2), Component(1, None)}
    assert comparison.jaccard[0, 1] == pytest.approx(2 / 6) and comparison.jaccard[1, 0] == comparison.jaccard[0, 1]
    assert comparison.category(Component(0, 0)) == "shared" and comparison.category(Component(1, 1)) == "only A"
    assert comparison.category(Component(2, 0)) == ""
    c = CircuitSet("C", frozenset({Component(0, 0), Component(1, 1)}), frozenset(), 4, 2)
    three = compare_circuits([a, b, c])
    assert three.shared == {Component(0, 0)} and three.category(Component(1, 1)) == "2 of 3" and three.n_layers == 4
    np.testing.assert_allclose(np.diag(three.jaccard), 1.0)
    rows = three.counts()
    assert rows[2]["components"] == 2 and rows[0]["only A"] == 1  # Component(2, 2)
    with pytest.raises(InputError, match="at least two"):
        compare_circuits([a])


@pytest.mark.parametrize("bad", [-1, 100.5, float("nan"), float("inf")])
def test_threshold_is_a_percentage(bad):
    with pytest.raises(InputError, match="threshold"):
        check_threshold(bad)
    assert check_threshold(80) == 80.0


def test_the_compare_table_has_no_empty_cells():
    # seen: a literal None in the only-A / only-B cells (one column per circuit, empty in every other row)
    from components.circuit_view import counts_frame
    from headscope.circuit_compare import CircuitSet, compare_circuits

    a = CircuitSet("a", frozenset({(0, 1), (1, 2)}), frozenset({0}), 2, 4)
    b = CircuitSet("b", frozenset({(1, 2), (1, 3)}), frozenset(), 2, 4)
    frame = counts_frame(compare_circuits([a, b]))
    assert not frame.isna().any().any()
    assert list(frame["only in it"]) == [2, 1]  # A: (0, 1) and MLP 0; B: (1, 3)
    assert list(frame["circuit"]) == ["A", "B"]


def test_removing_one_models_results_keeps_the_others(tmp_path):
    from headscope.results_cache import ResultsCache

    cache = ResultsCache(tmp_path)
    mine, theirs = {"model_source": "mine", "task": "digits"}, {"model_source": "theirs", "task": "digits"}
    cache.store("ablation", mine, 1)
    cache.store("ablation", theirs, 2)
    cache.store("circuit", mine, 3)
    assert cache.remove("ablation", {"model_source": "mine"}) == 1
    assert cache.load("ablation", mine) is None and cache.load("ablation", theirs) == 2
    assert cache.load("circuit", mine) == 3
