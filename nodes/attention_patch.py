"""Node "Patch Attention": routes a model's attention to SageAttention, or to the host's own attention, through the
host's attention override."""
from __future__ import annotations

import functools
import logging
from typing import Optional

import comfy.patcher_extension
import torch
from comfy_api.latest import io, ui

from ..wan_accel_kernels.attention import AUTO, BACKENDS, SAGE, SDPA, AttentionOverride, Decision, SageInstall, probe_sage
from .run_context import current_run, install_run_context, within_run
from .stats import NodeStats, StatsTarget, current_target, report_node_stats

NODE_ID = "WanAccelPatchAttention"
OVERRIDE_KEY = "optimized_attention_override"
WRAPPER_KEY = "wan_accel.attention"

logger = logging.getLogger("wan_accel")


def attention_override_of(model_options: dict) -> Optional[AttentionOverride]:
    """Our override in a model's (or a sampling run's) ``model_options``, None if another one or none is set."""
    override = model_options.get("transformer_options", {}).get(OVERRIDE_KEY)
    return override if isinstance(override, AttentionOverride) else None


def run_stats(override: AttentionOverride) -> NodeStats:
    """The node's stats after a run: calls per route, and fallbacks (SDPA calls of a sage backend, NaN recomputes)
    with the reason of each."""
    stats = override.stats
    fallbacks = stats.guard.recomputed + (stats.routes[SDPA] if override.backend != SDPA else 0)
    reasons = tuple(f"fallback x{count}: {reason}" for reason, count in sorted(stats.fallback_reasons.items()))
    return NodeStats(attention_backend=override.backend, attention_fallbacks=fallbacks,
                     notes=(stats.describe(), *reasons))


def count_attention_run(target: Optional[StatsTarget], executor: comfy.patcher_extension.WrapperExecutor,
                        *args, **kwargs):
    """OUTER_SAMPLE wrapper (``target`` bound): zeroes the override's counts as a sampling run starts, logs them
    and reports them into the run's context when it ends."""
    return within_run(executor, lambda: _count_in_run(target, executor, *args, **kwargs))


def _count_in_run(target: Optional[StatsTarget], executor: comfy.patcher_extension.WrapperExecutor, *args, **kwargs):
    options = executor.class_obj.model_options
    override = attention_override_of(options)
    if override is None:
        return executor(*args, **kwargs)
    override.begin_run()
    try:
        return executor(*args, **kwargs)
    finally:
        logger.info("Patch Attention (%s) run: %s", override.backend, override.stats.describe())
        context = current_run(options.get("transformer_options", {}))
        if context is not None:
            context.report(target, run_stats(override))


def attention_head_dim(model) -> Optional[int]:
    """head_dim of the diffusion model's attention (Wan: dim / num_heads = 128), None if it does not say."""
    diffusion_model = model.get_model_object("diffusion_model")
    dim, heads = getattr(diffusion_model, "dim", None), getattr(diffusion_model, "num_heads", None)
    return dim // heads if isinstance(dim, int) and isinstance(heads, int) and heads > 0 else None


def compute_dtype(model) -> torch.dtype:
    """dtype the diffusion model computes (and calls attention) in: the manual-cast dtype if any."""
    return model.model.manual_cast_dtype or model.model_dtype()


class PatchAttention(io.ComfyNode):
    """Runs Wan's attention on SageAttention (8-bit Q/K) where it is safe, the host's own attention everywhere else."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Patch Attention",
            category="wan-accel/patches",
            description="Routes the model's attention through the host's own attention override (on a clone; "
                        "no global patching). auto picks the SageAttention kernel for this GPU (sm80, sm86, sm89, "
                        "sm90) among those the installed sageattention offers. Falls back to the host's own "
                        "attention (PyTorch SDPA unless ComfyUI was started with another backend), and "
                        "says why, without CUDA or sageattention, for fp32 inputs, head_dim > 128, a mask, or a "
                        "layout the kernel does not take, and wherever the host asks for full precision "
                        "(low_precision_attention=False: Wan's image cross-attention). Works under "
                        "TorchCompileModel: sage calls run eagerly between compiled graphs.",
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("backend", options=list(BACKENDS), default=AUTO,
                               tooltip="auto: best sage kernel for this GPU, else sdpa. sageattn_*: that kernel "
                                       "where it can run, else sdpa. sdpa: the host's own attention everywhere."),
                io.Boolean.Input("nan_guard", default=True,
                                 tooltip="Recompute a sage output that has a NaN/Inf with the host's attention "
                                         "(one finiteness check per call) and count how often that happened."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, backend: str, nan_guard: bool) -> io.NodeOutput:
        sage = SageInstall(None) if backend == SDPA else probe_sage()
        override = AttentionOverride(backend, sage, nan_guard)
        patched = model.clone()
        transformer_options = patched.model_options.setdefault("transformer_options", {})
        replaced = transformer_options.get(OVERRIDE_KEY)
        if replaced is not None and not isinstance(replaced, AttentionOverride):
            logger.warning("Patch Attention replaces an attention override set before it (%r)", replaced)
        transformer_options[OVERRIDE_KEY] = override
        patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
        install_run_context(patched)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                     functools.partial(count_attention_run, current_target(NODE_ID)))
        head_dim = attention_head_dim(patched)
        decision = None if head_dim is None else override.expected_decision(patched.load_device,
                                                                             compute_dtype(patched), head_dim)
        text = cls.summary(override, patched, decision, replaced is not None)
        fell_back = decision is not None and decision.backend == SDPA and backend != SDPA
        report_node_stats(NODE_ID, NodeStats(attention_backend=backend, notes=(text,),
                                             warnings=(decision.reason,) if fell_back else ()))
        return io.NodeOutput(patched, ui=ui.PreviewText(text))

    @classmethod
    def summary(cls, override: AttentionOverride, model, decision: Optional[Decision], replaced: bool) -> str:
        """One line: the decision for the model's usual attention call, sageattention's state, the guard."""
        parts = []
        if decision is None:
            parts.append(f"{override.backend}: decided per call (model does not state its head_dim)")
        else:
            dtype = str(compute_dtype(model)).replace("torch.", "")
            where = f"{model.load_device.type} {dtype} head_dim {attention_head_dim(model)}"
            parts.append(f"{override.backend} -> {decision.describe()} for {where}")
            if decision.backend == SAGE:
                parts.append("sage calls run outside torch.compile graphs")
        if override.backend != SDPA:
            parts.append(override.sage.describe())
        parts.append(f"NaN guard {'on' if override.nan_guard else 'off'}")
        if replaced:
            parts.append("replaced an earlier attention override")
        return "Patch Attention: " + "; ".join(parts)
