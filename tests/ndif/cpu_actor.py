"""NDIF's model actor with its GPU steps taken out, so NDIF's own server runs a model on a CPU-only machine.

Loaded by NDIF's controller (NDIF_DEFAULT_MODEL_ACTOR_CLASS=cpu_actor.CpuModelActor, tests/ndif on the Ray node's
PYTHONPATH): everything else — the API, queue, dispatcher, controller, placement, request execution, result upload —
is NDIF 0.1.2's own code. Only what touches CUDA is replaced: loading (onto the CPU, not a GPU), caching (the weights
already live on the CPU) and the per-request cleanup (no CUDA cache to empty). Runs in NDIF's venv, not headscope's.
"""

import gc
import time

import ray
from ndif.services.ray.deployments.modeling.base import KILL_REASON_PREEMPTED, BaseModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel


class _CpuModelDeployment(BaseModelDeployment):
    """BaseModelDeployment on the CPU: the same request path, no torch.cuda calls."""

    def load_from_disk(self) -> HuggingFaceModel:
        started = time.time()
        model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name,
                                                device_map="cpu", **self.kwargs)
        model._module.requires_grad_(False)
        print(f"CpuModelActor: loaded {self.model_key} on the CPU in {time.time() - started:.1f} s", flush=True)
        return model

    async def to_cache(self) -> None:
        await self.cancel(KILL_REASON_PREEMPTED)
        self.cached = True

    def from_cache(self, gpu_mem_bytes_by_id: dict) -> None:
        self.gpu_mem_bytes_by_id = gpu_mem_bytes_by_id
        self.cached = False

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


@ray.remote(num_cpus=1, max_restarts=-1)
class CpuModelActor(_CpuModelDeployment):
    """The Ray actor class the controller deploys here (in place of NDIF's ModelActor)."""
