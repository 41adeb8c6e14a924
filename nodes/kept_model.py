"""One model kept between cache misses for exactly as long as the host's model management keeps it loaded.

The encoder caches reuse the last encoder they loaded (umt5-xxl, CLIP vision) so a second miss does not read the
file again. Holding it in a module global would put gigabytes out of the host's reach, so the hold is tied to the
host: the model's ``ModelPatcher`` gets an ``ON_DETACH`` callback, and when the host unloads it in full
(``unpatch_all``: ``POST /free`` with ``unload_models``, "free memory" in the editor, or memory pressure) the hold
is marked for release. It is dropped when the host discards the model's ``current_loaded_models`` entry, right
after its unload loop (dropping it inside the loop would free the patcher under the host's feet), through a
``weakref.finalize`` on that entry; a model detached outside that list stays kept until the cache next needs a
model, which replaces or reloads it. The host's own ``gc.collect()`` after a free then releases the weights. The next miss loads the file again; hits never
need the model.
"""
from __future__ import annotations

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


class KeptModel(Generic[T]):
    """At most one ``T`` under a key; ``get`` loads on a key change or after the host unloaded the kept one."""

    def __init__(self, label: str, patcher_of: Callable[[T], object]):
        self.label = label
        self._patcher_of = patcher_of
        self._lock = threading.Lock()
        self._key: str | None = None
        self._value: T | None = None
        self._unloaded = False  # the host unloaded the kept model in full; drop it once the host is done with it

    @property
    def value(self) -> T | None:
        """The kept model, or None when nothing is kept (never loaded, replaced, or released after a host unload)."""
        return self._value

    def get(self, key: str, load: Callable[[], T]) -> tuple[T, bool]:
        """``(model, freshly_loaded)``: the kept model when ``key`` matches, else ``load()`` (dropping the old one
        first, so two never sit in memory together)."""
        with self._lock:
            self._unloaded = False  # kept or not, the caller uses the model now: the host loads it again on use
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
            self._unloaded = False
            self._key, self._value = None, None

    def release_if_unloaded(self) -> None:
        """Drop the model the host unloaded, once the host no longer lists it as loaded. Runs on the host's thread
        as its list entry goes, so it never waits for the lock: a busy cache keeps the model until its next miss."""
        if not self._unloaded or not self._lock.acquire(blocking=False):
            return
        try:
            patcher = None if self._value is None else self._patcher_of(self._value)
            if patcher is not None and any(loaded.model is patcher
                                           for loaded in comfy.model_management.current_loaded_models):
                return  # still listed: the host's unload loop may not be done with it
            self._unloaded = False
            self._key, self._value = None, None
        finally:
            self._lock.release()
        if patcher is not None:
            log.info("wan-accel: the host unloaded the kept %s; released (the next cache miss loads it again)",
                     self.label)

    def _on_detach(self, patcher: object, unpatch_all: bool) -> None:
        """``ON_DETACH`` of the kept model's patcher and its clones (which share its ``model``)."""
        kept = self._value
        if not unpatch_all or kept is None or self._patcher_of(kept).model is not patcher.model:
            return  # a re-load detaches without unpatching first: that is not an unload
        self._unloaded = True
        for loaded in comfy.model_management.current_loaded_models:
            if loaded.model is patcher:
                weakref.finalize(loaded, self.release_if_unloaded)
