"""TransformerLens set up after the load (the app's way): before the bridge is made, the plain forwards run the model
as transformers loaded it; the model's identity and numbers are the same before and after; families whose config
reads differently from TransformerLens' reading are wrapped at load instead."""

import copy
import dataclasses
import threading

import pytest
import torch

from headscope.backends.bridge import HOOKS_LATER_FAMILIES, BridgeBackend, config_info
from headscope.backends.bridge_patterns import bridge_patterns
from headscope.errors import ModelLoadError
from headscope.loading import ModelRequest, load_model, resolve_placement

PROMPT_IDS = [5, 17, 300, 9, 42, 1000, 7]


def _reference_logits(reference, ids: list[int], position: int) -> torch.Tensor:
    """logits[vocab] at `position`, from the untouched transformers copy (eager attention)."""
    with torch.no_grad():
        return reference(torch.tensor([ids])).logits[0, position].float()


def _identity(info) -> dict:
    fields = dataclasses.asdict(info)
    fields.pop("load_seconds")
    fields.pop("fallbacks")  # which faster routes are off: checked on first use, so it grows with what has run
    return fields


# tiny family (tests/model/tiny_families.py, "llama" is tests/conftest's) -> its model_type
CHECKED_FAMILIES = {"llama": "llama", "mistral": "mistral", "gemma2": "gemma2", "gpt2": "gpt2"}


def test_every_family_served_before_transformerlens_is_checked_here():
    assert set(CHECKED_FAMILIES.values()) == set(HOOKS_LATER_FAMILIES)


@pytest.fixture(scope="module")
def tiny_mistral(tmp_path_factory, embedded_tokenizer):
    """A tiny random Mistral (GQA, a sliding window wider than the tests' prompts) with the embedded tokenizer."""
    from transformers import AutoModelForCausalLM, MistralConfig

    from tests.model.tiny_families import D_HEAD, D_MODEL, N_HEADS, save_tiny_model

    tokenizer = embedded_tokenizer
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=D_MODEL, intermediate_size=2 * D_MODEL,
                           num_hidden_layers=2, num_attention_heads=N_HEADS, num_key_value_heads=2, head_dim=D_HEAD,
                           max_position_embeddings=128, sliding_window=64, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny-mistral-"), config, "MistralForCausalLM", tokenizer)
    backend = load_model(ModelRequest(str(folder), device="cpu"))
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    return folder, backend, reference


@pytest.mark.parametrize("name", sorted(CHECKED_FAMILIES))
def test_the_same_model_before_and_after_transformerlens(name, tiny_family_loader, request):
    if name == "mistral":
        folder, eager, reference = request.getfixturevalue("tiny_mistral")
    else:
        family = tiny_family_loader(name)
        folder, eager, reference = family.folder, family.backend, family.reference
    assert eager.hf_model.config.model_type == CHECKED_FAMILIES[name]
    # eager: wrapped at load, TransformerLens' reading of the model
    model = load_model(ModelRequest(str(folder), device="cpu"), hooks_later=True)
    assert not model.hooks_ready

    ids = model.input_ids("1 2 3 4 ")
    assert ids == eager.input_ids("1 2 3 4 ")  # BOS prepended alike
    position = len(PROMPT_IDS) - 1
    before = model.next_tokens(model.tensor([PROMPT_IDS]), position)
    expected = _reference_logits(reference, PROMPT_IDS, position)
    torch.testing.assert_close(before.logits_at, expected, atol=1e-4, rtol=1e-4)
    assert not model.hooks_ready  # a plain forward does not set TransformerLens up

    assert _identity(model.info) == _identity(eager.info)
    model.prepare_hooks()
    assert model.hooks_ready
    assert _identity(model.info) == _identity(eager.info)
    after = model.next_tokens(model.tensor([PROMPT_IDS]), position)
    for field in ("logits_at", "top1_logit", "top1_logprob"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field), atol=1e-5, rtol=1e-5)
    assert torch.equal(after.top1_id, before.top1_id)
    assert (model.block_runner is None) == (eager.block_runner is None)  # the fast paths checked alike


def test_the_first_use_of_a_hook_sets_transformerlens_up(tiny_model_dir, tiny_reference):
    """Anything that needs the bridge (here a weight read through W_U) makes it first, with no call beforehand. The
    numbers are checked against an untouched transformers copy (the backend's own hf_model has been rewritten by
    TransformerLens by then)."""
    model = load_model(ModelRequest(str(tiny_model_dir), device="cpu"), hooks_later=True)
    assert not model.hooks_ready
    ids = torch.tensor([3, 11])
    resid = torch.randn(2, model.info.d_model)
    logits = model.unembed_logits(resid, ids)
    assert model.hooks_ready
    with torch.no_grad():
        normed = tiny_reference.model.norm(resid)
        expected = normed @ tiny_reference.lm_head.weight[ids].T
    torch.testing.assert_close(logits, expected.float(), atol=1e-5, rtol=1e-5)


def test_patterns_asked_for_before_the_set_up_still_take_the_models_own_attention(tiny_model_dir):
    """The CLI loads with hooks later: the first pattern request sets TransformerLens up and then checks the native
    route, instead of finding its precondition unchecked and keeping the slow route for good."""
    model = load_model(ModelRequest(str(tiny_model_dir), device="cpu"), hooks_later=True)
    assert not model.hooks_ready
    assert model.native_patterns  # as a model wrapped at load
    assert model.hooks_ready and model.checks.pattern_route_error is not None
    assert model.checks.pattern_route_error <= 1e-5
    tokens = model.tensor([PROMPT_IDS])
    native = model.reduce_attention_patterns(tokens, lambda layer, pattern: pattern.clone())
    bridge = bridge_patterns(model, tokens, lambda layer, pattern: pattern.clone(), set(native), None)
    for layer, pattern in native.items():
        torch.testing.assert_close(pattern, bridge[layer], atol=1e-5, rtol=0)


def test_setting_up_in_the_background_while_the_prompt_tester_runs(tiny_model_dir):
    model = load_model(ModelRequest(str(tiny_model_dir), device="cpu"), hooks_later=True)
    tokens = model.tensor([PROMPT_IDS])
    first = model.next_tokens(tokens, len(PROMPT_IDS) - 1).logits_at
    errors: list[BaseException] = []
    results: list[torch.Tensor] = []

    def keep_asking() -> None:
        try:
            for _ in range(40):
                results.append(model.next_tokens(tokens, len(PROMPT_IDS) - 1).logits_at)
        except BaseException as error:  # reported below
            errors.append(error)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    model.prepare_hooks_in_background()
    asker.join(timeout=120)
    model.prepare_hooks()  # joins the background set-up (or finds it done)
    assert not errors and len(results) == 40
    assert model.hooks_ready
    for logits in results:
        torch.testing.assert_close(logits, first, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["qwen2", "neox"])
def test_a_family_not_checked_for_deferred_set_up_is_wrapped_at_load(name, tiny_family_loader):
    """Qwen2 and GPT-NeoX (TransformerLens prepends no BOS to them by its own rule) are wrapped at load even when the
    caller would rather set hooks up later, and their input starts with BOS as the model's policy says (the tokenizer
    has one and the config names it), not by TransformerLens' rule; built by hand with a config reading that
    TransformerLens does not share, the bridge refuses to change the identity under results already computed, and
    the plain forwards keep working."""
    family = tiny_family_loader(name)
    assert family.backend.hf_model.config.model_type not in HOOKS_LATER_FAMILIES
    model = load_model(ModelRequest(str(family.folder), device="cpu"), hooks_later=True)
    assert model.hooks_ready and model.info.bos_token == model.tokenizer.bos_token
    assert model.input_ids("1 2") == [model.tokenizer.bos_token_id, *model.encode("1 2")]
    assert model.bridge.cfg.default_prepend_bos  # TransformerLens' own string APIs follow the policy too

    placement = resolve_placement("cpu", "float32")
    read = config_info(family.reference, model.tokenizer, name=f"tiny-{name}", source=str(family.folder),
                       revision="r", placement=placement, n_params=1, load_seconds=0.0)
    assert read.bos_token == model.info.bos_token  # one policy, before and after the bridge
    misread = dataclasses.replace(read, n_ctx=read.n_ctx + 1)  # a reading TransformerLens will not share
    by_hand = BridgeBackend(copy.deepcopy(family.reference), model.tokenizer, misread, placement)
    tokens = by_hand.tensor([PROMPT_IDS])
    before = by_hand.next_tokens(tokens, 2).logits_at
    with pytest.raises(ModelLoadError, match="n_ctx"):
        by_hand.prepare_hooks()
    assert not by_hand.hooks_ready
    with pytest.raises(ModelLoadError, match="n_ctx"):  # said again on every use, not retried
        by_hand.prepare_hooks()
    torch.testing.assert_close(by_hand.next_tokens(tokens, 2).logits_at, before)


def test_the_background_set_up_is_not_a_daemon_thread_even_when_started_from_one(tiny_model_dir):
    """Streamlit's script threads are daemons, and a thread inherits its starter's flag: a daemon set-up thread was
    killed inside TransformerLens' C++ work when the server stopped ("terminate called without an active
    exception" on SIGTERM). Not a daemon, the process waits the few seconds for it."""
    import threading

    from headscope.loading import ModelRequest, load_model

    model = load_model(ModelRequest(str(tiny_model_dir)), hooks_later=True)
    starter = threading.Thread(target=model.prepare_hooks_in_background, daemon=True)
    starter.start()
    starter.join()
    assert model.setup.thread is not None and model.setup.thread.daemon is False
    model.setup.thread.join()
    assert model.hooks_ready


def test_a_set_up_asked_from_a_daemon_thread_runs_on_one_that_is_not(tiny_model_dir):
    """A first page that needs hooks asks for them from Streamlit's script thread, a daemon: SIGTERM meanwhile
    aborted the process inside TransformerLens' set-up ("terminate called without an active exception",
    reproduced on /ablation). The set-up runs on the background thread, which the exit waits for; the asker waits."""
    import threading

    from headscope.loading import ModelRequest, load_model

    model = load_model(ModelRequest(str(tiny_model_dir)), hooks_later=True)
    made_on: list[threading.Thread] = []
    make = model.setup._make
    model.setup._make = lambda: (made_on.append(threading.current_thread()), make())[1]
    asker = threading.Thread(target=model.prepare_hooks, daemon=True)
    asker.start()
    asker.join(timeout=120)
    assert model.hooks_ready  # ready when the asker's call returned
    assert len(made_on) == 1 and made_on[0] is not asker and made_on[0].daemon is False


def test_a_daemon_thread_inside_a_model_call_still_sets_up_without_waiting_for_itself(tiny_model_dir):
    """A first hook used inside a model call (the gate held) from a daemon thread: the set-up cannot move to another
    thread (it would wait for the gate this one holds), so it runs here, as before, instead of deadlocking."""
    import threading

    from headscope.loading import ModelRequest, load_model

    model = load_model(ModelRequest(str(tiny_model_dir)), hooks_later=True)
    done: list[bool] = []

    def inside_a_model_call() -> None:
        with model.gate.hold():
            model.prepare_hooks()
            done.append(model.hooks_ready)

    asker = threading.Thread(target=inside_a_model_call, daemon=True)
    asker.start()
    asker.join(timeout=120)
    assert done == [True]
