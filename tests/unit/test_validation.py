"""Argument validation: clear errors before any model work."""

import pytest

from headscope.errors import InputError, ModelLoadError
from headscope.loading import resolve_placement, resolve_source
from headscope.predict import resolve_position, toggle_leading_space, toggle_trailing_space, validate_top_k


@pytest.mark.parametrize("bad", [0, -1, 201, 1.5, "3", True])
def test_top_k_out_of_range_is_rejected(bad):
    with pytest.raises(InputError, match="top-k"):
        validate_top_k(bad)


def test_top_k_in_range_passes():
    assert validate_top_k(1) == 1
    assert validate_top_k(200) == 200


def test_positions_count_from_the_end_and_are_bounded():
    assert resolve_position(None, 9) == 8
    assert resolve_position(-1, 9) == 8
    assert resolve_position(0, 9) == 0
    with pytest.raises(InputError, match="positions 0 to 8"):
        resolve_position(9, 9)
    with pytest.raises(InputError):
        resolve_position(-10, 9)


def test_space_toggles():
    assert toggle_trailing_space("1 2 3 4") == "1 2 3 4 "
    assert toggle_trailing_space("1 2 3 4 ") == "1 2 3 4"
    assert toggle_leading_space("5") == " 5"
    assert toggle_leading_space(" five") == "five"


def test_cuda_requested_without_cuda_names_the_fix():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match=r"CUDA is not available.*cpu"):
        resolve_placement("cuda", "auto")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_placement("multi-gpu", "auto")


def test_half_precision_on_cpu_is_refused_with_advice():
    with pytest.raises(ModelLoadError, match="float32 on the CPU"):
        resolve_placement("cpu", "float16")
    assert str(resolve_placement("cpu", "auto").dtype) == "torch.float32"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu"])
def test_unknown_devices_are_refused(bad):
    with pytest.raises(ModelLoadError):
        resolve_placement(bad, "auto")


def test_unknown_dtype_is_refused():
    with pytest.raises(ModelLoadError, match="dtype"):
        resolve_placement("cpu", "float8")


def test_sources_are_classified(tmp_path):
    assert resolve_source("").kind == "embedded"
    assert resolve_source("embedded").kind == "embedded"
    assert resolve_source("meta-llama/Llama-2-7b-hf").kind == "hub"
    assert resolve_source("gpt2").kind == "hub"
    with pytest.raises(ModelLoadError, match="neither an existing folder nor a valid hub id"):
        resolve_source("not a model id!")
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_source(str(tmp_path / "missing"))


def test_folder_without_model_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match=r"missing config\.json and weight files"):
        resolve_source(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="missing weight files"):
        resolve_source(str(tmp_path))
