"""wan_accel_kernels.attention.nan_guard: the finiteness check reads the output once and allocates nothing of its size."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wan_accel_kernels.attention.nan_guard import GuardCounts, guarded, is_finite


class LargestOutput(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def test_the_check_allocates_no_tensor_of_the_outputs_size():
    out = torch.randn(2, 8, 64, 32, dtype=torch.bfloat16)
    with LargestOutput() as mode:
        assert is_finite(out)
    assert mode.largest <= 2, mode.largest  # scalars only, not a 32,768-element bool mask


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("bad, finite", [(None, True), (float("nan"), False), (float("inf"), False),
                                         (float("-inf"), False)], ids=["finite", "nan", "inf", "-inf"])
def test_any_single_nan_or_infinity_is_found(dtype, bad, finite):
    out = torch.randn(3, 5, 7).to(dtype)
    if bad is not None:
        out[1, 2, 3] = bad
    assert is_finite(out) is finite


def test_large_finite_values_do_not_read_as_overflow():
    out = torch.full((64, 1024), 65504.0, dtype=torch.float16)  # an fp16 sum of these would be inf
    out[0, 0] = -65504.0
    assert is_finite(out) and is_finite(torch.empty(0, 4))


def test_guard_recomputes_a_non_finite_output_and_counts_it():
    counts = GuardCounts()
    exact = torch.ones(4)
    assert guarded(lambda: torch.ones(4) * 2, lambda: exact, counts).eq(2).all()
    assert guarded(lambda: torch.tensor([1.0, float("nan"), 1.0, 1.0]), lambda: exact, counts) is exact
    still_bad = guarded(lambda: torch.full((4,), float("inf")), lambda: torch.full((4,), float("nan")), counts)
    assert still_bad.isnan().all()
    assert (counts.checked, counts.recomputed, counts.still_non_finite) == (3, 2, 1)
