"""Calibration: recording a full-compute run, TeaCache polynomial fits, profile JSON round trip, the test profile."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_accel_kernels.step_cache import (
    INDICATOR_EMBEDDING,
    INDICATOR_MODULATION,
    CalibrationRecorder,
    MagCachePolicy,
    StepGate,
    TeaCachePolicy,
    fit_teacache,
    load_profile,
    save_profile,
)

TINY_PROFILE = Path(__file__).resolve().parents[1] / "data" / "step_cache_tiny_i2v_8steps.json"
SIGMAS = [1.0, 0.9, 0.75, 0.5, 0.0]


def test_fit_recovers_a_quadratic_and_caps_the_degree():
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    y = [3 * v * v - v + 0.5 for v in x]
    fit = fit_teacache(x, y, degree=2)
    assert fit.coefficients == pytest.approx([3.0, -1.0, 0.5], abs=1e-9)
    assert fit.relative_rmse < 1e-12 and fit.distance_range == [0.1, 0.5]
    assert fit_teacache(x[:2], y[:2], degree=4).degree == 1
    with pytest.raises(ValueError, match="at least 2"):
        fit_teacache([0.1], [0.2])


def record_synthetic_run(recorder: CalibrationRecorder, streams=(0,)) -> None:
    """Four steps whose output delta shrinks by 0.8 per step and whose indicators grow by 10% per step."""
    base = torch.linspace(0.5, 1.5, 2 * 16 * 2 * 2 * 2).reshape(2, 16, 2, 2, 2)
    for step in range(4):
        x = torch.cat([base + step, torch.zeros(2, 20, 2, 2, 2)], dim=1)
        output = x[:, :16] + base * 0.8**step
        indicators = {INDICATOR_EMBEDDING: torch.full((2, 8), 1.1**step),
                      INDICATOR_MODULATION: torch.full((2, 48), 1.2**step)}
        for i, stream in enumerate(streams):
            recorder.record(stream, x[i:i + 1], output[i:i + 1],
                            {k: v[i:i + 1] for k, v in indicators.items()})


def test_recorder_measures_distances_changes_and_magnitude_ratios():
    recorder = CalibrationRecorder()
    record_synthetic_run(recorder)
    series = recorder.series[0]
    assert series.embedding_distance[0] is None and series.embedding_distance[1:] == pytest.approx([0.1] * 3)
    assert series.modulation_distance[1:] == pytest.approx([0.2] * 3)
    assert series.residual_change[1:] == pytest.approx([0.2] * 3)  # mean |0.8 d - d| / mean |d|
    assert series.mag_ratio == pytest.approx([1.0, 0.8, 0.8, 0.8])
    assert series.mag_std[1:] == pytest.approx([0.0] * 3, abs=1e-6)
    assert series.cosine_distance[1:] == pytest.approx([0.0] * 3, abs=1e-6)


def test_profile_round_trip_and_policies_built_from_it(tmp_path):
    recorder = CalibrationRecorder()
    record_synthetic_run(recorder, streams=(0, 1))
    profile = recorder.profile(SIGMAS, [1, 16, 2, 2, 2], "WAN21")
    path = save_profile(profile, tmp_path / "sub" / "p.json")
    loaded = load_profile(path)
    assert loaded == profile
    assert json.loads(path.read_text())["format"] == "wan_accel.step_cache_profile"
    assert loaded.mag_ratios(1) == pytest.approx((1.0, 0.8, 0.8, 0.8))
    fit = loaded.teacache[INDICATOR_EMBEDDING]
    assert fit.degree == 2 and fit.distance_range == pytest.approx([0.1, 0.1])


def test_profile_needs_one_forward_per_step_and_the_cond_stream():
    recorder = CalibrationRecorder()
    with pytest.raises(ValueError, match="nothing was recorded"):
        recorder.profile(SIGMAS, [1], "WAN21")
    record_synthetic_run(recorder)
    with pytest.raises(ValueError, match="once per step"):
        recorder.profile(SIGMAS[:3], [1], "WAN21")


def test_a_file_that_is_not_a_profile_names_itself_and_the_fix(tmp_path):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "something", "version": 1}))
    with pytest.raises(ValueError, match=r"wrong\.json is not a wan-accel step cache profile.*Calibrate"):
        load_profile(wrong)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_profile(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"format": "wan_accel.step_cache_profile", "version": 1, "steps": 8}))
    with pytest.raises(ValueError, match="missing or has a malformed field"):
        load_profile(partial)


def test_tiny_model_profile_from_the_test_data():
    profile = load_profile(TINY_PROFILE)
    assert (profile.steps, profile.model, profile.latent_shape) == (8, "WAN21", [1, 16, 2, 8, 8])
    assert set(profile.streams) == {"cond"} and len(profile.mag_ratios(1)) == 8
    cond = profile.streams["cond"]
    for name, distances in ((INDICATOR_EMBEDDING, cond.embedding_distance),
                            (INDICATOR_MODULATION, cond.modulation_distance)):
        # the stored fit, recomputed from the recorded series: least squares on the quadratic Vandermonde matrix
        x, y = np.array(distances[1:]), np.array(cond.residual_change[1:])
        coefficients = np.linalg.lstsq(np.vander(x, 3), y, rcond=None)[0]
        rmse = np.sqrt(np.mean((np.vander(x, 3) @ coefficients - y) ** 2) / np.mean(y**2))
        fit = profile.teacache[name]
        assert fit.degree == 2 and fit.coefficients == pytest.approx(coefficients, rel=1e-6), name
        assert fit.distance_range == [x.min(), x.max()] and fit.relative_rmse == pytest.approx(rmse, rel=1e-6)
        assert fit.relative_rmse < 0.1
    # On the tiny model each step changes the output delta by ~0.3-0.4 of its size.
    changes = profile.streams["cond"].residual_change[1:]
    assert min(changes) > 0.25 and max(changes) < 0.45
    gate = StepGate(first_steps=1, last_steps=1, max_consecutive_skips=100)
    tea = TeaCachePolicy(tuple(profile.teacache[INDICATOR_EMBEDDING].coefficients), 1e9, gate,
                         distance_range=tuple(profile.teacache[INDICATOR_EMBEDDING].distance_range))
    largest, smallest = max(cond.embedding_distance[1:]), min(cond.embedding_distance[1:])
    assert 0.25 < tea.rescaled(0.9) < 0.45  # a distance in the calibrated range
    assert tea.rescaled(100.0) == tea.rescaled(largest) and tea.rescaled(0.0) == tea.rescaled(smallest)  # clamped
    mag = MagCachePolicy(profile.mag_ratios(0), profile.mag_ratios(1), 0.1, 0.2, gate)
    state = mag.new_state(0)
    verdicts = []
    for step in range(8):
        skip = mag.wants_skip(state, step, 8, None)
        mag.commit(state, skip)
        verdicts.append("S" if skip else "C")
    # step 0 retained (0.2 x 8 steps); accumulated error sum |1 - prod(ratios)|: step 1 .053, 2 .053+.022,
    # 3 .075+.113 > 0.1 -> computed, restart; 4 .003, 5 .003+.016, 6 .019+.005; step 7 is forced.
    assert "".join(verdicts) == "CSSCSSSC"
