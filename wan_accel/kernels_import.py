"""The pack's ``kernels`` folder as the client and converter import it: ``wan_accel_kernels`` when installed by
pip (which never claims the generic top-level name ``kernels``), the checkout's ``kernels`` folder otherwise."""
from __future__ import annotations

try:
    from wan_accel_kernels.gguf import quantize
    from wan_accel_kernels.gguf.reader import ORIG_SHAPE_KEY
except ModuleNotFoundError as error:
    if error.name != "wan_accel_kernels":
        raise
    from kernels.gguf import quantize
    from kernels.gguf.reader import ORIG_SHAPE_KEY

__all__ = ["ORIG_SHAPE_KEY", "quantize"]
