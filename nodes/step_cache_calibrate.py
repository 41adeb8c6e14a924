"""Node "Step Cache Calibrate (Wan)": records one full-compute sampling run into a TeaCache/MagCache profile (JSON).

Put it where a cache node would go and run the workflow once with the steps, shift, sampler and resolution
you will use; the next run of the sampler computes every step and writes
``models/wan_accel_step_cache/<profile_name>.json``, which the cache nodes then offer as ``profile``.
"""
from __future__ import annotations

import logging
import re

import comfy.patcher_extension
from comfy_api.latest import io, ui

from ..wan_accel_kernels.step_cache import INDICATOR_EMBEDDING, INDICATOR_MODULATION, CalibrationRecorder, save_profile
from ..wan_accel_kernels.step_cache.calibration import DEFAULT_FIT_DEGREE
from .input_checks import first_problem
from .run_context import current_expert, current_run, install_run_context, within_run
from .stats import NodeStats, current_target
from .step_cache import WRAPPER_KEY, profile_path, require_wan, wan_timestep_indicator, wrapper_transformer_options

log = logging.getLogger("wan_accel")

RECORDER_KEY = "wan_accel_step_cache_calibration"  # transformer_options: settings, plus "recorder" during a run
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def profile_name_problem(profile_name: object) -> str | None:
    """Why ``profile_name`` cannot name a profile file, or None (also None for a link: checked when it runs)."""
    if profile_name is None:
        return None
    if isinstance(profile_name, str) and _NAME_PATTERN.match(profile_name.strip().removesuffix(".json")):
        return None
    shown = repr(profile_name)[:120]
    return (f"profile_name {shown} (Step Cache Calibrate): use 1-100 letters, "
            "digits, '_', '-' or '.', starting with a letter or digit")


def _outer_sample_wrapper(executor, *args, **kwargs):
    """Records this sampling run, every step computed, and writes the profile when it ends (in the run's context)."""
    return within_run(executor, lambda: _record_run(executor, *args, **kwargs))


def _record_run(executor, *args, **kwargs):
    guider = executor.class_obj
    transformer_options = guider.model_options["transformer_options"]
    settings = transformer_options[RECORDER_KEY]
    recorder = CalibrationRecorder()
    transformer_options[RECORDER_KEY] = {**settings, "recorder": recorder}
    output = executor(*args, **kwargs)
    noise, sigmas = args[0], args[3]
    model_name = type(guider.model_patcher.model).__name__
    expert = current_expert(transformer_options)
    profile = recorder.profile(sigmas.tolist(), list(noise.shape), model_name, settings["degree"],
                               expert.name if expert is not None else None)
    path = save_profile(profile, profile_path(settings["file_name"]))
    fits = ", ".join(f"{k} fit rel. RMSE {v.relative_rmse:.3f}" for k, v in profile.teacache.items())
    made_on = f" of the {expert.name.replace('_', '-')} expert" if expert is not None else ""
    text = f"Calibrated {profile.steps} steps{made_on} at latent {list(noise.shape)} -> {path.name} ({fits})"
    log.info("%s (%s)", text, path)
    context = current_run(transformer_options)
    if context is not None:
        context.report(settings["stats_target"], NodeStats(notes=(text,)))
    return output


def _diffusion_model_wrapper(executor, *args, **kwargs):
    """Runs the DiT forward and hands input, output and both timestep indicators to the run's recorder."""
    output = executor(*args, **kwargs)
    transformer_options = wrapper_transformer_options(args, kwargs)
    recorder: CalibrationRecorder | None = transformer_options.get(RECORDER_KEY, {}).get("recorder")
    if recorder is None:
        return output
    x, timestep = args[0], args[1]
    streams = transformer_options["cond_or_uncond"]
    chunks = len(streams)
    indicators = {kind: wan_timestep_indicator(executor.class_obj, timestep, x.dtype, kind).chunk(chunks)
                  for kind in (INDICATOR_EMBEDDING, INDICATOR_MODULATION)}
    for i, (stream, x_chunk, out_chunk) in enumerate(zip(streams, x.chunk(chunks), output.chunk(chunks))):
        recorder.record(stream, x_chunk, out_chunk, {kind: values[i] for kind, values in indicators.items()})
    return output


class WanStepCacheCalibrate(io.ComfyNode):
    """Measures the per-step distances and magnitude ratios of your own schedule, the fix for short schedules."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelStepCacheCalibrate",
            display_name="Step Cache Calibrate (Wan)",
            category="wan-accel/speed",
            description="Makes the next sampling run compute every step and record, per step, TeaCache's "
                        "timestep-embedding distances with the change of the output delta, and MagCache's "
                        "magnitude ratios. At the end it fits TeaCache polynomials and saves everything as "
                        "models/wan_accel_step_cache/<profile_name>.json for the TeaCache/MagCache nodes. "
                        "Use the steps, shift, sampler and resolution you will generate with.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 model (t2v or i2v), with your LoRAs and shift applied."),
                io.String.Input("profile_name", default="wan_i2v_8steps",
                                tooltip="File name (without .json) in models/wan_accel_step_cache; "
                                        "letters, digits, '_', '-', '.'."),
                io.Int.Input("fit_degree", default=DEFAULT_FIT_DEGREE, min=1, max=4,
                             tooltip="Degree of the TeaCache polynomial (capped at measured steps - 1). "
                                     "2 is stable for 8-step runs."),
            ],
            outputs=[io.Model.Output(tooltip="The model that records its next sampling run.")],
        )

    @classmethod
    def validate_inputs(cls, profile_name: str | None = None) -> bool | str:
        """Refuses, at queue time, a profile name that is not a plain file name."""
        return first_problem(profile_name_problem(profile_name))

    @classmethod
    def execute(cls, model: io.Model.Type, profile_name: str, fit_degree: int) -> io.NodeOutput:
        problem = profile_name_problem(profile_name)  # a linked name reaches here unchecked
        if problem is not None:
            raise ValueError(problem)
        require_wan(model, "Step Cache Calibrate (Wan)")
        name = profile_name.strip().removesuffix(".json")
        patched = model.clone()
        for kind in (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
                     comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
            patched.remove_wrappers_with_key(kind, WRAPPER_KEY)
        patched.model_options["transformer_options"][RECORDER_KEY] = {
            "file_name": f"{name}.json", "degree": fit_degree,
            "stats_target": current_target("WanAccelStepCacheCalibrate")}
        install_run_context(patched)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                     _outer_sample_wrapper)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                     _diffusion_model_wrapper)
        text = f"Calibration: the next sampling run computes every step and writes {profile_path(name + '.json')}"
        return io.NodeOutput(patched, ui=ui.PreviewText(text))
