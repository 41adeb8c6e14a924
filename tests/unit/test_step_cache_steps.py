"""Step lookup from sigmas and the gate that decides which steps a cache may skip."""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.step_cache import StepGate, step_index

# The sigmas KSampler hands to uni_pc for the tiny Wan model at 8 steps ("simple", shift 8; last 0 -> 0.001).
SIGMAS = [1.0, 0.9846324324607849, 0.9655600190162659, 0.9412594437599182, 0.9092395305633545,
          0.8651276230812073, 0.8004793524742126, 0.6966029405593872, 0.001]


def test_step_index_matches_every_step_sigma_exactly_and_after_a_float32_round_trip():
    assert [step_index(SIGMAS, s) for s in SIGMAS[:-1]] == list(range(8))
    as_float32 = torch.tensor(SIGMAS, dtype=torch.float32).double().tolist()
    assert [step_index(SIGMAS, s) for s in as_float32[:-1]] == list(range(8))


def test_intermediate_sigmas_of_multistage_samplers_map_to_their_step():
    midpoints = [(a + b) / 2 for a, b in zip(SIGMAS, SIGMAS[1:])]
    assert [step_index(SIGMAS, s) for s in midpoints] == list(range(8))
    assert step_index(SIGMAS, 1.5) == 0
    assert step_index(SIGMAS, 0.0001) == 7


def test_step_index_needs_a_step():
    with pytest.raises(ValueError, match="at least two"):
        step_index([1.0], 1.0)


def test_gate_forces_first_and_last_steps():
    gate = StepGate(first_steps=2, last_steps=1, max_consecutive_skips=100)
    assert [gate.is_forced(i, 8) for i in range(8)] == [True, True, False, False, False, False, False, True]
    none = StepGate(first_steps=0, last_steps=0, max_consecutive_skips=100)
    assert not any(none.is_forced(i, 8) for i in range(8))


def test_gate_window_is_a_fraction_of_the_steps():
    gate = StepGate(first_steps=0, last_steps=0, start_percent=0.25, end_percent=0.75)
    # step / 8 in [0.25, 0.75] -> steps 2..6
    assert [not gate.is_forced(i, 8) for i in range(8)] == [False, False, True, True, True, True, True, False]


def test_gate_caps_consecutive_skips():
    gate = StepGate(first_steps=0, last_steps=0, max_consecutive_skips=2)
    assert [gate.allows_skip(3, 8, n) for n in range(4)] == [True, True, False, False]
    assert not StepGate(max_consecutive_skips=0).allows_skip(3, 8, 0)


@pytest.mark.parametrize("kwargs", [dict(first_steps=-1), dict(max_consecutive_skips=-1),
                                    dict(start_percent=0.6, end_percent=0.5), dict(end_percent=1.5)])
def test_gate_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        StepGate(**kwargs)


def test_both_policies_share_one_skip_bookkeeping():
    from wan_accel_kernels.step_cache.magcache import MagCachePolicy, MagCacheState
    from wan_accel_kernels.step_cache.steps import SkipBookkeeping
    from wan_accel_kernels.step_cache.teacache import TeaCachePolicy, TeaCacheState

    assert MagCachePolicy.commit is TeaCachePolicy.commit is SkipBookkeeping.commit
    mag, tea = MagCacheState((1.0,), accumulated_ratio=0.5, accumulated_error=0.3), TeaCacheState(accumulated=0.4)
    for state in (mag, tea):
        SkipBookkeeping().commit(state, skipped=True)
        SkipBookkeeping().commit(state, skipped=True)
        assert state.consecutive_skips == 2
        SkipBookkeeping().commit(state, skipped=False)
        assert state.consecutive_skips == 0
    assert (mag.accumulated_ratio, mag.accumulated_error, tea.accumulated) == (1.0, 0.0, 0.0)
