"""Nodes "CFG Schedule Guider" (SamplerCustomAdvanced) and "CFG Schedule" (MODEL patch for KSampler): per-step cfg.

Both only choose the ``cond_scale`` the host's ``sampling_function`` receives at each step; the host's own
cfg-1 optimisation then drops the unconditional pass on steps whose cfg is 1, so those steps cost one DiT
forward instead of two. Nothing bypasses it: if another patch sets ``disable_cfg1_optimization``, the
unconditional pass runs on every step as the host intends.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import comfy.patcher_extension
import comfy.samplers
import torch
from comfy_api.latest import io, ui

from ..wan_accel_kernels.step_cache import CfgSchedule, parse_cfg_schedule, step_index
from ..wan_accel_kernels.step_cache.cfg_schedule import FORMAT_HELP
from .run_context import current_run, install_run_context, within_run
from .stats import NodeStats, StatsTarget, current_target, report_node_stats

log = logging.getLogger("wan_accel")

WRAPPER_KEY = "wan_accel_cfg_schedule"
SCHEDULE_KEY = "wan_accel_cfg_schedule"  # transformer_options: the CfgSchedule of the MODEL patch
TARGET_KEY = "wan_accel_cfg_schedule_target"  # transformer_options: the schedule node's StatsTarget
DEFAULT_SCHEDULE = "3.0:2,1.0"


def scheduled_cfg(schedule: CfgSchedule, model_options: dict, sigma: torch.Tensor) -> float:
    """cfg of the step that ``sigma`` belongs to, from the run's ``sample_sigmas``."""
    sample_sigmas = model_options["transformer_options"]["sample_sigmas"]
    return schedule.cfg_at(step_index(sample_sigmas.tolist(), float(sigma.flatten()[0])))


def read_schedule(text: str, node: str) -> CfgSchedule:
    """``parse_cfg_schedule`` with an error that names the node and its input."""
    try:
        return parse_cfg_schedule(text)
    except ValueError as error:
        raise ValueError(f"{node}, input cfg_schedule: {error}") from None


def _log_run(schedule: CfgSchedule, sigmas: torch.Tensor) -> None:
    log.info("CFG schedule: %s", schedule.describe(len(sigmas) - 1))


def count_prediction(model_options: dict, cfg: float) -> None:
    """Tells the run's context whether the host runs the unconditional pass for this prediction: it drops it at
    cfg 1 unless a patch set ``disable_cfg1_optimization``."""
    run = current_run(model_options.get("transformer_options", {}))
    if run is not None:
        run.count_prediction(not (math.isclose(cfg, 1.0) and not model_options.get("disable_cfg1_optimization")))


def report_passes(model_options: dict, target: Optional[StatsTarget], schedule_text: str) -> None:
    """Reports the run's unconditional passes on the schedule node, under its schedule line."""
    run = current_run(model_options.get("transformer_options", {}))
    if run is not None and run.predictions:
        run.report(target, NodeStats(notes=(schedule_text, f"uncond pass on {run.uncond_passes} of "
                                                         f"{run.predictions} predictions")))


class ScheduledCFGGuider(comfy.samplers.CFGGuider):
    """The host's CFGGuider with the cfg of each step taken from a schedule."""

    def __init__(self, model_patcher, schedule: CfgSchedule, target: Optional[StatsTarget] = None):
        patched = model_patcher.clone()
        install_run_context(patched)
        super().__init__(patched)
        self.schedule = schedule
        self.target = target

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        _log_run(self.schedule, sigmas)
        return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def outer_sample(self, *args, **kwargs):
        """The host's outer sample, then the run's unconditional passes reported on the guider node."""
        try:
            return super().outer_sample(*args, **kwargs)
        finally:
            report_passes(self.model_options, self.target, self.schedule.describe())

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        self.cfg = scheduled_cfg(self.schedule, model_options, timestep)
        count_prediction(model_options, self.cfg)
        return super().predict_noise(x, timestep, model_options, seed)


def _applies_to(guider) -> bool:
    """True for guiders whose guidance is the host's single-cfg ``predict_noise`` (KSampler's CFGGuider)."""
    return type(guider).predict_noise is comfy.samplers.CFGGuider.predict_noise


def _outer_sample_wrapper(executor, *args, **kwargs):
    """Logs the run's schedule (which steps get the unconditional pass), or why it does not apply, and reports the
    passes the run made, inside the run's context."""
    return within_run(executor, lambda: _sample_on_schedule(executor, *args, **kwargs))


def _sample_on_schedule(executor, *args, **kwargs):
    guider = executor.class_obj
    if not _applies_to(guider):
        log.warning("CFG Schedule: guider %s computes its own guidance; schedule not applied (for "
                    "SamplerCustomAdvanced use the CFG Schedule Guider node)", type(guider).__name__)
        return executor(*args, **kwargs)
    transformer_options = guider.model_options["transformer_options"]
    schedule = transformer_options[SCHEDULE_KEY]
    _log_run(schedule, args[3])
    try:
        return executor(*args, **kwargs)
    finally:
        report_passes(guider.model_options, transformer_options.get(TARGET_KEY),
                      f"{schedule.describe()} (overrides the sampler's cfg)")


def _predict_noise_wrapper(executor, x, timestep, model_options={}, seed=None):
    """Sets the guider's cfg for this step, lets the host predict, restores the sampler's cfg."""
    guider = executor.class_obj
    if not _applies_to(guider):
        return executor(x, timestep, model_options, seed)
    sampler_cfg = guider.cfg
    guider.cfg = scheduled_cfg(model_options["transformer_options"][SCHEDULE_KEY], model_options, timestep)
    count_prediction(model_options, guider.cfg)
    try:
        return executor(x, timestep, model_options, seed)
    finally:
        guider.cfg = sampler_cfg


def _schedule_input() -> io.String.Input:
    return io.String.Input("cfg_schedule", default=DEFAULT_SCHEDULE, tooltip=f"Per-step cfg: {FORMAT_HELP}.")


class CFGScheduleGuider(io.ComfyNode):
    """GUIDER for SamplerCustomAdvanced whose cfg changes per step; cfg-1 steps skip the unconditional pass."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelCFGScheduleGuider",
            display_name="CFG Schedule Guider",
            category="wan-accel/sampling",
            description="Like the core CFGGuider, but the cfg follows a per-step schedule, e.g. '3.0:2,1.0' = 3.0 "
                        "for the first 2 steps, then 1.0. Steps at cfg 1 run only the conditional pass (the "
                        "host's cfg-1 optimisation), so they cost one DiT forward.",
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                _schedule_input(),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model: io.Model.Type, positive, negative, cfg_schedule: str) -> io.NodeOutput:
        schedule = read_schedule(cfg_schedule, "CFG Schedule Guider")
        guider = ScheduledCFGGuider(model, schedule, current_target("WanAccelCFGScheduleGuider"))
        guider.set_conds(positive, negative)
        text = schedule.describe()
        report_node_stats("WanAccelCFGScheduleGuider", NodeStats(notes=(text,)))
        return io.NodeOutput(guider, ui=ui.PreviewText(text))


class CFGSchedule(io.ComfyNode):
    """MODEL patch for the plain KSampler: the cfg follows a per-step schedule instead of the sampler's cfg."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelCFGSchedule",
            display_name="CFG Schedule",
            category="wan-accel/sampling",
            description="Replaces the sampler's cfg with a per-step schedule, e.g. '3.0:2,1.0' = 3.0 for the first "
                        "2 steps, then 1.0 (the KSampler's cfg value is ignored). Steps at cfg 1 run only the "
                        "conditional pass (the host's cfg-1 optimisation), so they cost one DiT forward.",
            inputs=[io.Model.Input("model"), _schedule_input()],
            outputs=[io.Model.Output(tooltip="The model whose sampler cfg follows the schedule.")],
        )

    @classmethod
    def execute(cls, model: io.Model.Type, cfg_schedule: str) -> io.NodeOutput:
        schedule = read_schedule(cfg_schedule, "CFG Schedule")
        patched = model.clone()
        patched.model_options["transformer_options"][SCHEDULE_KEY] = schedule
        patched.model_options["transformer_options"][TARGET_KEY] = current_target("WanAccelCFGSchedule")
        install_run_context(patched)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                     _outer_sample_wrapper)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, WRAPPER_KEY,
                                     _predict_noise_wrapper)
        text = f"{schedule.describe()} (overrides the sampler's cfg)"
        report_node_stats("WanAccelCFGSchedule", NodeStats(notes=(text,)))
        return io.NodeOutput(patched, ui=ui.PreviewText(text))
