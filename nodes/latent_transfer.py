"""Nodes "Export Latent" and "Import Latent": the two ends of a split of the host's two chained KSamplerAdvanced
(Wan 2.2's experts) across two servers, at their switch. One KSampler splits through :mod:`nodes.split_sampler`.

Stage A ends in Export Latent: the latent its KSamplerAdvanced returned with leftover noise after ``split_step``
steps is written as a checksummed payload (``wan_accel_kernels/latent_payload.py``) into the output folder and
reported as a UI file the client downloads. The client uploads it into stage B's input folder, where Import Latent
reads it back, refusing a corrupted payload or one of another run (shape, seed, steps, split step), before stage
B's KSamplerAdvanced finishes the schedule without adding noise.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..wan_accel_kernels.latent_payload import PayloadError, RunKey, decode_payload, encode_payload
from .payload_files import (payload_fingerprint, payload_path, payload_problem, prefix_input, save_payload,
                            transfer_input)

EXPORT = "Export Latent"
IMPORT = "Import Latent"
DEFAULT_PREFIX = "wan_accel/split/latent"
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _run_inputs() -> list[io.Input]:
    """The inputs that tie a payload to its run, shared by both nodes (the client sets them from the samplers)."""
    return [
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, tooltip="The samplers' noise seed."),
        io.Int.Input("steps", default=8, min=1, max=10000, tooltip="Total steps of the schedule, both stages."),
        io.Int.Input("split_step", default=4, min=1, max=10000,
                     tooltip="First step of stage B (stage A ran steps 0..split_step-1)."),
    ]


class ExportLatent(io.ComfyNode):
    """Ends stage A: writes the leftover-noise latent as a payload file the client carries to stage B."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelExportLatent",
            display_name="Export Latent (split run)",
            category="wan-accel/split",
            description="Saves the latent a KSamplerAdvanced returned with leftover noise (stage A of a run split "
                        "across two servers) as a checksummed payload in the output folder: fp32 (lossless), bf16, "
                        "or int8 with a scale per block of 64 values or per channel. The header records shape, "
                        "seed, steps and split step so stage B's Import Latent refuses a payload of another run.",
            inputs=[
                io.Latent.Input("samples", tooltip="Stage A's KSamplerAdvanced output (return_with_leftover_noise)."),
                transfer_input(),
                *_run_inputs(),
                prefix_input(DEFAULT_PREFIX),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, samples, transfer: str, seed: int, steps: int, split_step: int,
                filename_prefix: str) -> io.NodeOutput:
        if samples.get("noise_mask") is not None:
            raise ValueError(f"{EXPORT}: the latent has a noise mask (inpainting), "
                             "which a split run does not carry; run this workflow on one server")
        try:
            payload = encode_payload(samples["samples"], transfer, seed, steps, split_step)
        except PayloadError as exc:
            raise ValueError(f"{EXPORT}: {exc}") from None
        file_name, files = save_payload(payload, filename_prefix)
        shape = list(samples["samples"].shape)
        text = (f"exported latent {shape} after step {split_step} of {steps} as {transfer}: {len(payload)} bytes "
                f"({file_name})")
        return io.NodeOutput(ui={**files, "text": [text]})


class ImportLatent(io.ComfyNode):
    """Starts stage B: the leftover-noise latent of stage A, read from an uploaded payload and checked."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelImportLatent",
            display_name="Import Latent (split run)",
            category="wan-accel/split",
            description="Reads the payload stage A's Export Latent wrote (uploaded into this server's input folder) "
                        "and returns its latent for a KSamplerAdvanced that starts at split_step without adding "
                        "noise. Refuses a corrupted payload (checksum) and one whose shape, seed, steps or split "
                        "step differ from this run's, naming each.",
            inputs=[
                io.String.Input("payload", default="",
                                tooltip="File name in the input folder, e.g. wan_accel/latent_00001_.wlat."),
                io.Latent.Input("like", tooltip="This run's own latent (e.g. WanImageToVideo's): the payload must "
                                                "have its shape."),
                *_run_inputs(),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, payload: str | None = None) -> bool | str:
        """Refuses, at queue time, a payload name that is missing or outside the input folder."""
        return payload_problem(payload, IMPORT, f"stage A's {EXPORT}")

    @classmethod
    def fingerprint_inputs(cls, payload: str, **_) -> str:
        """The payload's own hash: a new file under the same name runs the node again."""
        return payload_fingerprint(payload, IMPORT)

    @classmethod
    def execute(cls, payload: str, like, seed: int, steps: int, split_step: int) -> io.NodeOutput:
        expected = RunKey(tuple(like["samples"].shape), seed, steps, split_step)
        try:
            latent = decode_payload(payload_path(payload, IMPORT).read_bytes(), expected, source=f"payload {payload}")
        except PayloadError as exc:
            raise ValueError(f"{IMPORT}: {exc}") from None
        return io.NodeOutput({"samples": latent})
