"""Nodes "Split Sampler (stage A)" and "Split Sampler (stage B)": one KSampler's schedule split across two servers.

Both run the host's own ``nodes.common_ksampler`` over the whole schedule on a clone carrying a ``PREDICT_NOISE``
wrapper (:mod:`nodes.split_history`). Stage A computes the steps before ``split_step`` and writes every denoised
prediction it made as a checksummed history payload (``wan_accel_kernels/latent_payload.py``) into the output folder,
reported as a UI file the client downloads. Stage B reads that payload from its input folder, replays the
predictions (the sampler reaches the split with stage A's exact state, its multistep history included) and computes
the rest: with fp32 transfer its latent equals one KSampler over the whole schedule, bit for bit.
"""
from __future__ import annotations

import comfy.patcher_extension
import comfy.samplers
import nodes as host_nodes
from comfy_api.latest import io

from ..wan_accel_kernels.latent_payload import FORMATS, PayloadError, RunKey, decode_history, encode_history
from .payload_files import (payload_fingerprint, payload_path, payload_problem, prefix_input, save_payload,
                            transfer_input)
from .split_history import WRAPPER_KEY, HistoryRecorder, HistoryReplayer

DEFAULT_PREFIX = "wan_accel/split/history"
STAGE_A = "Split Sampler (stage A)"
STAGE_B = "Split Sampler (stage B)"
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _sampling_inputs() -> list[io.Input]:
    """KSampler's own inputs (denoise is always 1: a split covers the whole schedule) and the split step."""
    return [
        io.Model.Input("model"),
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True),
        io.Int.Input("steps", default=8, min=2, max=10000),
        io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01),
        io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="uni_pc"),
        io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="simple"),
        io.Conditioning.Input("positive"),
        io.Conditioning.Input("negative"),
        io.Latent.Input("latent_image"),
        io.Int.Input("split_step", default=4, min=1, max=10000,
                     tooltip="First step of stage B (stage A computes steps 0..split_step-1)."),
    ]


def run_key(latent_image: dict, seed: int, steps: int, split_step: int, sampler_name: str, scheduler: str,
            cfg: float) -> RunKey:
    """What ties a history payload to its run; the sampling names what the sigmas alone would not catch."""
    return RunKey(tuple(latent_image["samples"].shape), seed, steps, split_step,
                  f"{sampler_name} {scheduler} cfg {cfg:g}")


def _checked_split(node: str, steps: int, split_step: int) -> None:
    if not 1 <= split_step < steps:
        raise ValueError(f"{node}: split_step {split_step} must be 1 to {steps - 1} for {steps} steps (stage A "
                         f"computes steps 0..split_step-1, stage B the rest)")


def _sample(model, wrapper, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive,
            negative, latent_image: dict) -> dict:
    """The host's KSampler over the whole schedule on a clone of ``model`` wrapped by ``wrapper``."""
    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, WRAPPER_KEY, wrapper)
    return host_nodes.common_ksampler(clone, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                      latent_image, denoise=1.0)[0]


class SplitSamplerStageA(io.ComfyNode):
    """Ends stage A: the steps before the split, their predictions written as a payload for stage B."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelSplitSamplerA",
            display_name="Split Sampler (stage A)",
            category="wan-accel/split",
            description="Runs the host's KSampler on the steps before split_step and saves every denoised "
                        "prediction it made (with its sigma) as a checksummed payload in the output folder, for "
                        "Split Sampler (stage B) on another server. fp32 is lossless; bf16 halves the bytes; int8 "
                        "quarters them (a scale per 64 values, or per channel).",
            inputs=[
                *_sampling_inputs(),
                transfer_input(),
                prefix_input(DEFAULT_PREFIX),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive,
                negative, latent_image, split_step: int, transfer: str, filename_prefix: str) -> io.NodeOutput:
        _checked_split(STAGE_A, steps, split_step)
        if transfer not in FORMATS:
            raise ValueError(f"{STAGE_A}: transfer {transfer!r} is unknown; use {', '.join(FORMATS)}")
        recorder = HistoryRecorder(split_step)
        _sample(model, recorder, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image)
        try:
            payload = encode_history(recorder.outputs, recorder.sigmas, transfer,
                                     run_key(latent_image, seed, steps, split_step, sampler_name, scheduler, cfg))
        except PayloadError as exc:
            raise ValueError(f"{STAGE_A}: {exc}") from None
        file_name, files = save_payload(payload, filename_prefix)
        text = (f"exported {len(recorder.outputs)} prediction(s) {list(recorder.outputs[0].shape)} before step "
                f"{split_step} of {steps} as {transfer}: {len(payload)} bytes ({file_name})")
        return io.NodeOutput(ui={**files, "text": [text]})


class SplitSamplerStageB(io.ComfyNode):
    """Starts stage B: replays stage A's predictions from the payload, then samples the rest of the schedule."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelSplitSamplerB",
            display_name="Split Sampler (stage B)",
            category="wan-accel/split",
            description="Runs the host's KSampler over the whole schedule, answering the steps before split_step "
                        "from the payload Split Sampler (stage A) wrote (uploaded into this server's input folder) "
                        "and computing the rest. Same settings as stage A give the unsplit KSampler's latent (bit "
                        "for bit with fp32 transfer). Refuses a corrupted payload and one of another run, naming "
                        "each field.",
            inputs=[
                *_sampling_inputs(),
                io.String.Input("payload", default="",
                                tooltip="File name in the input folder, e.g. wan_accel/history_00001_.wlat."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, payload: str | None = None) -> bool | str:
        """Refuses, at queue time, a payload name that is missing or outside the input folder."""
        return payload_problem(payload, STAGE_B, STAGE_A)

    @classmethod
    def fingerprint_inputs(cls, payload: str, **_) -> str:
        """The payload's own hash: a new file under the same name runs the node again."""
        return payload_fingerprint(payload, STAGE_B)

    @classmethod
    def execute(cls, model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive,
                negative, latent_image, split_step: int, payload: str) -> io.NodeOutput:
        _checked_split(STAGE_B, steps, split_step)
        source = f"payload {payload}"
        expected = run_key(latent_image, seed, steps, split_step, sampler_name, scheduler, cfg)
        try:
            history = decode_history(payload_path(payload, STAGE_B).read_bytes(), expected, source=source)
        except PayloadError as exc:
            raise ValueError(f"{STAGE_B}: {exc}") from None
        replayer = HistoryReplayer(history.outputs, history.sigmas, split_step, f"{STAGE_B}: {source}")
        latent = _sample(model, replayer, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                         latent_image)
        replayer.check_all_replayed()
        return io.NodeOutput(latent)
