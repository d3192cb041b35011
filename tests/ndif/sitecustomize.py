"""Test-bed shims for NDIF 0.1.2 over nnsight 0.8.1 with the hub offline (NDIF's venv only; gated by
HEADSCOPE_NDIF_TESTBED=1, which serve.sh sets for the server's processes).

1. NDIF 0.1.2's controller calls `Remotable.describe_checkpoint(key, dtype, trust_remote_code=...)` and
   `Remotable.max_tp_size(key, trust_remote_code=...)`; nnsight 0.8.1 (the newest on PyPI, and inside NDIF's own pin
   `>=0.8.0rc1,<0.9`) takes no `trust_remote_code`, so every description fails with a TypeError and NDIF's /status
   lists a deployed model only by its actor name (no repo id, no deployment level). The keyword is dropped here.
2. nnsight asks the hub's API for a checkpoint's parameter count; here the hub is offline, so the count is read
   from the local cache's safetensors header instead (what the hub would report for it).
"""

import os

if os.environ.get("HEADSCOPE_NDIF_TESTBED") == "1":
    try:
        from nnsight.modeling import huggingface as _hf
        from nnsight.modeling.mixins.remotable import Remotable as _Remotable
    except Exception:
        _Remotable = None

    if _Remotable is not None:
        _describe = _Remotable.describe_checkpoint.__func__
        _max_tp = _Remotable.max_tp_size.__func__

        def _describe_checkpoint(cls, model_key, dtype, trust_remote_code=False):
            return _describe(cls, model_key, dtype)

        def _max_tp_size(cls, model_key, trust_remote_code=False):
            return _max_tp(cls, model_key)

        def _cached_parameter_count(repo_id, revision):
            from huggingface_hub import try_to_load_from_cache
            from safetensors import safe_open

            path = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
            if not isinstance(path, str):
                return None
            with safe_open(path, "pt") as weights:
                total = 0
                for name in weights.keys():  # noqa: SIM118 - safe_open is not iterable
                    count = 1
                    for size in weights.get_slice(name).get_shape():
                        count *= size
                    total += count
            return total

        _Remotable.describe_checkpoint = classmethod(_describe_checkpoint)
        _Remotable.max_tp_size = classmethod(_max_tp_size)
        _hf.HuggingFaceModel._hub_parameter_count = staticmethod(_cached_parameter_count)
