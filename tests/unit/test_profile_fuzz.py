"""Malformed calibration profiles are refused at load with one line naming the file and the field.

A review found 12 of 17 malformed profiles gave raw tracebacks, several only later, during sampling. This fuzzer builds
about 50 of them from the tiny shipped profile, loads each, and tabulates: a clean one-line ``ValueError`` naming the
file, a raw traceback (any other exception), or wrong data accepted. Every one must be the first.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from wan_accel_kernels.step_cache import load_profile

TINY_PROFILE = Path(__file__).resolve().parents[1] / "data" / "step_cache_tiny_i2v_8steps.json"
BASE = json.loads(TINY_PROFILE.read_text(encoding="utf-8"))


def _edit(path: tuple, value: Any = None, delete: bool = False) -> Callable[[dict], Any]:
    """A mutation setting (or deleting) the item at ``path`` of a copy of the tiny profile."""
    def mutate(data: dict) -> Any:
        target = data
        for key in path[:-1]:
            target = target[key]
        if delete:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return data
    return mutate


COND = ("streams", "cond")
EMB = ("teacache", "timestep_embedding")
MUTATIONS: dict[str, Callable[[dict], Any] | bytes] = {
    "top-level list": lambda d: [d],
    "top-level string": lambda d: "profile",
    "top-level number": lambda d: 3,
    "top-level null": lambda d: None,
    "non-UTF-8 bytes": b'{"format": "\xff\xfe"}',
    "truncated JSON": json.dumps(BASE)[:200].encode(),
    "empty file": b"",
    "deep nesting": b"[" * 20_000 + b"]" * 20_000,
    "deep nesting in a field": (json.dumps(BASE)[:-1] + ', "x": ' + "[" * 20_000 + "]" * 20_000 + "}").encode(),
    "format missing": _edit(("format",), delete=True),
    "format a list": _edit(("format",), ["wan_accel.step_cache_profile"]),
    "version a string": _edit(("version",), "1"),
    "steps abc": _edit(("steps",), "abc"),
    "steps 8.5": _edit(("steps",), 8.5),
    "steps 0": _edit(("steps",), 0),
    "steps negative": _edit(("steps",), -3),
    "steps true": _edit(("steps",), True),
    "steps 1e9": _edit(("steps",), 10**9),
    "steps missing": _edit(("steps",), delete=True),
    "sigmas missing": _edit(("sigmas",), delete=True),
    "sigmas a string": _edit(("sigmas",), "0.9,0.8"),
    "sigmas too short": _edit(("sigmas",), [1.0, 0.5]),
    "sigmas string item": _edit(("sigmas", 3), "0.5"),
    "latent_shape a dict": _edit(("latent_shape",), {"a": 1}),
    "latent_shape float": _edit(("latent_shape", 0), 1.5),
    "model a number": _edit(("model",), 21),
    "model missing": _edit(("model",), delete=True),
    "streams missing": _edit(("streams",), delete=True),
    "streams a list": _edit(("streams",), []),
    "streams without cond": _edit(("streams",), {"uncond": BASE["streams"]["cond"]}),
    "stream unknown name": _edit(("streams", "third"), BASE["streams"]["cond"]),
    "cond a list": _edit(COND, [1.0, 2.0]),
    "cond extra field": _edit((*COND, "extra"), [1.0] * 8),
    "cond field missing": _edit((*COND, "mag_std"), delete=True),
    "mag_ratio empty": _edit((*COND, "mag_ratio"), []),
    "mag_ratio too short": _edit((*COND, "mag_ratio"), [1.0, 1.0]),
    "mag_ratio a string": _edit((*COND, "mag_ratio"), "1.0"),
    "mag_ratio string item": _edit((*COND, "mag_ratio", 4), "1.02"),
    "mag_ratio null item": _edit((*COND, "mag_ratio", 4), None),
    "mag_ratio nested list": _edit((*COND, "mag_ratio", 4), [1.0]),
    "mag_ratio NaN": _edit((*COND, "mag_ratio", 4), float("nan")),
    "embedding_distance bool": _edit((*COND, "embedding_distance", 2), True),
    "teacache missing": _edit(("teacache",), delete=True),
    "teacache one fit only": _edit(("teacache", "timestep_modulation"), delete=True),
    "teacache a list": _edit(("teacache",), [1, 2]),
    "coefficients strings": _edit((*EMB, "coefficients"), ["-0.2", "0.3", "0.2"]),
    "coefficients empty": _edit((*EMB, "coefficients"), []),
    "coefficients a number": _edit((*EMB, "coefficients"), 0.5),
    "distance_range one item": _edit((*EMB, "distance_range"), [0.1]),
    "distance_range strings": _edit((*EMB, "distance_range"), ["a", "b"]),
    "degree a string": _edit((*EMB, "degree"), "2"),
    "degree wrong": _edit((*EMB, "degree"), 5),
    "relative_rmse null": _edit((*EMB, "relative_rmse"), None),
    "fit extra field": _edit((*EMB, "bias"), 0.0),
    "fit a string": _edit(EMB, "fit"),
}


def _outcome(path: Path) -> tuple[str, str]:
    """('clean' | 'raw' | 'accepted', detail) for loading ``path``."""
    try:
        load_profile(path)
    except ValueError as error:
        message = str(error)
        clean = path.name in message and "\n" not in message and "Calibrate" in message and len(message) < 400
        return ("clean" if clean else "raw"), message
    except Exception as error:  # noqa: BLE001 - the fuzzer's job is to see every kind
        return "raw", f"{type(error).__name__}: {str(error)[:200]}"
    return "accepted", ""


def test_every_malformed_profile_is_refused_in_one_line_at_load(tmp_path):
    started = time.monotonic()
    table: dict[str, tuple[str, str]] = {}
    for index, (name, mutation) in enumerate(MUTATIONS.items()):
        path = tmp_path / f"fuzz_{index:02d}.json"
        if isinstance(mutation, bytes):
            path.write_bytes(mutation)
        else:
            path.write_text(json.dumps(mutation(copy.deepcopy(BASE))), encoding="utf-8")
        table[name] = _outcome(path)
    counts = {kind: sum(outcome == kind for outcome, _ in table.values()) for kind in ("clean", "raw", "accepted")}
    report = "\n".join(f"{outcome:8} {name}: {detail[:150]}" for name, (outcome, detail) in table.items()
                       if outcome != "clean")
    assert len(MUTATIONS) >= 50
    assert counts == {"clean": len(MUTATIONS), "raw": 0, "accepted": 0}, f"{counts}\n{report}"
    assert time.monotonic() - started < 10.0


@pytest.mark.parametrize("mutation, field", [
    (_edit(("steps",), "abc"), "steps is 'abc', not a positive whole number"),
    (_edit((*COND, "mag_ratio"), []), "streams.cond.mag_ratio has 0 items where 8 are needed"),
    (_edit((*EMB, "coefficients", 1), "0.3"), "teacache.timestep_embedding.coefficients[1] is '0.3', not a number"),
    (_edit(("sigmas",), delete=True), "malformed field: sigmas is missing"),
])
def test_the_message_names_the_field(tmp_path, mutation, field):
    path = tmp_path / "bad_profile.json"
    path.write_text(json.dumps(mutation(copy.deepcopy(BASE))), encoding="utf-8")
    with pytest.raises(ValueError, match="bad_profile.json") as caught:
        load_profile(path)
    assert field in str(caught.value)


def test_the_shipped_profile_still_loads():
    profile = load_profile(TINY_PROFILE)
    assert profile.steps == 8 and len(profile.mag_ratios(0)) == 8
    assert profile.teacache["timestep_embedding"].degree == 2
