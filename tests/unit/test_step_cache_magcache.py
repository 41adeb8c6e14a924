"""MagCache policy: published Wan 2.1 ratio tables, resampling to short schedules, drift accumulation, K, retention."""
from __future__ import annotations

import math

import pytest
import torch

from wan_accel_kernels.step_cache import MAGCACHE_RATIOS, MagCachePolicy, StepGate, resample_ratios
from wan_accel_kernels.step_cache.magcache import COND, UNCOND, magnitude_ratio, split_streams

FREE = StepGate(first_steps=1, last_steps=0, max_consecutive_skips=100)


def decisions(policy: MagCachePolicy, steps: int, stream: int = COND) -> str:
    """'C'/'S' per step of a ``steps``-step run of ``stream``."""
    state = policy.new_state(stream)
    out = []
    for step in range(steps):
        skip = policy.wants_skip(state, step, steps, None)
        policy.commit(state, skip)
        out.append("S" if skip else "C")
    return "".join(out)


def test_published_tables_hold_one_cond_uncond_pair_per_step():
    lengths = {name: len(split_streams(table)[0]) for name, table in MAGCACHE_RATIOS.items()}
    assert lengths == {"wan2.1_t2v_1.3B": 50, "wan2.1_t2v_14B": 50, "wan2.1_i2v_480p_14B": 40,
                       "wan2.1_i2v_720p_14B": 40}
    cond, uncond = split_streams(MAGCACHE_RATIOS["wan2.1_i2v_480p_14B"])
    assert cond[:3] == (1.0, 0.98783, 0.97559) and uncond[:3] == (1.0, 0.98993, 0.97593)
    with pytest.raises(ValueError, match="even"):
        split_streams((1.0, 1.0, 0.9))


def test_resampling_keeps_the_overall_drift_and_spreads_it_evenly():
    assert resample_ratios((1.0, 0.9, 0.8), 3) == (1.0, 0.9, 0.8)
    constant = resample_ratios((1.0,) + (0.99,) * 49, 8)
    assert len(constant) == 8 and constant[0] == 1.0
    assert all(r == pytest.approx(0.99 ** (49 / 7)) for r in constant[1:])
    cond, _ = split_streams(MAGCACHE_RATIOS["wan2.1_i2v_480p_14B"])
    short = resample_ratios(cond, 8)
    assert math.prod(short) == pytest.approx(math.prod(cond), rel=1e-9)
    assert resample_ratios(cond, 1) == (1.0,)


def test_magnitude_ratio_over_channels():
    previous = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    mean, std = magnitude_ratio(2.0 * previous, previous)
    assert mean == pytest.approx(2.0) and std == pytest.approx(0.0, abs=1e-6)


def test_drift_accumulates_and_restarts_after_a_computed_step():
    policy = MagCachePolicy((1.0,) + (0.9,) * 9, (1.0,) * 10, threshold=0.25, retention_ratio=0.0, gate=FREE)
    # step 1: ratio .9, error .1 -> skip; step 2: ratio .81, error .1 + .19 = .29 -> compute and restart.
    assert decisions(policy, 10) == "CSCSCSCSCS"
    state = policy.new_state(COND)
    policy.wants_skip(state, 1, 10, None)
    assert (state.accumulated_ratio, state.accumulated_error) == pytest.approx((0.9, 0.1))


def test_threshold_zero_never_skips_even_with_flat_ratios():
    policy = MagCachePolicy((1.0,) * 8, (1.0,) * 8, threshold=0.0, gate=FREE)
    assert decisions(policy, 8) == "C" * 8


def test_huge_threshold_k_and_retention():
    flat = (1.0,) * 8
    gate = StepGate(first_steps=1, last_steps=1, max_consecutive_skips=100)
    assert decisions(MagCachePolicy(flat, flat, 1e9, 0.2, gate), 8) == "CSSSSSSC"
    assert decisions(MagCachePolicy(flat, flat, 1e9, 0.5, gate), 8) == "CCCCSSSC"
    k2 = StepGate(first_steps=1, last_steps=1, max_consecutive_skips=2)
    assert decisions(MagCachePolicy(flat, flat, 1e9, 0.2, k2), 8) == "CSSCSSCC"
    k0 = StepGate(first_steps=1, last_steps=1, max_consecutive_skips=0)
    assert decisions(MagCachePolicy(flat, flat, 1e9, 0.2, k0), 8) == "C" * 8


def test_each_stream_follows_its_own_ratios():
    policy = MagCachePolicy((1.0,) * 6, (1.0,) + (0.5,) * 5, threshold=0.3, retention_ratio=0.0, gate=FREE)
    assert decisions(policy, 6, COND) == "CSSSSS"
    assert decisions(policy, 6, UNCOND) == "CCCCCC"


def test_published_policy_at_eight_steps():
    policy = MagCachePolicy.published("wan2.1_i2v_480p_14B", threshold=0.24, retention_ratio=0.2,
                                      gate=StepGate(first_steps=1, last_steps=1, max_consecutive_skips=2))
    # Resampled to 8 steps the i2v 480p ratios are 0.91, 0.95, 0.94, 0.92, 0.89, 0.82, 0.66 (steps 1-7).
    assert decisions(policy, 8) == "CSSCSCSC"
    with pytest.raises(ValueError, match="unknown MagCache model_type"):
        MagCachePolicy.published("flux", 0.2)
