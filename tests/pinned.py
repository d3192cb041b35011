"""What pins the tests to the CPU in float32 on any machine ("auto" becomes CUDA float16 on a GPU machine, where every
comparison with a CPU float32 reference would fail): the embedded model's request, and the environment of the CLI
and server subprocesses (no CUDA device visible to them)."""

import os

from headscope.loading import ModelRequest

EMBEDDED_ON_CPU = ModelRequest(device="cpu", dtype="float32")


def cpu_env(**extra: str) -> dict[str, str]:
    """This process's environment for a subprocess: offline, no CUDA device visible, plus `extra`."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", **extra}
