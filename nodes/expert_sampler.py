"""Node "Wan 2.2 Expert Sampler": the high-noise expert for the first steps, the low-noise expert for the rest.

It is the host's own two-``KSamplerAdvanced`` pattern in one node, run through the host's own
``nodes.common_ksampler``, so its latent is bit-identical to that graph with the same settings:

* high-noise expert: noise added, steps 0..k, the leftover noise returned;
* low-noise expert: no noise added, steps k..n, fully denoised.

The switch step k is given, or found from the boundary sigma Wan 2.2 uses (0.900 for I2V) on the scheduler's
sigmas, which the node shows with the switch marked. At k = 0 or k = n one expert runs the whole schedule as one
host sampler. Each expert is a separate sampling run on its own clone, tagged with its name
(:class:`nodes.run_context.ExpertRun`): step caches start empty for each, a profile of one expert is refused on the
other, and the badge shows the steps each expert computed and skipped.

Memory at the switch is the host's model management: ``common_ksampler`` loads the low-noise expert with
``load_models_gpu``, which unloads the high-noise one to host RAM when both do not fit (both stay resident when they
do), so every expert stays under the host's management, its "free memory" and its pinned offload.
"""
from __future__ import annotations

import logging
import time

import comfy.samplers
import nodes as host_nodes
from comfy_api.latest import io, ui

from ..wan_accel_kernels.expert_switch import (
    HIGH_NOISE,
    LOW_NOISE,
    WAN22_I2V_BOUNDARY,
    SwitchPlan,
    plan_switch,
)
from .input_checks import first_problem, float_problem
from .run_context import EXPERT_KEY, ExpertRun
from .stats import NodeStats, expert_label, report_node_stats

log = logging.getLogger("wan_accel")

SWITCH_AT_BOUNDARY = "boundary sigma"
SWITCH_AT_STEP = "step"
LAST_STEP = 10000  # KSamplerAdvanced's "end_at_step" default: to the end of the schedule


def schedule_sigmas(model, steps: int, sampler_name: str, scheduler: str) -> list[float]:
    """The sigmas the host's KSampler uses for ``model`` at ``steps`` (with its sampler-specific adjustments)."""
    sampler = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                      scheduler=scheduler, denoise=1.0, model_options=model.model_options)
    return [float(s) for s in sampler.sigmas]


def tagged(model, expert: str) -> tuple[object, ExpertRun]:
    """A clone of ``model`` whose sampling runs report as ``expert``, and the tag they report into."""
    run = ExpertRun(expert)
    clone = model.clone()
    clone.model_options["transformer_options"][EXPERT_KEY] = run
    return clone, run


def expert_step_counts(run: ExpertRun, steps: int) -> dict[str, int]:
    """Steps an expert ran, computed and skipped, from its step cache's report (all computed without one)."""
    cached = [stats for _, stats in run.reports if stats.steps_computed is not None]
    skipped = sum(stats.steps_skipped or 0 for stats in cached[-1:])
    return {"steps": steps, "computed": steps - skipped, "skipped": skipped}


def run_experts(high_model, low_model, plan: SwitchPlan, seed: int, cfg: tuple[float, float], sampler_name: str,
                scheduler: str, positive, negative, latent: dict) -> tuple[dict, dict[str, dict[str, int]], list[str]]:
    """The two host sampler calls of ``plan``; returns the latent, each expert's step counts and timing lines."""
    counts, timings = {}, []
    for expert, model, expert_cfg in ((HIGH_NOISE, high_model, cfg[0]), (LOW_NOISE, low_model, cfg[1])):
        expert_steps = plan.expert_steps()[expert]
        if expert_steps == 0:
            continue
        first = expert == HIGH_NOISE or plan.switch_step == 0
        clone, run = tagged(model, expert)
        started = time.perf_counter()
        latent = host_nodes.common_ksampler(
            clone, seed, plan.steps, expert_cfg, sampler_name, scheduler, positive, negative, latent,
            disable_noise=not first, start_step=0 if expert == HIGH_NOISE else plan.switch_step,
            last_step=plan.switch_step if expert == HIGH_NOISE else LAST_STEP,
            force_full_denoise=expert == LOW_NOISE)[0]
        counts[expert] = expert_step_counts(run, expert_steps)
        timings.append(f"{expert_label(expert)}: {expert_steps} steps in {time.perf_counter() - started:.2f} s"
                       f"{' (its load included)' if expert == LOW_NOISE and plan.switch_step else ''}")
    return latent, counts, timings


class WanExpertSampler(io.ComfyNode):
    """Wan 2.2 A14B sampling: two host samplers split at a step or at the boundary sigma, bit-identical to the
    host's own two-KSamplerAdvanced graph."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelExpertSampler",
            display_name="Wan 2.2 Expert Sampler",
            category="wan-accel/sampling",
            description="Runs the high-noise expert on the first steps and the low-noise expert on the rest, "
                        "switching at the boundary sigma (Wan 2.2 I2V: 0.900) or at a step; shows the scheduler's "
                        "sigmas with the switch marked. Same result as the host's two KSamplerAdvanced nodes "
                        "(high: add noise, steps 0..k, return with leftover noise; low: no noise, steps k..end). "
                        "Each expert's step cache starts empty and computes its first step.",
            inputs=[
                io.Model.Input("high_noise_model", tooltip="The high-noise expert (with its LoRA and shift)."),
                io.Model.Input("low_noise_model", tooltip="The low-noise expert (with its LoRA and shift)."),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image"),
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Int.Input("steps", default=4, min=1, max=10000),
                io.Float.Input("cfg_high", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="cfg of the high-noise expert's steps (1: no unconditional pass)."),
                io.Float.Input("cfg_low", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="cfg of the low-noise expert's steps (1: no unconditional pass)."),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler"),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="simple"),
                io.Combo.Input("switch_at", options=[SWITCH_AT_BOUNDARY, SWITCH_AT_STEP], default=SWITCH_AT_BOUNDARY,
                               tooltip="boundary sigma: the high-noise expert runs every step whose sigma is at or "
                                       "above 'boundary' (Wan 2.2's rule); step: it runs steps 0..switch_step-1."),
                io.Float.Input("boundary", default=WAN22_I2V_BOUNDARY, min=0.0, max=1.0, step=0.001, round=0.001,
                               tooltip="Wan 2.2: 0.900 for I2V A14B, 0.875 for T2V A14B."),
                io.Int.Input("switch_step", default=2, min=0, max=10000,
                             tooltip="First step of the low-noise expert when switch_at is 'step'."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, cfg_high: float | None = None, cfg_low: float | None = None,
                        boundary: float | None = None) -> bool | str:
        """Refuses, at queue time, a NaN, infinite or out-of-range float."""
        return first_problem(float_problem(cls.define_schema(), {
            "cfg_high": cfg_high, "cfg_low": cfg_low, "boundary": boundary}))

    @classmethod
    def execute(cls, high_noise_model: io.Model.Type, low_noise_model: io.Model.Type, positive, negative,
                latent_image, noise_seed: int, steps: int, cfg_high: float, cfg_low: float, sampler_name: str,
                scheduler: str, switch_at: str, boundary: float, switch_step: int) -> io.NodeOutput:
        sigmas = schedule_sigmas(high_noise_model, steps, sampler_name, scheduler)
        if switch_step > steps and switch_at == SWITCH_AT_STEP:
            raise ValueError(f"Wan 2.2 Expert Sampler: switch_step {switch_step} is past "
                             f"the last of {steps} steps; use 0..{steps}")
        plan = (plan_switch(sigmas, boundary=boundary) if switch_at == SWITCH_AT_BOUNDARY
                else plan_switch(sigmas, step=switch_step))
        low_sigmas = schedule_sigmas(low_noise_model, steps, sampler_name, scheduler)
        notes = [plan.describe()]
        if low_sigmas != sigmas:
            notes.append("the low-noise expert's own schedule differs (another shift?); it runs its sigmas "
                         f"{' '.join(f'{s:.3f}' for s in low_sigmas[plan.switch_step:])}")
        log.info("Wan 2.2 Expert Sampler: %s", "; ".join(notes))
        latent, counts, timings = run_experts(high_noise_model, low_noise_model, plan, noise_seed,
                                              (cfg_high, cfg_low), sampler_name, scheduler, positive, negative,
                                              latent_image)
        notes += timings
        report_node_stats("WanAccelExpertSampler", NodeStats(expert_steps=counts, notes=tuple(notes)))
        lines = notes + [f"{expert_label(e)}: {c['computed']} computed, {c['skipped']} skipped of {c['steps']}"
                         for e, c in counts.items()]
        return io.NodeOutput(latent, ui=ui.PreviewText("\n".join(lines)))
