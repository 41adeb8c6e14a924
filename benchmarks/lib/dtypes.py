"""The short dtype names the benchmark tables print in their ``dtype`` columns."""
from __future__ import annotations

import torch

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def dtype_name(dtype: torch.dtype) -> str:
    """"fp32", "bf16" or "fp16" (the torch name for anything else), as the tables print it."""
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
