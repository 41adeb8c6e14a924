"""TeaCache policy: published Wan 2.1 coefficients, non-negative rescaled distance, forced steps, skip caps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_accel_kernels.step_cache import (
    INDICATOR_EMBEDDING,
    INDICATOR_MODULATION,
    TEACACHE_COEFFICIENTS,
    StepGate,
    TeaCachePolicy,
)
from wan_accel_kernels.step_cache.teacache import indicator_of, polynomial, relative_l1

IDENTITY = (1.0, 0.0)  # P(x) = x: the accumulated value is the plain sum of distances


def indicators_with_distances(distances: list[float]) -> list[torch.Tensor]:
    """Positive indicator tensors whose consecutive relative L1 distances are ``distances``."""
    values = [torch.linspace(1.0, 2.0, 16)]
    for d in distances:
        values.append(values[-1] * (1.0 + d))
    return values


def decisions(policy: TeaCachePolicy, distances: list[float]) -> str:
    """'C' (computed) or 'S' (skipped) per step of a run whose indicator moves by ``distances``."""
    state = policy.new_state(0)
    out = []
    indicators = indicators_with_distances(distances)
    for step, indicator in enumerate(indicators):
        skip = policy.wants_skip(state, step, len(indicators), indicator)
        policy.commit(state, skip)
        out.append("S" if skip else "C")
    return "".join(out)


def test_published_sets_cover_wan21_t2v_i2v_in_both_modes():
    names = {f"wan2.1_{m}{suffix}" for m in ("t2v_1.3B", "t2v_14B", "i2v_480p_14B", "i2v_720p_14B")
             for suffix in ("", "_ret_mode")}
    assert set(TEACACHE_COEFFICIENTS) == names
    assert all(len(c) == 5 for c in TEACACHE_COEFFICIENTS.values())
    assert TEACACHE_COEFFICIENTS["wan2.1_i2v_480p_14B"][0] == pytest.approx(-302.33167)
    assert indicator_of("wan2.1_i2v_480p_14B") == INDICATOR_EMBEDDING
    assert indicator_of("wan2.1_i2v_480p_14B_ret_mode") == INDICATOR_MODULATION
    with pytest.raises(ValueError, match="unknown TeaCache model_type"):
        TeaCachePolicy.published("wan2.2_i2v", 0.3)


def test_polynomial_matches_numpy_polyval():
    coefficients = TEACACHE_COEFFICIENTS["wan2.1_i2v_720p_14B"]
    for x in (0.0, 0.05, 0.2, 0.7):
        assert polynomial(coefficients, x) == pytest.approx(float(np.polyval(coefficients, x)), rel=1e-12)


def test_relative_l1_numbers():
    assert relative_l1(torch.full((4,), 3.0), torch.full((4,), 2.0)) == pytest.approx(0.5)
    assert relative_l1(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 2.0])) == pytest.approx(1.0)


def test_published_i2v_polynomial_goes_negative_outside_its_fit_and_the_policy_uses_its_magnitude():
    coefficients = TEACACHE_COEFFICIENTS["wan2.1_i2v_480p_14B"]
    assert polynomial(coefficients, 0.5) == pytest.approx(-1.303943, abs=1e-5)
    assert polynomial(coefficients, 0.02) < 0 < polynomial(coefficients, 0.1)
    policy = TeaCachePolicy.published("wan2.1_i2v_480p_14B", threshold=1.0,
                                      gate=StepGate(first_steps=1, last_steps=0, max_consecutive_skips=10))
    assert policy.rescaled(0.5) == pytest.approx(1.303943, abs=1e-5)
    # A jump of 0.5 would add -1.30 to a signed sum (and skip); its magnitude exceeds the threshold instead.
    assert decisions(policy, [0.5]) == "CC"


def test_threshold_zero_never_skips():
    policy = TeaCachePolicy(IDENTITY, 0.0, StepGate(first_steps=0, last_steps=0, max_consecutive_skips=100))
    assert decisions(policy, [0.0] * 19) == "C" * 20


def test_huge_threshold_computes_only_the_forced_steps():
    policy = TeaCachePolicy(IDENTITY, 1e9, StepGate(first_steps=1, last_steps=1, max_consecutive_skips=100))
    assert decisions(policy, [0.3] * 7) == "CSSSSSSC"
    policy = TeaCachePolicy(IDENTITY, 1e9, StepGate(first_steps=2, last_steps=2, max_consecutive_skips=100))
    assert decisions(policy, [0.3] * 7) == "CCSSSSCC"


def test_accumulation_restarts_after_each_computed_step():
    policy = TeaCachePolicy(IDENTITY, 0.25, StepGate(first_steps=1, last_steps=1, max_consecutive_skips=100))
    # 0.1 per step: 0.1 and 0.2 stay below 0.25 (skip), 0.3 does not (compute, restart at 0).
    assert decisions(policy, [0.1] * 9) == "CSSCSSCSSC"


def test_max_consecutive_skips_and_window():
    capped = TeaCachePolicy(IDENTITY, 1e9, StepGate(first_steps=1, last_steps=1, max_consecutive_skips=2))
    assert decisions(capped, [0.3] * 7) == "CSSCSSCC"
    window = TeaCachePolicy(IDENTITY, 1e9, StepGate(first_steps=0, last_steps=0, start_percent=0.5,
                                                    end_percent=0.75, max_consecutive_skips=100))
    assert decisions(window, [0.3] * 7) == "CCCCSSSC"


def test_calibrated_range_clamps_the_distance():
    policy = TeaCachePolicy((2.0, 0.0, 0.0), 1.0, distance_range=(0.2, 0.4))
    assert policy.rescaled(5.0) == pytest.approx(2.0 * 0.4**2)
    assert policy.rescaled(0.0) == pytest.approx(2.0 * 0.2**2)


def test_first_step_of_a_stream_and_a_shape_change_have_no_distance():
    policy = TeaCachePolicy(IDENTITY, 1e9, StepGate(first_steps=0, last_steps=0, max_consecutive_skips=100))
    state = policy.new_state(0)
    assert not policy.wants_skip(state, 0, 8, torch.ones(4))
    assert not policy.wants_skip(state, 1, 8, torch.ones(6))
    assert policy.wants_skip(state, 2, 8, torch.ones(6))
    with pytest.raises(ValueError, match="indicator"):
        policy.wants_skip(state, 3, 8, None)
