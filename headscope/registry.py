"""Loaded models held once per (source, device, dtype) and shared by every caller (all browser sessions)."""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict

from headscope.backends.base import Backend
from headscope.loading import ModelRequest, ProgressCallback, SourcePolicy, load_model


class ModelRegistry:
    """Loads each requested model once; concurrent requests for the same model wait for the one load.

    At most `max_models` stay resident (least recently used dropped first), so trying a second large model does not
    keep the first in memory; a caller still holding an evicted model keeps it alive until it is done.
    """

    def __init__(self, max_models: int = 2) -> None:
        self.max_models = max_models
        self._models: OrderedDict[tuple[str, ...], Backend] = OrderedDict()
        self._guard = threading.Lock()
        self._loading: dict[tuple[str, ...], threading.Lock] = {}

    def get(
        self, request: ModelRequest, progress: ProgressCallback | None = None, policy: SourcePolicy | None = None, *,
        hooks_later: bool = False,
    ) -> Backend:
        """The loaded model for `request`; a model not loaded yet is loaded as `policy` allows (hooks_later: see
        load_model)."""
        key = request.key
        with self._guard:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            load_lock = self._loading.setdefault(key, threading.Lock())
        if not threading.current_thread().daemon:
            return self._load_and_keep(key, load_lock, request, progress, policy, hooks_later)
        return self._load_on_own_thread(key, load_lock, request, progress, policy, hooks_later)

    def _load_and_keep(self, key: tuple[str, ...], load_lock: threading.Lock, request: ModelRequest,
                       progress: ProgressCallback | None, policy: SourcePolicy | None, hooks_later: bool) -> Backend:
        with load_lock:
            with self._guard:
                if key in self._models:
                    return self._models[key]
            model = load_model(request, progress, policy, hooks_later=hooks_later)
            with self._guard:
                self._models[key] = model
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
                self._loading.pop(key, None)
            return model

    def _load_on_own_thread(self, key: tuple[str, ...], load_lock: threading.Lock, request: ModelRequest,
                            progress: ProgressCallback | None, policy: SourcePolicy | None,
                            hooks_later: bool) -> Backend:
        """The load on a thread that is not a daemon, this (daemon) thread relaying its progress. Streamlit's script
        threads are daemons, and the interpreter's exit (the server stopped by SIGTERM during a first load) killed
        one inside torch's C++ reading the weights: "terminate called without an active exception". A thread that
        is not a daemon is waited for; the load then ends and is kept even when this caller stops early (its
        progress callback raising, as Streamlit's stop and rerun do): a caller after it finds the model."""
        updates: queue.SimpleQueue = queue.SimpleQueue()
        outcome: list[Backend | BaseException] = []

        def load() -> None:
            relay = None if progress is None else lambda stage, fraction: updates.put((stage, fraction))
            try:
                outcome.append(self._load_and_keep(key, load_lock, request, relay, policy, hooks_later))
            except BaseException as error:  # raised again in the caller
                outcome.append(error)
            finally:
                updates.put(None)

        threading.Thread(target=load, name=f"loading {request.source}", daemon=False).start()
        while (update := updates.get()) is not None:
            if progress is not None:
                progress(*update)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def loaded(self, request: ModelRequest) -> Backend | None:
        with self._guard:
            return self._models.get(request.key)


_SHARED: ModelRegistry | None = None
_SHARED_GUARD = threading.Lock()


def shared_registry() -> ModelRegistry:
    """The registry of this process: the app's sessions and a preload at server start share it."""
    global _SHARED
    with _SHARED_GUARD:
        if _SHARED is None:
            _SHARED = ModelRegistry()
        return _SHARED
