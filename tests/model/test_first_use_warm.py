"""The first head click after a sweep took 13.5 s against 2.5 s for later ones: the pattern route's one-time check
(a full forward through TransformerLens and one through the model, every layer) ran on that click. The app now runs
it in the background once the hooks are set up."""

import time

import numpy as np

from components.model_state import warm_first_use_in_background
from headscope.loading import ModelRequest, load_model
from headscope.patterns import compute_patterns


def test_warming_leaves_no_one_time_check_for_the_first_head_click(tiny_model_dir):
    model = load_model(ModelRequest(str(tiny_model_dir)), hooks_later=True)
    thread = warm_first_use_in_background(model)
    assert thread is not None
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert warm_first_use_in_background(model) is None  # once per model

    def checked_again():
        raise AssertionError("the pattern route was checked on the click")

    model.checks.native_patterns = checked_again
    started = time.perf_counter()
    patterns = compute_patterns(model, "1 2 3 4 ", [(1, 1)])
    assert time.perf_counter() - started < 30  # generous: one short forward on a tiny model
    assert patterns.pattern.shape[0] == 1
    np.testing.assert_allclose(patterns.pattern[0].sum(-1), 1.0, atol=1e-5)
