"""A calibration profile holding NaN or infinity is refused at load, naming the file and the field.

NaN in ``mag_ratio`` made every drift comparison false, so MagCache silently never skipped; NaN coefficients did the
same to TeaCache. JSON written by Python spells them ``NaN``/``Infinity``, and ``1e999`` parses to infinity too.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_accel_kernels.step_cache import load_profile

TINY_PROFILE = Path(__file__).resolve().parents[1] / "data" / "step_cache_tiny_i2v_8steps.json"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("field, where, value, spelled", [
    (("streams", "cond", "mag_ratio", 3), "streams.cond.mag_ratio[3]", float("nan"), "nan"),
    (("teacache", "timestep_embedding", "coefficients", 0), "teacache.timestep_embedding.coefficients[0]",
     float("inf"), "inf"),
    (("teacache", "timestep_modulation", "distance_range", 1), "teacache.timestep_modulation.distance_range[1]",
     float("-inf"), "-inf"),
    (("sigmas", 2), "sigmas[2]", float("nan"), "nan"),
    (("teacache", "timestep_embedding", "relative_rmse"), "teacache.timestep_embedding.relative_rmse",
     float("nan"), "nan"),
])
def test_non_finite_number_is_refused_with_file_and_field(tmp_path, field, where, value, spelled):
    data = json.loads(TINY_PROFILE.read_text(encoding="utf-8"))
    target = data
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    path = _write(tmp_path, "nan_profile.json", json.dumps(data))
    assert ("NaN" if spelled == "nan" else "Infinity") in path.read_text()
    with pytest.raises(ValueError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert "nan_profile.json" in message and f"field {where} is {spelled}," in message
    assert "Calibrate" in message and "\n" not in message


def test_an_overflowing_literal_is_infinity_and_refused(tmp_path):
    text = TINY_PROFILE.read_text(encoding="utf-8").replace('"mag_ratio": [', '"mag_ratio": [1e999, ', 1)
    assert "1e999" in text
    with pytest.raises(ValueError, match=r"big\.json: field streams\.cond\.mag_ratio\[0\] is inf,"):
        load_profile(_write(tmp_path, "big.json", text))


def test_the_finite_test_profile_still_loads():
    assert load_profile(TINY_PROFILE).steps == 8
