"""One sampling run's context: what our patches really did during the run, published once when it ends.

:func:`within_run` opens the context for a sampling run: it gives the guider its own copy of ``model_options``
(the host's ``create_model_options_clone``, restored in ``finally``) with a fresh :class:`RunContext` in its
``transformer_options``, or joins the one an outer wrapper opened. Every OUTER_SAMPLE wrapper of ours that reports
runs its work through it, so the host's order of wrappers does not matter; :func:`install_run_context` adds a plain
one for models whose only reports come from inside the run. Our wrappers find the context with :func:`current_run`
and report into it (step cache, attention, cfg schedule); the GGUF layers add each dequantisation to its
:class:`~wan_accel_kernels.gguf.path_record.DequantRecord`, which the GGUF loader's badge then shows. Nothing learnt in a
run outlives it, and the run's reports go out through :mod:`nodes.stats` once, at the end. A Wan 2.2 expert's clone
carries an :class:`ExpertRun` (set by the Expert Sampler): its run's reports are labelled with the expert and also
collected there, so the sampler shows each expert's steps.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Optional, TypeVar

import comfy.model_patcher
import comfy.patcher_extension

from ..wan_accel_kernels.gguf.path_record import DequantRecord, recording
from .stats import NodeStats, StatsTarget, report_run_stats

log = logging.getLogger("wan_accel")
T = TypeVar("T")

RUN_KEY = "wan_accel_run"                 # transformer_options of a run: its RunContext
EXPERT_KEY = "wan_accel_expert"           # transformer_options of a Wan 2.2 expert's clone: its ExpertRun
WRAPPER_KEY = "wan_accel.run_context"
DEQUANT_TARGET_KEY = "wan_accel_dequant_target"  # transformer_options: the GGUF loader node the dequant path shows on


@dataclass
class ExpertRun:
    """The Wan 2.2 expert a sampling run belongs to (set by the Expert Sampler on its clone of each expert) and the
    reports of that run, which the sampler shows per expert."""

    name: str
    reports: list[tuple[StatsTarget, NodeStats]] = field(default_factory=list)


def current_expert(transformer_options: dict) -> Optional[ExpertRun]:
    """The expert these ``transformer_options`` run as, None for a model no Expert Sampler tagged."""
    expert = transformer_options.get(EXPERT_KEY)
    return expert if isinstance(expert, ExpertRun) else None


@dataclass
class RunContext:
    """What one sampling run learnt: each node's report, the GGUF dequantisations, the guidance passes."""

    dequant: DequantRecord = field(default_factory=DequantRecord)
    reports: dict[str, tuple[StatsTarget, NodeStats]] = field(default_factory=dict)
    predictions: int = 0
    uncond_passes: int = 0
    expert: Optional[ExpertRun] = None

    def report(self, target: Optional[StatsTarget], stats: NodeStats) -> None:
        """Adds ``stats`` to what ``target`` (a node's :func:`~nodes.stats.current_target`) reports at the end;
        fields set by an earlier report of the run stay unless this one sets them. No target: not reported."""
        if target is None:
            return
        earlier = self.reports.get(target.node_id)
        if earlier is not None and earlier[0].node_type == target.node_type:
            stats = stats.merged_onto(earlier[1])
        self.reports[target.node_id] = (target, stats)

    def count_prediction(self, uncond_ran: bool) -> None:
        """One guided prediction of the run, and whether it ran the unconditional pass."""
        self.predictions += 1
        self.uncond_passes += int(uncond_ran)

    def publish(self, dequant_target: Optional[StatsTarget]) -> None:
        """Sends every report of the run, with the observed dequant path on ``dequant_target``."""
        path = self.dequant.describe()
        if path is not None:
            log.info("wan-accel run: %s; %s", self.dequant.summary(), path)
            self.report(dequant_target, NodeStats(dequant_path=path))
        for target, stats in self.reports.values():
            if self.expert is not None:
                stats = dataclasses.replace(stats, expert=self.expert.name)
                self.expert.reports.append((target, stats))
            report_run_stats(target, stats)


def current_run(transformer_options: dict) -> Optional[RunContext]:
    """The run context of the sampling run these ``transformer_options`` belong to, None outside one."""
    run = transformer_options.get(RUN_KEY)
    return run if isinstance(run, RunContext) else None


def install_run_context(patcher) -> None:
    """Makes ``patcher`` (a clone the caller owns) open a run context for every sampling run. Where its wrapper sits
    among the OUTER_SAMPLE wrappers does not matter: ours open or join the context themselves (:func:`within_run`)."""
    kind = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    if not patcher.get_wrappers(kind, WRAPPER_KEY):
        patcher.add_wrapper_with_key(kind, WRAPPER_KEY, _outer_sample_wrapper)


def within_run(executor: comfy.patcher_extension.WrapperExecutor, work: Callable[[], T]) -> T:
    """Runs ``work`` (an OUTER_SAMPLE wrapper's part of the run) inside the run's context: the one an outer wrapper
    opened, else a fresh one, given to the guider's own copy of its options and published when ``work`` ends."""
    guider = executor.class_obj
    options = guider.model_options
    if current_run(options.get("transformer_options", {})) is not None:
        return work()
    guider.model_options = comfy.model_patcher.create_model_options_clone(options)
    transformer_options = guider.model_options.setdefault("transformer_options", {})
    run = RunContext(expert=current_expert(transformer_options))
    transformer_options[RUN_KEY] = run
    try:
        with recording(run.dequant):
            return work()
    finally:
        guider.model_options = options
        run.publish(transformer_options.get(DEQUANT_TARGET_KEY))


def _outer_sample_wrapper(executor, *args, **kwargs):
    """Runs the sampling inside a run context (:func:`within_run`)."""
    return within_run(executor, lambda: executor(*args, **kwargs))
