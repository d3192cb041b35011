"""Loading: the embedded model, a local folder, and failures that say what to do."""

import pytest
import torch

from headscope.errors import ModelLoadError
from headscope.loading import ModelRequest, embedded_converted_folder, load_model


def test_embedded_model_shape(embedded_model):
    info = embedded_model.info
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_head) == (30, 9, 3, 64)
    assert info.n_ctx == 8192 and info.vocab_size == 49152
    assert info.device == "cpu" and info.dtype == "float32"
    assert 400e6 < info.memory_bytes < 700e6  # 135 M float32 parameters, tied embeddings counted once
    assert 130e6 < info.n_params < 140e6


def test_local_folder_gives_the_same_logits_as_embedded(embedded_model):
    folder = embedded_converted_folder()[0]
    local = load_model(ModelRequest(str(folder), device="cpu"))
    tokens = embedded_model.tensor([embedded_model.input_ids("1 2 3 4 ")])
    assert local.info.source == str(folder)
    # logits reach ~20 in magnitude: 1e-5 of that scale
    assert torch.allclose(local.logits(tokens), embedded_model.logits(tokens), atol=2e-4, rtol=0)


def test_local_tiny_folder_loads_with_its_shape(tiny_model):
    info = tiny_model.info
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_head) == (3, 4, 2, 16)


def test_unknown_hub_id_fails_fast_and_offline():
    with pytest.raises(ModelLoadError, match=r"not reachable.*not in the local cache"):
        load_model(ModelRequest("nobody-here/no-such-model"))


def test_memory_estimate_refuses_a_model_too_big(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    import headscope.loading as loading

    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                vocab_size=32000).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(loading, "available_bytes", lambda placement: 4 * 2**30)  # a 4 GiB machine
    with pytest.raises(ModelLoadError, match=r"6\.74 B parameters need about 25\.1 GiB.*4\.0 GiB free"):
        load_model(ModelRequest(str(tmp_path)))


def test_a_folder_whose_tokenizer_changes_gets_a_new_revision_and_no_stale_results(tiny_model_dir, tmp_path):
    """The tokenizer decides the token ids every result is computed on: editing it must miss the results cache."""
    import json
    import shutil

    from headscope.ablation import run_sweep
    from headscope.results_cache import ResultsCache
    from headscope.tasks import Dataset, PromptItem

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    cache = ResultsCache(tmp_path / "results")
    dataset = Dataset("mine.csv", (PromptItem("1 2 3 4 ", "5", "4"), PromptItem("2 3 4 5 ", "6", "5")))
    before = load_model(ModelRequest(str(folder), device="cpu"))
    first = run_sweep(before, dataset, "zero", estimate=True, cache=cache)
    assert not first.cached
    assert run_sweep(load_model(ModelRequest(str(folder), device="cpu")), dataset, "zero", estimate=True,
                     cache=cache).cached  # the same folder again: from the cache

    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = 12345  # any edit of a tokenizer file; weights and config.json untouched
    config_path.write_text(json.dumps(config))
    after = load_model(ModelRequest(str(folder), device="cpu"))
    assert after.info.revision != before.info.revision
    assert not run_sweep(after, dataset, "zero", estimate=True, cache=cache).cached


def test_the_least_recently_used_model_leaves_the_registry(tiny_model_dir, tmp_path):
    """Two models stay resident: a third request drops the one used least recently (not the first loaded), and a
    caller still holding the dropped model can finish with it."""
    import shutil

    from headscope.registry import ModelRegistry

    requests = []
    for name in ("a", "b", "c"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
        requests.append(ModelRequest(str(tmp_path / name), device="cpu"))
    a, b, c = requests
    registry = ModelRegistry(max_models=2)
    model_a = registry.get(a, hooks_later=True)
    model_b = registry.get(b, hooks_later=True)
    assert registry.get(a) is model_a  # used again: now b is the least recently used
    model_c = registry.get(c, hooks_later=True)
    assert registry.loaded(b) is None
    assert registry.loaded(a) is model_a and registry.loaded(c) is model_c
    tokens = model_b.tensor([model_b.input_ids("1 2 3")])
    assert model_b.logits(tokens).shape[-1] == model_b.info.vocab_size  # still usable by whoever holds it
    assert registry.get(b, hooks_later=True) is not model_b  # asked again: loaded afresh
    assert registry.loaded(a) is None  # and now a was the least recently used


def test_a_load_asked_from_a_daemon_thread_runs_on_one_that_is_not_and_is_kept_when_the_caller_stops(
        tiny_model_dir, monkeypatch):
    """Streamlit's script threads are daemons: SIGTERM during a first load killed one inside torch's C++ ("terminate
    called without an active exception"). The load runs on a thread the exit waits for, its progress relayed to the
    caller; a caller stopped meanwhile (Streamlit's stop raises in its next st call) leaves the load to finish."""
    import threading

    from headscope import registry as registry_module
    from headscope.registry import ModelRegistry

    loaded_on: list[threading.Thread] = []
    real_load = registry_module.load_model

    def recording_load(*args, **kwargs):
        loaded_on.append(threading.current_thread())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(registry_module, "load_model", recording_load)
    registry = ModelRegistry()
    request = ModelRequest(str(tiny_model_dir), device="cpu")
    stages_seen_on: list[threading.Thread] = []
    outcome: list[str] = []

    class Stopped(Exception):
        pass

    def stopping_progress(stage: str, fraction: float) -> None:
        stages_seen_on.append(threading.current_thread())
        raise Stopped  # as Streamlit's StopException from the script's next st call

    def script_run() -> None:
        try:
            registry.get(request, stopping_progress, hooks_later=True)
        except Stopped:
            outcome.append("stopped")

    caller = threading.Thread(target=script_run, daemon=True)
    caller.start()
    caller.join(timeout=120)
    assert outcome == ["stopped"] and stages_seen_on == [caller]  # relayed on the caller's own thread
    assert len(loaded_on) == 1 and loaded_on[0].daemon is False
    loaded_on[0].join(timeout=120)
    model = registry.loaded(request)
    assert model is not None  # kept although its caller stopped: the next script run finds it
    assert registry.get(request) is model and len(loaded_on) == 1
