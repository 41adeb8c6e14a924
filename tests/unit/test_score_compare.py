"""wan-accel compare's arithmetic: paired differences, the bootstrap interval, the final-score difference, pairing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wan_accel.batch.samples import speed_score
from wan_accel.errors import UsageError
from wan_accel.quality.compare import check_pairing, compare, comparison_lines, scored_batch
from wan_accel.quality.formulas import final_score

NAMES = ("subject", "background", "smoothness", "imaging")


def _records(values: dict[str, list[float]], seconds: list[float] | None) -> dict[str, dict]:
    count = len(next(iter(values.values())))
    return {f"s{i}": {"id": f"s{i}", "video": f"s{i}.mp4", "image": None,
                      "seconds": None if seconds is None else seconds[i],
                      "indices": {name: vals[i] for name, vals in values.items()}, "curves": {}}
            for i in range(count)}


def test_a_constant_shift_has_a_zero_width_interval_at_the_shift():
    base = {n: [0.90, 0.95, 0.97, 0.91] for n in NAMES}
    shifted = {n: [v - 0.01 for v in vals] for n, vals in base.items()}
    result = compare(_records(base, [50.0] * 4), _records(shifted, [50.0] * 4), resamples=500)
    for diff in result.differences:
        assert diff.delta == pytest.approx(-0.01) and diff.low == pytest.approx(-0.01)
        assert diff.high == pytest.approx(-0.01)
    # four indices each 0.01 lower, the same speed score: final lower by 0.2 * 0.04
    assert result.final.delta == pytest.approx(-0.008)
    assert result.final.a == pytest.approx(0.2 * (0.9325 * 4 + 1.0))


def test_the_interval_covers_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    wide = compare(_records({"imaging": list(rng.normal(0.7, 0.05, 8))}, None),
                   _records({"imaging": list(rng.normal(0.7, 0.05, 8))}, None), resamples=2000)
    many_a, many_b = rng.normal(0.7, 0.05, 200), rng.normal(0.7, 0.05, 200)
    narrow = compare(_records({"imaging": list(many_a)}, None), _records({"imaging": list(many_b)}, None),
                     resamples=2000)
    for result in (wide, narrow):
        (diff,) = result.differences
        assert diff.low < diff.delta < diff.high
    assert narrow.differences[0].high - narrow.differences[0].low < wide.differences[0].high - wide.differences[0].low
    assert narrow.final is None   # three indices missing: no final score


def test_final_difference_counts_the_speed_score_of_the_mean_time():
    values = {n: [0.9, 0.9] for n in NAMES}
    slow, fast = _records(values, [100.0, 110.0]), _records(values, [40.0, 50.0])
    result = compare(slow, fast, resamples=200)
    assert result.final.delta == pytest.approx(0.2 * (speed_score(45.0) - speed_score(105.0)))
    assert result.final.b == pytest.approx(final_score({n: 0.9 for n in NAMES}, 1.0))


def test_the_most_moved_samples_come_first_and_unpaired_ids_are_named():
    a = _records({n: [0.9, 0.9, 0.9] for n in NAMES}, None)
    b = _records({n: [0.9, 0.7, 0.85] for n in NAMES}, None)
    b["extra"] = dict(b["s0"], id="extra")
    result = compare(a, b, resamples=200, top=2)
    assert [i for i, _ in result.moved] == ["s1", "s2"]
    assert result.moved[0][1] == pytest.approx(0.2 * 4 * -0.2)
    assert result.only_b == ["extra"] and result.only_a == []
    lines = comparison_lines(result, "A", "B")
    assert lines[0] == "A = A, B = B: 3 paired sample(s)" and "left out" in lines[1]


def test_batches_of_other_seeds_or_no_shared_ids_are_refused(tmp_path):
    with pytest.raises(UsageError, match="share no scored sample"):
        compare(_records({"imaging": [0.5]}, None), {"other": {"indices": {"imaging": 0.5}}})
    with pytest.raises(UsageError, match="differ in seed for sample"):
        check_pairing(["s0"], {"s0": {"seed": 1, "prompt": "p"}}, {"s0": {"seed": 2, "prompt": "p"}})
    check_pairing(["s0"], {"s0": {"seed": 1, "prompt": "p"}}, {})   # no results file on one side: nothing to check
    with pytest.raises(UsageError, match="has no scores.json; make it with"):
        scored_batch(tmp_path)


def test_a_result_folder_gives_its_scores_and_its_samples(tmp_path):
    (tmp_path / "scores.json").write_text(json.dumps({"version": 1, "metrics": ["imaging"],
                                                      "samples": _records({"imaging": [0.5]}, None)}))
    (tmp_path / "results.json").write_text(json.dumps({"samples": [{"id": "s0", "seed": 7, "prompt": "p"}]}))
    records, samples = scored_batch(tmp_path)
    assert records["s0"]["indices"] == {"imaging": 0.5} and samples["s0"]["seed"] == 7
