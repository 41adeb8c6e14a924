"""Calibration profiles: per-step TeaCache distances and MagCache ratios of one full-compute run, their fit, JSON I/O.

A profile measured on the user's own model, steps, shift and resolution replaces the published tables,
which were fitted on 40-50 step schedules and do not carry over to 8 steps.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..expert_switch import EXPERTS
from .magcache import COND, UNCOND, magnitude_ratio
from .teacache import INDICATOR_EMBEDDING, INDICATOR_MODULATION, relative_l1

PROFILE_FORMAT = "wan_accel.step_cache_profile"
PROFILE_VERSION = 1
DEFAULT_FIT_DEGREE = 2  # 8-step runs give 7 points; a quartic through them oscillates between the points
STREAM_NAMES = {COND: "cond", UNCOND: "uncond"}
REMAKE = "re-run the 'Step Cache Calibrate' node to make a new one"


@dataclass
class StreamSeries:
    """Per-step measurements of one stream (cond or uncond), step 0 first; distances are None at step 0."""

    embedding_distance: list[float | None] = field(default_factory=list)
    modulation_distance: list[float | None] = field(default_factory=list)
    residual_change: list[float | None] = field(default_factory=list)
    mag_ratio: list[float] = field(default_factory=list)
    mag_std: list[float] = field(default_factory=list)
    cosine_distance: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class TeaCacheFit:
    """Polynomial (highest power first) from indicator distance to the residual's relative L1 change."""

    coefficients: list[float]
    distance_range: list[float]
    degree: int
    relative_rmse: float


@dataclass
class StepCacheProfile:
    """What a calibration run measured, and the fits the cache nodes use."""

    steps: int
    sigmas: list[float]
    latent_shape: list[int]
    model: str
    streams: dict[str, StreamSeries]
    teacache: dict[str, TeaCacheFit]
    expert: str | None = None  # the Wan 2.2 expert the run belonged to (high_noise / low_noise); None: one model

    def mag_ratios(self, stream: int) -> tuple[float, ...]:
        """MagCache ratios of ``stream``; the cond ones when the run had no unconditional pass (cfg 1)."""
        series = self.streams.get(STREAM_NAMES[stream]) or self.streams["cond"]
        return tuple(series.mag_ratio)

    def to_json(self) -> dict:
        """Plain-JSON form, tagged with format and version."""
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: object, source: str = "profile") -> "StepCacheProfile":
        """Inverse of ``to_json``; every field's type and length is checked here, so a malformed file fails at load
        (not during sampling); the error names ``source``, the field and the fix."""
        if not isinstance(data, dict):
            raise ValueError(f"{source} holds a JSON {type(data).__name__}, not a wan-accel step cache profile "
                             f"object; {REMAKE}")
        if data.get("format") != PROFILE_FORMAT or data.get("version") != PROFILE_VERSION:
            raise ValueError(f"{source} is not a wan-accel step cache profile version {PROFILE_VERSION} "
                             f"(format {_short(data.get('format'))}, version {_short(data.get('version'))}); {REMAKE}")
        bad = non_finite_field(data)
        if bad is not None:
            raise ValueError(f"{source}: field {bad[0]} is {bad[1]}, not a finite number (NaN or infinity would "
                             f"disable or force skipping); {REMAKE}")
        problem = profile_problem(data)
        if problem is not None:
            raise ValueError(f"{source} is missing or has a malformed field: {problem}; {REMAKE}")
        return cls(steps=data["steps"], sigmas=list(data["sigmas"]), latent_shape=list(data["latent_shape"]),
                   model=data["model"], streams={k: StreamSeries(**v) for k, v in data["streams"].items()},
                   teacache={k: TeaCacheFit(**v) for k, v in data["teacache"].items()}, expert=data.get("expert"))


def _short(value: object) -> str:
    """``value`` for a message, cut to 40 characters (a hostile file must not flood the log)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_problem(where: str, value: object, length: int | None, optional: bool = False,
                  check=_is_number, kind: str = "a number") -> str | None:
    """Why ``value`` is not a list of ``length`` items passing ``check`` (None allowed when ``optional``)."""
    if not isinstance(value, list):
        return f"{where} is {_short(value)}, not a list"
    if length is not None and len(value) != length:
        return f"{where} has {len(value)} items where {length} are needed"
    for index, item in enumerate(value):
        if not (check(item) or (optional and item is None)):
            return f"{where}[{index}] is {_short(item)}, not {kind}"
    return None


def profile_problem(data: dict) -> str | None:
    """The first field of a parsed profile with a wrong type, length or value, described, or None if all hold."""
    for key in ("steps", "sigmas", "latent_shape", "model", "streams", "teacache"):
        if key not in data:
            return f"{key} is missing"
    steps = data["steps"]
    if not _is_count(steps) or steps < 1:
        return f"steps is {_short(steps)}, not a positive whole number"
    if not isinstance(data["model"], str):
        return f"model is {_short(data['model'])}, not a string"
    if data.get("expert") not in (None, *EXPERTS):
        return f"expert is {_short(data['expert'])}, not one of {', '.join(EXPERTS)} or null"
    problem = (_list_problem("sigmas", data["sigmas"], steps + 1)
               or _list_problem("latent_shape", data["latent_shape"], None, check=_is_count, kind="a whole number"))
    if problem:
        return problem
    streams, teacache = data["streams"], data["teacache"]
    if not isinstance(streams, dict) or "cond" not in streams:
        return f"streams is {_short(streams)}, not an object with a 'cond' stream"
    series_fields = {f.name for f in fields(StreamSeries)}
    for name, series in streams.items():
        if name not in STREAM_NAMES.values() or not isinstance(series, dict) or set(series) != series_fields:
            return (f"streams.{_short(name)} is not a cond/uncond stream with exactly the fields "
                    f"{', '.join(sorted(series_fields))}")
        for key, value in series.items():
            problem = _list_problem(f"streams.{name}.{key}", value, steps, optional=key not in ("mag_ratio", "mag_std"))
            if problem:
                return problem
    fit_fields = {f.name for f in fields(TeaCacheFit)}
    if not isinstance(teacache, dict) or set(teacache) != {INDICATOR_EMBEDDING, INDICATOR_MODULATION}:
        return f"teacache is not an object with the fits {INDICATOR_EMBEDDING} and {INDICATOR_MODULATION}"
    for name, fit in teacache.items():
        if not isinstance(fit, dict) or set(fit) != fit_fields:
            return f"teacache.{name} is not an object with exactly the fields {', '.join(sorted(fit_fields))}"
        problem = (_list_problem(f"teacache.{name}.coefficients", fit["coefficients"], None)
                   or _list_problem(f"teacache.{name}.distance_range", fit["distance_range"], 2))
        if problem:
            return problem
        if not fit["coefficients"]:
            return f"teacache.{name}.coefficients is empty"
        if not _is_count(fit["degree"]) or fit["degree"] != len(fit["coefficients"]) - 1:
            return f"teacache.{name}.degree is {_short(fit['degree'])}, not len(coefficients) - 1"
        if not _is_number(fit["relative_rmse"]):
            return f"teacache.{name}.relative_rmse is {_short(fit['relative_rmse'])}, not a number"
    return None


def non_finite_field(data: object) -> tuple[str, float] | None:
    """Where the first NaN or infinite number of parsed JSON ``data`` is (e.g. ``streams.cond.mag_ratio[3]``), and it."""
    pending: list[tuple[str, object]] = [("", data)]
    while pending:  # iterative: a deeply nested file cannot exhaust the stack here
        where, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where, value
        if isinstance(value, dict):
            pending.extend(reversed([(f"{where}.{key}" if where else str(key), item) for key, item in value.items()]))
        elif isinstance(value, list):
            pending.extend(reversed([(f"{where}[{index}]", item) for index, item in enumerate(value)]))
    return None


def fit_teacache(distances: Sequence[float], changes: Sequence[float], degree: int = DEFAULT_FIT_DEGREE) -> TeaCacheFit:
    """Least-squares polynomial ``changes ~ P(distances)``, degree capped at points - 1; reports its relative RMSE."""
    x = np.asarray(distances, dtype=np.float64)
    y = np.asarray(changes, dtype=np.float64)
    if x.size < 2:
        raise ValueError("a TeaCache fit needs at least 2 measured steps after the first (calibrate >= 3 steps)")
    degree = min(degree, x.size - 1)
    coefficients = np.polyfit(x, y, degree)
    residual = np.polyval(coefficients, x) - y
    rmse = float(np.sqrt(np.mean(residual**2)) / max(float(np.sqrt(np.mean(y**2))), 1e-12))
    return TeaCacheFit([float(c) for c in coefficients], [float(x.min()), float(x.max())], int(degree), rmse)


class CalibrationRecorder:
    """Collects, forward by forward, what a full-compute run needs for a profile; holds only the previous tensors."""

    def __init__(self):
        self.series: dict[int, StreamSeries] = {}
        self._previous: dict[int, dict[str, torch.Tensor]] = {}

    def record(self, stream: int, x: torch.Tensor, output: torch.Tensor,
               indicators: dict[str, torch.Tensor]) -> None:
        """Adds one computed step of ``stream``: ``x`` is the DiT input chunk, ``output`` its output chunk."""
        residual = (output.float() - x[:, :output.shape[1]].float()).detach()
        current = {"residual": residual, **{k: v.detach().float() for k, v in indicators.items()}}
        series = self.series.setdefault(stream, StreamSeries())
        previous = self._previous.get(stream)
        if previous is None:
            series.embedding_distance.append(None)
            series.modulation_distance.append(None)
            series.residual_change.append(None)
            series.mag_ratio.append(1.0)
            series.mag_std.append(0.0)
            series.cosine_distance.append(None)
        else:
            series.embedding_distance.append(relative_l1(current[INDICATOR_EMBEDDING],
                                                         previous[INDICATOR_EMBEDDING]))
            series.modulation_distance.append(relative_l1(current[INDICATOR_MODULATION],
                                                          previous[INDICATOR_MODULATION]))
            series.residual_change.append(relative_l1(residual, previous["residual"]))
            ratio, std = magnitude_ratio(residual, previous["residual"])
            series.mag_ratio.append(ratio)
            series.mag_std.append(std)
            cosine = torch.nn.functional.cosine_similarity(residual.flatten(1), previous["residual"].flatten(1))
            series.cosine_distance.append(float(1.0 - cosine.mean()))
        self._previous[stream] = current

    def profile(self, sigmas: Sequence[float], latent_shape: Sequence[int], model: str,
                degree: int = DEFAULT_FIT_DEGREE, expert: str | None = None) -> StepCacheProfile:
        """The profile of what was recorded; TeaCache fits use the cond stream."""
        if COND not in self.series:
            raise ValueError("nothing was recorded: run a sampler with the calibration model first")
        cond = self.series[COND]
        steps = len(sigmas) - 1
        if len(cond.mag_ratio) != steps:
            raise ValueError(f"recorded {len(cond.mag_ratio)} conditional forwards for a {steps}-step schedule; "
                             f"calibrate with a sampler that evaluates the model once per step (e.g. euler, uni_pc)")
        fits = {name: fit_teacache(distances[1:], cond.residual_change[1:], degree)
                for name, distances in ((INDICATOR_EMBEDDING, cond.embedding_distance),
                                        (INDICATOR_MODULATION, cond.modulation_distance))}
        return StepCacheProfile(steps=steps, sigmas=[float(s) for s in sigmas], latent_shape=list(latent_shape),
                                model=model, streams={STREAM_NAMES[k]: v for k, v in sorted(self.series.items())},
                                teacache=fits, expert=expert)


def save_profile(profile: StepCacheProfile, path: str | Path) -> Path:
    """Writes ``profile`` as indented JSON (creating folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile.to_json(), indent=1) + "\n", encoding="utf-8")
    return path


def load_profile(path: str | Path) -> StepCacheProfile:
    """Reads a profile written by ``save_profile``; anything else is a one-line ``ValueError`` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text, so not a profile; {REMAKE}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {REMAKE}") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a profile; {REMAKE}") from None
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror or error}); {REMAKE}") from None
    return StepCacheProfile.from_json(data, str(path))
