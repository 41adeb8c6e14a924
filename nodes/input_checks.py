"""Queue-time checks of float widgets: a value must be a finite number inside the widget's min..max.

The host compares a FLOAT value with its min and max only, and NaN passes both comparisons (an all-black video
follows). A node that names a float input in ``validate_inputs`` takes that check over, so this one does both.
"""
from __future__ import annotations

import math

from comfy_api.latest import io


def float_problem(schema: io.Schema, values: dict[str, object]) -> str | None:
    """Why one of ``values`` (float inputs of ``schema``, by name) is refused, or None; None values are links."""
    widgets = {spec.id: spec for spec in schema.inputs if isinstance(spec, io.Float.Input)}
    for name, value in values.items():
        if value is None:
            continue
        spec = widgets[name]
        low = -math.inf if spec.min is None else spec.min
        high = math.inf if spec.max is None else spec.max
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name} is {value!r}, not a finite number; give a number from {low:g} to {high:g}"
        if not low <= value <= high:
            return f"{name} {value:g} is outside {low:g}..{high:g}; give a number in that range"
    return None


def int_problem(schema: io.Schema, values: dict[str, object]) -> str | None:
    """Why one of ``values`` (int inputs of ``schema``, by name) is outside its widget's min..max, or None; None
    values are links. The host leaves this check to a node that names the input in ``validate_inputs``."""
    widgets = {spec.id: spec for spec in schema.inputs if isinstance(spec, io.Int.Input)}
    for name, value in values.items():
        spec = widgets[name]
        if value is None or (spec.min is None or spec.min <= value) and (spec.max is None or value <= spec.max):
            continue
        return f"{name} {value} is outside {spec.min}..{spec.max}; give a whole number in that range"
    return None


def first_problem(*answers: bool | str | None) -> bool | str:
    """``validate_inputs`` answer from several checks: the first error (a string), else True."""
    return next((answer for answer in answers if isinstance(answer, str)), True)
