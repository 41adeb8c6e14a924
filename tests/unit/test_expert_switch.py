"""Where a Wan 2.2 run hands over to the low-noise expert: the boundary sigma -> switch step mapping and the plan."""
from __future__ import annotations

import pytest

from wan_accel_kernels.expert_switch import (
    HIGH_NOISE,
    LOW_NOISE,
    WAN22_I2V_BOUNDARY,
    plan_switch,
    switch_step_at_boundary,
)


def shifted_simple_sigmas(steps: int, shift: float) -> list[float]:
    """The host's ``simple`` schedule of a flow model with ``ModelSamplingSD3`` shift: t evenly from 1 down."""
    ts = [1.0 - i / steps for i in range(steps)]
    return [shift * t / (1 + (shift - 1) * t) for t in ts] + [0.0]


def test_the_host_templates_4_step_schedule_switches_after_two_steps():
    sigmas = shifted_simple_sigmas(4, 5.0)  # video_wan2_2_14B_i2v: euler simple, shift 5, switch at step 2
    assert sigmas[:4] == pytest.approx([1.0, 0.9375, 0.8333333, 0.625])
    assert switch_step_at_boundary(sigmas, WAN22_I2V_BOUNDARY) == 2


@pytest.mark.parametrize("steps, shift, expected", [(20, 8.0, 10), (20, 5.0, 8), (8, 8.0, 4), (40, 3.0, 11)])
def test_the_switch_step_is_the_count_of_sigmas_at_or_above_the_boundary(steps, shift, expected):
    """(20, 8.0) is the host template's 20-step graph, which switches at step 10."""
    sigmas = shifted_simple_sigmas(steps, shift)
    k = switch_step_at_boundary(sigmas, WAN22_I2V_BOUNDARY)
    assert k == expected
    assert all(s >= WAN22_I2V_BOUNDARY for s in sigmas[:k]) and sigmas[k] < WAN22_I2V_BOUNDARY


def test_a_sigma_exactly_on_the_boundary_belongs_to_the_high_noise_expert():
    assert switch_step_at_boundary([1.0, 0.9, 0.5, 0.0], 0.9) == 2
    assert switch_step_at_boundary([1.0, 0.8999, 0.5, 0.0], 0.9) == 1


def test_boundaries_outside_the_schedule_give_one_expert_the_whole_run():
    sigmas = shifted_simple_sigmas(4, 5.0)
    assert switch_step_at_boundary(sigmas, 1.0) == 1      # only sigma 1.0 is at or above it
    assert switch_step_at_boundary([0.8, 0.5, 0.0], 0.9) == 0
    assert switch_step_at_boundary([1.0, 0.99, 0.95, 0.0], 0.0) == 3


def test_plan_counts_each_experts_steps_and_marks_the_switch():
    plan = plan_switch(shifted_simple_sigmas(4, 5.0), boundary=WAN22_I2V_BOUNDARY)
    assert plan.steps == 4 and plan.switch_step == 2
    assert plan.expert_steps() == {HIGH_NOISE: 2, LOW_NOISE: 2}
    assert plan.describe() == ("sigmas 1.000 0.938 | 0.833 0.625 0.000; high-noise expert steps 0-1, "
                               "low-noise expert steps 2-3")
    assert plan_switch([1.0, 0.5, 0.0], step=2).describe().endswith("only the high-noise expert runs")
    assert plan_switch([1.0, 0.5, 0.0], step=0).expert_steps() == {HIGH_NOISE: 0, LOW_NOISE: 2}


@pytest.mark.parametrize("kwargs, message", [
    ({"boundary": 0.9, "step": 2}, "exactly one"), ({}, "exactly one"), ({"step": 5}, "outside 0..4"),
    ({"boundary": float("nan")}, "not a sigma"), ({"boundary": 1.5}, "not a sigma")])
def test_bad_plans_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_switch(shifted_simple_sigmas(4, 5.0), **kwargs)
    with pytest.raises(ValueError, match="at least two sigmas"):
        switch_step_at_boundary([1.0], 0.9)
