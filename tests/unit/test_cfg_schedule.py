"""Per-step cfg schedules: text format, cfg per step, number of steps that need the unconditional pass."""
from __future__ import annotations

import pytest

from wan_accel_kernels.step_cache import parse_cfg_schedule


def test_two_guided_steps_then_cfg_one():
    schedule = parse_cfg_schedule("3.0:2,1.0")
    assert schedule.per_step(8) == [3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert schedule.guided_steps(8) == 2
    assert schedule.describe(8) == "cfg 3 for steps 1-2, then 1 from step 3; unconditional pass on 2 of 8 steps"


def test_several_segments_and_a_counted_last_segment_that_carries_on():
    schedule = parse_cfg_schedule(" 5:1, 2.5:2 ,1")
    assert schedule.per_step(6) == [5.0, 2.5, 2.5, 1.0, 1.0, 1.0]
    assert schedule.guided_steps(6) == 3
    counted = parse_cfg_schedule("3:2,2:2")
    assert counted.per_step(6) == [3.0, 3.0, 2.0, 2.0, 2.0, 2.0]
    assert counted.describe() == "cfg 3 for steps 1-2, then 2 for steps 3-4, then 2 after that"


def test_constant_schedules():
    assert parse_cfg_schedule("1.0").guided_steps(8) == 0
    assert parse_cfg_schedule("1.0000000001").guided_steps(8) == 0
    assert parse_cfg_schedule("6").guided_steps(8) == 8
    assert parse_cfg_schedule("6").describe() == "cfg 6 throughout"
    assert parse_cfg_schedule("4:1").describe(3) == ("cfg 4 for step 1, then 4 after that; "
                                                     "unconditional pass on 3 of 3 steps")


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("3.0:2,,1.0", "empty"), ("3.0,1.0", "only the last entry"), ("x:2", "cannot read"),
    ("3:two", "cannot read"), ("3:0,1", "step counts"), ("-1", "finite number >= 0"), ("nan", "finite number"),
])
def test_bad_schedules_say_what_is_expected(text, message):
    with pytest.raises(ValueError, match=message):
        parse_cfg_schedule(text)
