"""Shared fixtures. No test reaches a model hub: HF_HUB_OFFLINE is set before anything imports transformers. No test
reads or writes the checkout's results cache: HEADSCOPE_RESULTS_DIR points at a folder of this session (tests that
need a folder of their own set it again); the converted embedded model under cache/models is shared, read only."""

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The job-time limit asks before long jobs; a loaded test machine's estimates can pass the default, so the suite runs
# without it except where a test sets it (tests/app/test_job_time_limit.py, tests/model/test_job_time.py)
os.environ.setdefault("HEADSCOPE_MAX_JOB_SECONDS", "86400")

import pytest
import torch

_SESSION_RESULTS = tempfile.mkdtemp(prefix="headscope-test-results-")
os.environ["HEADSCOPE_RESULTS_DIR"] = _SESSION_RESULTS
atexit.register(shutil.rmtree, _SESSION_RESULTS, True)

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded model (SmolLM2-135M-Instruct) on the CPU in float32, loaded once per test session (pinned:
    "auto" would pick CUDA float16 on a GPU machine, where comparisons with a CPU float32 reference fail). It is the
    process-wide registry's copy, the one the pages of tests/app use too (their default request is pinned to the same
    one there), so a run of several tiers loads it once."""
    from headscope.registry import shared_registry
    from tests.pinned import EMBEDDED_ON_CPU

    return shared_registry().get(EMBEDDED_ON_CPU)


@pytest.fixture(scope="session")
def embedded_reference():
    """The embedded model's converted folder loaded a second time by plain transformers (eager attention, float32,
    CPU): the independent reference. TransformerLens replaces the submodules of the model it wraps with its own
    bridge components, so `embedded_model.hf_model` no longer runs Hugging Face's code alone; this copy does."""
    from transformers import AutoModelForCausalLM

    from headscope.loading import embedded_converted_folder

    return AutoModelForCausalLM.from_pretrained(embedded_converted_folder()[0], dtype=torch.float32,
                                                attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def embedded_hf_tokenizer():
    """The embedded model's own Hugging Face tokenizer, for references that build their inputs without headscope.
    It adds no BOS: the model input starts with `<|im_start|>` (id 1), which references prepend themselves."""
    from transformers import AutoTokenizer

    from headscope.loading import embedded_converted_folder

    return AutoTokenizer.from_pretrained(embedded_converted_folder()[0])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A local folder holding a tiny random-init Llama (GQA: 4 query heads over 2 KV heads) with the embedded
    model's tokenizer: fast, and it exercises the local-folder loading path."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from headscope.loading import embedded_converted_folder

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_converted_folder()[0])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the init's 0.02 so that heads have visible effects
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0, 0.2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from headscope.loading import ModelRequest, load_model

    return load_model(ModelRequest(str(tiny_model_dir), device="cpu"))  # float32 on any machine


@pytest.fixture
def cli_shares_the_embedded_model(monkeypatch, embedded_model):
    """The CLI run in this process (tests/cli_in_process.py) answers a request for the embedded model on the CPU (the
    default: "auto" is the CPU in float32 where the subprocesses ran, with no CUDA device visible) with the session's
    copy instead of loading its own (seconds per command). Every other request loads as the command would; the load
    from the command line itself is checked by real processes (test_cli_tokens.py's table case, test_cli_bad_input.py;
    in the slow run and .ci/run, the installed package's command)."""
    import headscope.cli as cli

    load = cli.load_for_cli

    def shared_or_loaded(args):
        embedded_on_cpu = (args.model == "embedded" and args.device in ("auto", "cpu")
                           and args.dtype in ("auto", "float32") and args.bos == "auto")
        if embedded_on_cpu and cli.backend_for(args) == "bridge":
            return embedded_model
        return load(args)

    monkeypatch.setattr(cli, "load_for_cli", shared_or_loaded)
