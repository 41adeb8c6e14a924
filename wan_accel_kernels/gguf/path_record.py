"""What the GGUF dequantisation really did for one owner (a sampling run, a benchmark configuration).

The owner opens :func:`recording` around its work; :func:`wan_accel_kernels.gguf.backend.dequantize_on_device` then adds
every eager call to that :class:`DequantRecord` (path per layer type and GGUF type, each reason, each fallback),
and a ``torch.compile`` trace adds its trace-time choice once per call site. Nothing is counted outside a
recording, so no count grows for the life of the process.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from contextvars import ContextVar
from typing import Iterator, Optional

COMPILED = "compiled"
"""Layer label of choices made while ``torch.compile`` traced a call site (counted once per trace)."""


class DequantRecord:
    """Dequantisation calls per (layer type, GGUF type, path), with why each path was taken and each fallback."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.reasons: dict[str, str] = {}
        self.fallbacks: dict[tuple[str, str], str] = {}
        self.targets: set[tuple[str, str]] = set()

    def record(self, layer: str, qtype: str, path: str, reason: str, target: tuple[str, str]) -> None:
        """One call of ``layer`` (e.g. ``Linear``) on ``qtype`` blocks by ``path``, decoded to ``target``
        (dtype, device type), and the reason ``path`` was taken."""
        self.calls[layer, qtype, path] += 1
        self.reasons.setdefault(path, reason)
        self.targets.add(target)

    def record_fallback(self, layer: str, qtype: str, reason: str) -> None:
        """A Triton kernel failed for ``layer`` on ``qtype`` and the call fell back to PyTorch, because ``reason``."""
        self.fallbacks.setdefault((layer, qtype), reason)

    def path_counts(self) -> dict[tuple[str, str], int]:
        """Calls per (path, GGUF type), all layer types together."""
        counts: Counter = Counter()
        for (_, qtype, path), count in self.calls.items():
            counts[path, qtype] += count
        return dict(counts)

    def summary(self) -> str:
        """One line with call counts, e.g. ``GGUF dequant: triton Q6_K x400, torch Q8_0 x2``."""
        counts = self.path_counts()
        if not counts:
            return "GGUF dequant: no calls"
        return "GGUF dequant: " + ", ".join(f"{path} {name} x{count}" for (path, name), count in sorted(counts.items()))

    def describe(self) -> Optional[str]:
        """The observed path for a badge, without counts (a rerun that did the same reads the same), e.g.
        ``torch per layer → float32 on cpu (data on cpu; ...)``; None when nothing was dequantised."""
        if not self.calls:
            return None
        paths = sorted({path for _, _, path in self.calls})
        if len(paths) == 1:
            head = f"{paths[0]} per layer"
        else:
            head = ", ".join(f"{path} {layer} {qtype}" for layer, qtype, path in sorted(self.calls))
        where = ", ".join(f"{dtype} on {device}" for dtype, device in sorted(self.targets))
        reasons = "; ".join(self.reasons[path] for path in paths)
        text = f"{head} → {where} ({reasons})"
        for (layer, qtype), reason in sorted(self.fallbacks.items()):
            text += f"; {layer} {qtype} fell back: {reason}"
        return text


_active: ContextVar[Optional[DequantRecord]] = ContextVar("wan_accel_dequant_record", default=None)


def active_record() -> Optional[DequantRecord]:
    """The record the current run (or benchmark) opened, None outside one."""
    return _active.get()


@contextlib.contextmanager
def recording(record: DequantRecord) -> Iterator[DequantRecord]:
    """Adds every dequantisation inside the ``with`` block to ``record``."""
    token = _active.set(record)
    try:
        yield record
    finally:
        _active.reset(token)
