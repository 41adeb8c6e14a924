"""One model kept between cache misses for exactly as long as the host's model management keeps it loaded.

The encoder caches reuse the last encoder they loaded (umt5-xxl, CLIP vision) so a second miss does not read the
file again. Holding it in a module global would put gigabytes out of the host's reach, so the hold is tied to the
host: the model's ``ModelPatcher`` gets an ``ON_DETACH`` callback, and when the host unloads it in full
(``unpatch_all``: ``POST /free`` with ``unload_models``, "free memory" in the editor, or memory pressure) the hold
is marked for release. It is dropped at the next garbage collection once the host has removed the model from
``current_loaded_models`` (dropping it inside the host's unload loop would free the patcher under the host's
feet); the host's own ``gc.collect()`` after a free then releases the weights. The next miss loads the file
again; hits never need the model.
"""
from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

import comfy.model_management
from comfy.patcher_extension import CallbacksMP

log = logging.getLogger("wan_accel")
T = TypeVar("T")
CALLBACK_KEY = "wan_accel_kept_model"
_unloaded: weakref.WeakSet = weakref.WeakSet()  # KeptModels whose model the host unloaded in full


class KeptModel(Generic[T]):
    """At most one ``T`` under a key; ``get`` loads on a key change or after the host unloaded the kept one."""

    def __init__(self, label: str, patcher_of: Callable[[T], object]):
        self.label = label
        self._patcher_of = patcher_of
        self._lock = threading.Lock()
        self._key: str | None = None
        self._value: T | None = None

    @property
    def value(self) -> T | None:
        """The kept model, or None when nothing is kept (never loaded, replaced, or released after a host unload)."""
        return self._value

    def get(self, key: str, load: Callable[[], T]) -> tuple[T, bool]:
        """``(model, freshly_loaded)``: the kept model when ``key`` matches, else ``load()`` (dropping the old one
        first, so two never sit in memory together)."""
        with self._lock:
            _unloaded.discard(self)
            if self._key == key and self._value is not None:
                return self._value, False
            self._key, self._value = None, None
        value = load()
        self._patcher_of(value).add_callback_with_key(CallbacksMP.ON_DETACH, CALLBACK_KEY, self._on_detach)
        with self._lock:
            self._key, self._value = key, value
        return value, True

    def release(self) -> None:
        """Forget the kept model; the host frees it once nothing else refers to it."""
        with self._lock:
            _unloaded.discard(self)
            self._key, self._value = None, None

    def release_if_unloaded(self) -> None:
        """Drop the model the host unloaded, once the host no longer lists it as loaded. Runs in a garbage
        collection on any thread, so it never waits for the lock: a busy cache is tried again at the next one."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            patcher = None if self._value is None else self._patcher_of(self._value)
            if patcher is not None and any(loaded.model is patcher
                                           for loaded in comfy.model_management.current_loaded_models):
                return  # still listed: the host's unload loop may not be done with it
            _unloaded.discard(self)
            self._key, self._value = None, None
        finally:
            self._lock.release()
        if patcher is not None:
            log.info("wan-accel: the host unloaded the kept %s; released (the next cache miss loads it again)",
                     self.label)

    def _on_detach(self, patcher: object, unpatch_all: bool) -> None:
        """``ON_DETACH`` of the kept model's patcher and its clones (which share its ``model``)."""
        kept = self._value
        if unpatch_all and kept is not None and self._patcher_of(kept).model is patcher.model:
            _unloaded.add(self)  # a re-load detaches without unpatching first: that is not an unload


def _release_unloaded(phase: str, info: dict) -> None:
    if phase == "start" and _unloaded:
        for kept in list(_unloaded):
            kept.release_if_unloaded()


gc.callbacks.append(_release_unloaded)
