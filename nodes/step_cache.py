"""Nodes "TeaCache (Wan)" and "MagCache (Wan)": skip DiT forwards on a model clone through the host's wrappers.

``OUTER_SAMPLE`` starts a fresh ``StepCacheRun`` for every sampling run (so nothing survives from one run to
the next, whatever the cfg) and reports its statistics into the run's context (:mod:`nodes.run_context`); ``DIFFUSION_MODEL`` wraps the Wan model's
``_forward`` and either runs it or returns the input plus the cached output delta (see
``wan_accel_kernels/step_cache/runtime.py`` for why the delta). The calibration node shares the wrapper key, so the
last of these nodes on a model wins. Under "Wan 2.2 Expert Sampler" each expert's steps are their own sampling run,
so each expert starts from an empty cache and computes its first step; a profile calibrated on one expert is refused
on the other.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import comfy.patcher_extension
import folder_paths
import torch
from comfy.ldm.wan.model import sinusoidal_embedding_1d
from comfy_api.latest import io, ui

from ..wan_accel_kernels.step_cache import (
    INDICATOR_MODULATION,
    MAGCACHE_RATIOS,
    TEACACHE_COEFFICIENTS,
    MagCachePolicy,
    StepCacheProfile,
    StepCacheRun,
    StepGate,
    TeaCachePolicy,
    load_profile,
    step_index,
)
from ..wan_accel_kernels.step_cache.runtime import SkipPolicy
from .input_checks import first_problem, float_problem
from .model_files import ModelFileInput
from .run_context import current_expert, current_run, install_run_context, within_run
from .stats import NodeStats, StatsTarget, current_target, expert_label, seconds_per_step

log = logging.getLogger("wan_accel")

WRAPPER_KEY = "wan_accel_step_cache"
CONFIG_KEY = "wan_accel_step_cache"       # transformer_options: the node's StepCacheConfig
RUN_KEY = "wan_accel_step_cache_run"      # transformer_options: the current run's StepCacheRun
PROFILE_FOLDER = "wan_accel_step_cache"   # models/wan_accel_step_cache/*.json
NO_PROFILE = "none"
CACHE_DEVICES = ("compute", "offload")
PROFILE_FILE = ModelFileInput("profile", PROFILE_FOLDER, frozenset({".json"}))


def register_profile_folder() -> None:
    """Adds models/wan_accel_step_cache to the host's model folders (the pack's entry point calls it)."""
    folder_paths.add_model_folder_path(PROFILE_FOLDER, os.path.join(folder_paths.models_dir, PROFILE_FOLDER))


@dataclass(frozen=True)
class StepCacheConfig:
    """What a cache node attached to its model clone: the policy, where residuals live, who to report to."""

    policy: SkipPolicy
    offload: bool
    profile_steps: int | None = None
    stats_target: StatsTarget | None = None
    profile_expert: str | None = None
    profile_name: str | None = None


def list_profiles() -> list[str]:
    """"none" followed by the calibration profiles in models/wan_accel_step_cache."""
    return [NO_PROFILE, *PROFILE_FILE.options()]


def profile_path(name: str) -> Path:
    """Where the calibration profile ``name`` lives (or will be written)."""
    return Path(folder_paths.get_folder_paths(PROFILE_FOLDER)[0]) / name


def read_profile(name: str) -> StepCacheProfile:
    """The calibration profile ``name`` of models/wan_accel_step_cache."""
    return load_profile(PROFILE_FILE.resolve(name))


def require_wan(model: io.Model.Type, node: str) -> torch.nn.Module:
    """The Wan DiT inside ``model``; the error says what to connect instead."""
    diffusion_model = model.get_model_object("diffusion_model")
    if not all(hasattr(diffusion_model, a) for a in ("time_embedding", "time_projection", "freq_dim")):
        raise ValueError(f"{node} needs a Wan 2.1 model, got {type(diffusion_model).__name__}; "
                         f"connect the MODEL output of a Wan 2.1 loader")
    return diffusion_model


def wan_timestep_indicator(diffusion_model: torch.nn.Module, timestep: torch.Tensor, dtype: torch.dtype,
                           kind: str) -> torch.Tensor:
    """TeaCache's indicator for ``timestep``: the model's own time embedding, or its 6-way modulation ("ret")."""
    with torch.no_grad():
        sinusoid = sinusoidal_embedding_1d(diffusion_model.freq_dim, timestep.flatten()).to(dtype)
        embedding = diffusion_model.time_embedding(sinusoid)
        return diffusion_model.time_projection(embedding) if kind == INDICATOR_MODULATION else embedding


def wrapper_transformer_options(args: tuple, kwargs: dict) -> dict:
    """The transformer_options a DIFFUSION_MODEL wrapper received (last positional argument or keyword)."""
    if args and isinstance(args[-1], dict):
        return args[-1]
    return kwargs.get("transformer_options") or {}


def _outer_sample_wrapper(executor, *args, **kwargs):
    """Gives this sampling run a fresh cache and reports what it did when the run ends, inside the run's context."""
    return within_run(executor, lambda: _sample_with_cache(executor, *args, **kwargs))


def _sample_with_cache(executor, *args, **kwargs):
    guider = executor.class_obj
    transformer_options = guider.model_options["transformer_options"]
    config: StepCacheConfig = transformer_options[CONFIG_KEY]
    sigmas = args[3]
    total_steps = len(sigmas) - 1
    expert = current_expert(transformer_options)
    check_profile_expert(config, expert.name if expert is not None else None)
    if config.profile_steps is not None and config.profile_steps != total_steps:
        log.warning("%s: the profile was calibrated at %d steps, this run has %d; its values are resampled. "
                    "Calibrate at %d steps for exact values.", config.policy.name, config.profile_steps, total_steps,
                    total_steps)
    storage = comfy.model_management.unet_offload_device() if config.offload else None
    run = StepCacheRun(config.policy, storage_device=storage)
    transformer_options[RUN_KEY] = run
    started = time.perf_counter()
    try:
        return executor(*args, **kwargs)
    finally:
        transformer_options.pop(RUN_KEY, None)
        stats = run.stats
        log.info("%s%s", f"{expert_label(expert.name)}: " if expert is not None else "", stats.summary())
        context = current_run(transformer_options)
        if context is not None:
            context.report(config.stats_target, NodeStats(
                cache_policy=stats.policy, steps_computed=stats.steps_computed, steps_skipped=stats.steps_skipped,
                seconds_per_step=seconds_per_step(time.perf_counter() - started, sigmas),
                notes=(f"DiT forwards: {stats.forwards_computed} run, {stats.forwards_skipped} reused",)))


def check_profile_expert(config: StepCacheConfig, expert: str | None) -> None:
    """Refuses a profile calibrated on one Wan 2.2 expert in a run of the other; warns when the run's expert is not
    known (a model no Expert Sampler runs), since the check then cannot be made."""
    if config.profile_expert is None or config.profile_expert == expert:
        return
    made_on = expert_label(config.profile_expert)
    if expert is None:
        log.warning("%s: profile %s was calibrated on the %s; this model is not run by 'Wan 2.2 Expert Sampler', so "
                    "wan-accel cannot check that it is that expert", config.policy.name, config.profile_name, made_on)
        return
    raise ValueError(f"{config.policy.name}: profile {config.profile_name} was calibrated on the "
                     f"{made_on} and cannot be used on the {expert_label(expert)}, whose steps and residuals differ; "
                     f"pick a profile calibrated on the {expert_label(expert)} (Step Cache Calibrate on that model)")


def _diffusion_model_wrapper(executor, *args, **kwargs):
    """Runs the Wan DiT forward, or serves it from the run's cache when the policy allows."""
    transformer_options = wrapper_transformer_options(args, kwargs)
    run: StepCacheRun | None = transformer_options.get(RUN_KEY)
    sample_sigmas = transformer_options.get("sample_sigmas")
    if run is None or sample_sigmas is None:
        return executor(*args, **kwargs)
    x, timestep = args[0], args[1]
    step = step_index(sample_sigmas.tolist(), float(transformer_options["sigmas"][0]))
    streams = list(zip(transformer_options["cond_or_uncond"], transformer_options["uuids"]))
    indicator = None
    if run.policy.needs_indicator:
        def indicator() -> torch.Tensor:
            return wan_timestep_indicator(executor.class_obj, timestep, x.dtype, run.policy.indicator)
    return run.forward(x, streams, step, len(sample_sigmas) - 1, lambda: executor(*args, **kwargs), indicator)


def attach_step_cache(model: io.Model.Type, config: StepCacheConfig) -> io.Model.Type:
    """A clone of ``model`` whose sampling runs use ``config``; replaces any earlier cache or calibration."""
    patched = model.clone()
    if patched.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY):
        log.info("%s replaces an earlier wan-accel step cache/calibration on this model", config.policy.name)
    for kind in (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
        patched.remove_wrappers_with_key(kind, WRAPPER_KEY)
    patched.model_options["transformer_options"][CONFIG_KEY] = config
    install_run_context(patched)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 _diffusion_model_wrapper)
    return patched


def _profile_input() -> io.Combo.Input:
    return io.Combo.Input("profile", options=list_profiles(), default=NO_PROFILE,
                          tooltip="Calibration profile from 'Step Cache Calibrate' (models/wan_accel_step_cache). "
                                  "Measured on your model, steps, shift and resolution, it replaces the published "
                                  "table, which was fitted on 40-50 steps and rarely skips at 8.")


def _cache_device_input() -> io.Combo.Input:
    return io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="compute",
                          tooltip="compute: keep the cached residual on the GPU; offload: keep it in CPU memory "
                                  "(latent-sized, ~8 MB per stream at 832x480x81) and copy it back on a skip.")


def validate_profile(profile: str | None) -> bool | str:
    """``validate_inputs`` answer for the ``profile`` input: "none" or a listed profile."""
    return True if profile == NO_PROFILE else PROFILE_FILE.validate(profile)


def profile_fingerprint(profile: object) -> str:
    """``fingerprint_inputs`` answer: the profile's name and the SHA-256 of its bytes, so the host reruns a cache
    node (and everything after it) when the file changes under an unchanged name, instead of reusing its output."""
    if profile == NO_PROFILE or PROFILE_FILE.problem(profile) is not None:
        return str(profile)  # validate_inputs refuses an unlisted name before anything runs
    try:
        data = Path(PROFILE_FILE.resolve(profile)).read_bytes()
    except OSError as error:
        return f"{profile}: {error}"
    return f"{profile}: sha256 {hashlib.sha256(data).hexdigest()}"


def _describe_gate(gate: StepGate) -> str:
    return (f"first {gate.first_steps}/last {gate.last_steps} steps computed, <= {gate.max_consecutive_skips} "
            f"skips in a row, window {gate.start_percent:g}-{gate.end_percent:g}")


class WanTeaCache(io.ComfyNode):
    """TeaCache for Wan 2.1 as host wrappers: per-run state, non-negative rescaled distance, forced first/last steps."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelTeaCache",
            display_name="TeaCache (Wan)",
            category="wan-accel/speed",
            description="Skips DiT forwards while the accumulated rescaled change of the timestep embedding since "
                        "the last computed step stays below rel_l1_thresh; a skipped forward returns its input "
                        "plus the cached output delta. State starts fresh every sampling run and on any shape "
                        "change. Steps computed/skipped are logged and shown on this node after each run.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 model (t2v or i2v)."),
                io.Combo.Input("model_type", options=list(TEACACHE_COEFFICIENTS), default="wan2.1_i2v_480p_14B",
                               tooltip="Published coefficient set; '_ret_mode' uses the modulation as indicator. "
                                       "With a profile only the indicator choice is taken from here."),
                _profile_input(),
                io.Float.Input("rel_l1_thresh", default=0.3, min=0.0, max=10.0, step=0.01,
                               tooltip="Skip while the accumulated estimated relative change stays below this; "
                                       "0 never skips."),
                io.Int.Input("first_steps", default=1, min=0, max=100, tooltip="Steps at the start always computed."),
                io.Int.Input("last_steps", default=1, min=0, max=100, tooltip="Steps at the end always computed."),
                io.Int.Input("max_consecutive_skips", default=3, min=0, max=100,
                             tooltip="Never skip more than this many steps in a row (0 never skips)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps before which nothing is skipped."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps after which nothing is skipped."),
                _cache_device_input(),
            ],
            outputs=[io.Model.Output(tooltip="The model with TeaCache.")],
        )

    @classmethod
    def fingerprint_inputs(cls, profile: str | None = None, **_: object) -> str:
        """Changes when the chosen profile file changes, so a recalibrated profile is used at once."""
        return profile_fingerprint(profile)

    @classmethod
    def validate_inputs(cls, profile: str | None = None, rel_l1_thresh: float | None = None,
                        start_percent: float | None = None, end_percent: float | None = None) -> bool | str:
        """Refuses, at queue time, an unlisted profile and a NaN, infinite or out-of-range float."""
        return first_problem(validate_profile(profile), float_problem(cls.define_schema(), {
            "rel_l1_thresh": rel_l1_thresh, "start_percent": start_percent, "end_percent": end_percent}))

    @classmethod
    def execute(cls, model: io.Model.Type, model_type: str, profile: str, rel_l1_thresh: float, first_steps: int,
                last_steps: int, max_consecutive_skips: int, start_percent: float, end_percent: float,
                cache_device: str) -> io.NodeOutput:
        require_wan(model, "TeaCache (Wan)")
        gate = StepGate(first_steps, last_steps, start_percent, end_percent, max_consecutive_skips)
        policy = TeaCachePolicy.published(model_type, rel_l1_thresh, gate)
        source, profile_steps, profile_expert = f"published {model_type}", None, None
        if profile != NO_PROFILE:
            calibrated = read_profile(profile)
            fit = calibrated.teacache[policy.indicator]
            policy = TeaCachePolicy(tuple(fit.coefficients), rel_l1_thresh, gate, policy.indicator,
                                    (fit.distance_range[0], fit.distance_range[1]))
            source = f"profile {profile} ({policy.indicator}, fit rel. RMSE {fit.relative_rmse:.3f})"
            profile_steps, profile_expert = calibrated.steps, calibrated.expert
        config = StepCacheConfig(policy, cache_device == "offload", profile_steps,
                                 current_target("WanAccelTeaCache"), profile_expert, profile)
        text = (f"TeaCache: {source}, threshold {rel_l1_thresh:g}, {_describe_gate(gate)}, "
                f"residual on {cache_device} device")
        log.info("%s", text)
        return io.NodeOutput(attach_step_cache(model, config), ui=ui.PreviewText(text))


class WanMagCache(io.ComfyNode):
    """MagCache for Wan 2.1 as host wrappers: magnitude-ratio drift with threshold, K and retention ratio."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelMagCache",
            display_name="MagCache (Wan)",
            category="wan-accel/speed",
            description="Skips DiT forwards while the accumulated drift |1 - product of magnitude ratios| since the "
                        "last computed step stays below magcache_thresh, at most magcache_K in a row; a skipped "
                        "forward returns its input plus the cached output delta. State starts fresh every "
                        "sampling run and on any shape change. Steps computed/skipped are logged and shown on "
                        "this node after each run.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 model (t2v or i2v)."),
                io.Combo.Input("model_type", options=list(MAGCACHE_RATIOS), default="wan2.1_i2v_480p_14B",
                               tooltip="Published ratio table (ignored when a profile is chosen). It was measured "
                                       "on the block residual at 40-50 steps and is resampled to your step count."),
                _profile_input(),
                io.Float.Input("magcache_thresh", default=0.24, min=0.0, max=10.0, step=0.01,
                               tooltip="Skip while the accumulated magnitude drift stays below this; 0 never skips."),
                io.Int.Input("magcache_K", default=2, min=0, max=100,
                             tooltip="Most steps skipped in a row (0 never skips)."),
                io.Float.Input("retention_ratio", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps at the start always computed."),
                io.Int.Input("last_steps", default=1, min=0, max=100, tooltip="Steps at the end always computed."),
                _cache_device_input(),
            ],
            outputs=[io.Model.Output(tooltip="The model with MagCache.")],
        )

    @classmethod
    def fingerprint_inputs(cls, profile: str | None = None, **_: object) -> str:
        """Changes when the chosen profile file changes, so a recalibrated profile is used at once."""
        return profile_fingerprint(profile)

    @classmethod
    def validate_inputs(cls, profile: str | None = None, magcache_thresh: float | None = None,
                        retention_ratio: float | None = None) -> bool | str:
        """Refuses, at queue time, an unlisted profile and a NaN, infinite or out-of-range float."""
        return first_problem(validate_profile(profile), float_problem(cls.define_schema(), {
            "magcache_thresh": magcache_thresh, "retention_ratio": retention_ratio}))

    @classmethod
    def execute(cls, model: io.Model.Type, model_type: str, profile: str, magcache_thresh: float, magcache_K: int,
                retention_ratio: float, last_steps: int, cache_device: str) -> io.NodeOutput:
        require_wan(model, "MagCache (Wan)")
        gate = StepGate(first_steps=1, last_steps=last_steps, max_consecutive_skips=magcache_K)
        policy = MagCachePolicy.published(model_type, magcache_thresh, retention_ratio, gate)
        source, profile_steps, profile_expert = f"published {model_type}", None, None
        if profile != NO_PROFILE:
            calibrated = read_profile(profile)
            policy = MagCachePolicy(calibrated.mag_ratios(0), calibrated.mag_ratios(1), magcache_thresh,
                                    retention_ratio, gate)
            source, profile_steps = f"profile {profile} ({calibrated.steps} steps)", calibrated.steps
            profile_expert = calibrated.expert
        config = StepCacheConfig(policy, cache_device == "offload", profile_steps,
                                 current_target("WanAccelMagCache"), profile_expert, profile)
        text = (f"MagCache: {source}, threshold {magcache_thresh:g}, K {magcache_K}, retention {retention_ratio:g}, "
                f"last {last_steps} steps computed, residual on {cache_device} device")
        log.info("%s", text)
        return io.NodeOutput(attach_step_cache(model, config), ui=ui.PreviewText(text))
