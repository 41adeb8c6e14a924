"""A stand-in ``sageattention`` 2.x package for CPU tests of the sage route (the real one needs CUDA tensors).

Each ``sageattn_<kernel>`` function takes q, k, v in "HND" or "NHD" like the real ones, records its call, and
returns float32 SDPA of the inputs in the input's dtype and layout, plus ``noise`` times a fixed random tensor; the
``mode`` attribute makes it return NaNs ("nan") or raise ("raise") instead.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from types import ModuleType, SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from benchmarks.lib import attention_compare as compare_module
from wan_accel_kernels.attention import override as override_module
from wan_accel_kernels.attention import sage as sage_module
from wan_accel_kernels.attention.dispatch import SAGE_KERNELS, dispatch

FAKE_VERSION = "2.2.0"


class FakeSage(ModuleType):
    """The fake module: ``calls`` lists (kernel, tensor_layout, options) per call."""

    def __init__(self, noise: float = 0.0):
        super().__init__("sageattention")
        self.calls: list = []
        self.noise = noise
        self.mode = "ok"
        self.core = SimpleNamespace(SM80_ENABLED=True, SM89_ENABLED=True, SM90_ENABLED=True)
        for kernel in SAGE_KERNELS:
            setattr(self, "sageattn_" + kernel, self._kernel(kernel))

    def _kernel(self, kernel: str):
        def attention(q, k, v, tensor_layout="HND", is_causal=False, **options):
            self.calls.append((kernel, tensor_layout, options))
            if self.mode == "raise":
                raise RuntimeError("fake kernel failure")
            to_hnd = (lambda t: t) if tensor_layout == "HND" else (lambda t: t.transpose(1, 2))
            out = F.scaled_dot_product_attention(*(to_hnd(t).float() for t in (q, k, v)))
            generator = torch.Generator().manual_seed(0)
            out = out + self.noise * torch.randn(out.shape, generator=generator)
            if self.mode == "nan":
                out[..., 0] = float("nan")
            return to_hnd(out).to(q.dtype)
        return attention


def install_fake_sage(monkeypatch: pytest.MonkeyPatch, noise: float = 0.0,
                      capability: tuple = (8, 9), version: str = FAKE_VERSION) -> FakeSage:
    """Installs :class:`FakeSage` as ``sageattention`` of distribution ``version`` and makes the dispatch of the
    override and of ``compare`` see CPU tensors as a CUDA device of ``capability``."""
    fake = FakeSage(noise)
    monkeypatch.setitem(sys.modules, "sageattention", fake)
    monkeypatch.setattr(sage_module, "installed_version", lambda: version)

    def dispatch_as_cuda(backend, call, sage):
        return dispatch(backend, replace(call, device_type="cuda", capability=capability), sage)

    monkeypatch.setattr(override_module, "dispatch", dispatch_as_cuda)
    monkeypatch.setattr(compare_module, "dispatch", dispatch_as_cuda)
    return fake
