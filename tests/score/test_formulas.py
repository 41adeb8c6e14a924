"""The challenge's formulas on hand-computed cases: similarity clamping and weighting, the dynamic-degree thresholds of a
832×480×81 video at 16 fps, the top-5 % flow magnitude, smoothness, imaging quality and the final score."""
import math

import numpy as np
import pytest

from wan_accel.quality import formulas


def test_identical_frames_are_fully_similar_and_score_one():
    feature = np.array([0.3, -1.2, 2.0])
    to_image, consecutive = formulas.clamped_similarities(feature, np.stack([feature * 2.0] * 4))
    assert to_image == pytest.approx([1.0] * 4, abs=1e-12)
    assert consecutive == pytest.approx([1.0] * 3, abs=1e-12)
    assert formulas.i2v_similarity_score(to_image, consecutive) == pytest.approx(1.0, abs=1e-12)


def test_negative_cosines_are_clamped_to_zero():
    to_image, consecutive = formulas.clamped_similarities(np.array([1.0, 0.0]),
                                                          np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 1.0]]))
    assert to_image == pytest.approx([1.0, 0.0, math.sqrt(0.5)])
    assert consecutive == [0.0, 0.0]          # cos = -1 and -0.707, both clamped
    assert formulas.i2v_similarity_score(to_image, consecutive) == pytest.approx(0.4)


def test_similarity_score_weights_max_mean_and_min():
    # 0.4 * 0.9 + 0.3 * mean(0.5, 0.7, 0.9) + 0.3 * 0.5
    assert formulas.i2v_similarity_score([0.2, 0.9, 0.4, 0.1], [0.5, 0.7, 0.9]) == pytest.approx(0.72)


def test_similarity_score_needs_two_frames():
    with pytest.raises(ValueError, match="at least two frames"):
        formulas.i2v_similarity_score([1.0], [])


def test_dynamic_thresholds_of_a_832x480x81_video_at_16fps():
    interval = formulas.dynamic_interval(16)
    sampled = len(range(0, 81, interval))
    assert (interval, sampled, sampled - 1) == (2, 41, 40)
    assert formulas.dynamic_threshold(480, 832) == 11.25
    assert formulas.dynamic_count_needed(sampled) == 10          # round(4 * 41 / 16) = round(10.25)
    assert formulas.dynamic_interval(5) == 1                     # round(0.625) = 1, never 0


def test_a_video_is_dynamic_from_ten_pairs_moving_strictly_over_the_threshold():
    still = [11.25] * 30                                         # equal to the threshold: not moving
    assert formulas.is_dynamic([12.0] * 10 + still, 41, 480, 832)
    assert not formulas.is_dynamic([12.0] * 9 + still + [11.25], 41, 480, 832)
    # one sampled frame: no pair, static (round(4 * 1 / 16) = 0 pairs needed must not make it dynamic)
    assert formulas.dynamic_count_needed(1) == 0 and not formulas.is_dynamic([], 1, 480, 832)


def test_top_flow_magnitude_is_the_mean_of_the_largest_five_percent():
    flow = np.zeros((10, 10, 2))
    flow[..., 0] = np.arange(100).reshape(10, 10) * 0.6            # magnitudes 0, 1, ..., 99 (3-4-5 triangles)
    flow[..., 1] = np.arange(100).reshape(10, 10) * 0.8
    assert formulas.top_flow_magnitude(flow) == pytest.approx(97.0)   # mean of 95..99
    with pytest.raises(ValueError, match="too small"):
        formulas.top_flow_magnitude(np.ones((4, 4, 2)))             # int(16 * 0.05) = 0 values


def test_smoothness_of_identical_frames_is_one_and_falls_with_the_difference():
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert formulas.smoothness_score(frames, frames) == 1.0
    assert formulas.smoothness_score(np.zeros((2, 4, 4, 3), np.uint8), np.full((2, 4, 4, 3), 51, np.uint8)) == 0.8
    assert formulas.smoothness_score(np.zeros((1, 2, 2, 3), np.uint8), np.full((1, 2, 2, 3), 255, np.uint8)) == 0.0


def test_imaging_quality_is_the_mean_musiq_score_over_100():
    assert formulas.imaging_quality_score([40.0, 60.0, 65.0]) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="at least one frame"):
        formulas.imaging_quality_score([])


def test_final_score_with_the_winners_numbers():
    indices = {"subject": 0.9711, "background": 0.9761, "smoothness": 0.9884, "imaging": 0.7246}
    assert formulas.final_score(indices, 0.9) == pytest.approx(0.9121, abs=1e-4)
    assert formulas.final_score(indices, 0.9) == pytest.approx(0.2 * 4.5602, abs=1e-12)


def test_final_score_is_none_without_a_speed_or_with_a_missing_or_nan_index():
    indices = {"subject": 0.9, "background": 0.9, "smoothness": 0.9, "imaging": 0.7}
    assert formulas.final_score(indices, None) is None
    assert formulas.final_score({**indices, "imaging": float("nan")}, 0.5) is None
    assert formulas.final_score({k: v for k, v in indices.items() if k != "subject"}, 0.5) is None
