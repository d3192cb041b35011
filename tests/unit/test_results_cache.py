"""The results cache: round trip, keys that name everything, corrupt or partial files never shown."""

import json

from headscope.results_cache import ResultsCache

KEY = {"model_source": "embedded", "model_revision": "abc", "dtype": "float32", "device": "cpu",
       "dataset_hash": "d1", "method": "mean", "metric": "ld", "estimate": False}


def test_round_trip(tmp_path):
    cache = ResultsCache(tmp_path)
    payload = {"ablated_ld": [[1.5, 2.0]], "n": 3}
    path = cache.store("ablation", KEY, payload)
    assert path.is_file()
    assert cache.load("ablation", KEY) == payload
    assert [e.payload for e in cache.entries("ablation")] == [payload]


def test_any_key_difference_misses(tmp_path):
    cache = ResultsCache(tmp_path)
    cache.store("ablation", KEY, {"v": 1})
    for field, other in [("method", "zero"), ("dtype", "float16"), ("dataset_hash", "d2"), ("device", "cuda:0"),
                         ("model_revision", "def"), ("estimate", True)]:
        assert cache.load("ablation", {**KEY, field: other}) is None


def test_truncated_file_is_detected_and_removed(tmp_path):
    cache = ResultsCache(tmp_path)
    path = cache.store("ablation", KEY, {"v": list(range(100))})
    path.write_text(path.read_text()[:50])
    assert cache.load("ablation", KEY) is None
    assert not path.exists()


def test_tampered_payload_fails_its_checksum(tmp_path):
    cache = ResultsCache(tmp_path)
    path = cache.store("ablation", KEY, {"v": 1})
    data = json.loads(path.read_text())
    data["payload"]["v"] = 2
    path.write_text(json.dumps(data))
    assert cache.load("ablation", KEY) is None


def test_file_under_another_keys_name_is_not_shown(tmp_path):
    cache = ResultsCache(tmp_path)
    path = cache.store("ablation", KEY, {"v": 1})
    other = {**KEY, "method": "zero"}
    path.rename(cache.path("ablation", other))
    assert cache.load("ablation", other) is None


def test_clear_removes_everything_of_a_kind(tmp_path):
    cache = ResultsCache(tmp_path)
    cache.store("ablation", KEY, {"v": 1})
    cache.store("ablation", {**KEY, "method": "zero"}, {"v": 2})
    cache.store("head-scores", KEY, {"v": 3})
    assert cache.clear("ablation") == 2
    assert cache.entries("ablation") == []
    assert cache.load("head-scores", KEY) == {"v": 3}


def test_readable_skips_what_the_parser_cannot_read(tmp_path):
    cache = ResultsCache(tmp_path)
    cache.store("ablation", KEY, {"n": 3})
    cache.store("ablation", {**KEY, "method": "zero"}, {"other_format": True})
    assert [e.payload for e in cache.entries("ablation")] != []
    assert cache.readable("ablation", lambda entry: entry.payload["n"]) == [3]
    assert cache.readable("ablation", lambda entry: entry.payload["n"], {"method": "zero"}) == []


def test_a_model_of_unknown_revision_is_never_stored_or_served(tmp_path):
    """A hub model whose commit is not known (revision "unknown"): its results cannot be told from another
    commit's, so nothing is kept for it, and a file left under such a key is not read."""
    cache = ResultsCache(tmp_path)
    unknown = {**KEY, "model_revision": "unknown"}
    assert cache.store("ablation", unknown, {"v": 1}) is None
    assert not list(tmp_path.rglob("*.json"))
    planted = cache.path("ablation", unknown)
    planted.parent.mkdir(parents=True)
    from headscope.results_cache import _checksum  # a well-formed file, as an older headscope would have left

    planted.write_text(json.dumps({"format": 1, "key": unknown, "checksum": _checksum({"v": 1}), "payload": {"v": 1}}))
    assert cache.load("ablation", unknown) is None
