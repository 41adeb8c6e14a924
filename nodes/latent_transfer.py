"""Nodes "Export Latent" and "Import Latent": the two ends of a denoising run split across two servers.

Stage A ends in Export Latent: the latent its KSamplerAdvanced returned with leftover noise after ``split_step``
steps is written as a checksummed payload (``wan_accel_kernels/latent_payload.py``) into the output folder and
reported as a UI file the client downloads. The client uploads it into stage B's input folder, where Import Latent
reads it back, refusing a corrupted payload or one of another run (shape, seed, steps, split step), before stage
B's KSamplerAdvanced finishes the schedule without adding noise.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..wan_accel_kernels.latent_payload import FORMATS, PayloadError, RunKey, decode_payload, encode_payload

PAYLOAD_SUFFIX = ".wlat"
DEFAULT_PREFIX = "wan_accel/split/latent"
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def payload_path(name: str, node: str = "Import Latent") -> Path:
    """The file a payload name (relative to the input folder, as an upload returns it) points to; a ``ValueError``
    naming ``node`` when it leaves the input folder."""
    root = Path(folder_paths.get_input_directory()).resolve()
    path = (root / name).resolve()
    if os.path.commonpath((root, path)) != str(root):
        raise ValueError(f"{node}: payload {name!r} is outside the input folder; "
                         f"give the name the upload returned, e.g. wan_accel/latent_00001_{PAYLOAD_SUFFIX}")
    return path


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
                io.Combo.Input("transfer", options=list(FORMATS), default="fp32",
                               tooltip="fp32: 4 bytes a value, bit-exact; bf16: 2; int8: about 1 (a float32 scale "
                                       "per 64 values); int8-channel: 1 (a scale per channel)."),
                *_run_inputs(),
                io.String.Input("filename_prefix", default=DEFAULT_PREFIX,
                                tooltip="Where in the output folder the payload is written."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, samples, transfer: str, seed: int, steps: int, split_step: int,
                filename_prefix: str) -> io.NodeOutput:
        if samples.get("noise_mask") is not None:
            raise ValueError("Export Latent: the latent has a noise mask (inpainting), "
                             "which a split run does not carry; run this workflow on one server")
        try:
            payload = encode_payload(samples["samples"], transfer, seed, steps, split_step)
        except PayloadError as exc:
            raise ValueError(f"Export Latent: {exc}") from None
        output_dir = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
        file_name = f"{name}_{counter:05}_{PAYLOAD_SUFFIX}"
        Path(folder, file_name).write_bytes(payload)
        shape = list(samples["samples"].shape)
        text = (f"exported latent {shape} after step {split_step} of {steps} as {transfer}: {len(payload)} bytes "
                f"({file_name})")
        return io.NodeOutput(ui={"latents": [{"filename": file_name, "subfolder": subfolder, "type": "output"}],
                                 "text": [text]})


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
        if payload is None:
            return True
        try:
            path = payload_path(payload)
        except ValueError as exc:
            return str(exc)
        if not path.is_file():
            return (f"Import Latent: payload {payload!r} is not in the input folder; "
                    f"upload the file stage A's Export Latent wrote")
        return True

    @classmethod
    def fingerprint_inputs(cls, payload: str, **_) -> str:
        """The payload's own hash: a new file under the same name runs the node again."""
        try:
            return hashlib.sha256(payload_path(payload).read_bytes()).hexdigest()
        except (OSError, ValueError):
            return payload

    @classmethod
    def execute(cls, payload: str, like, seed: int, steps: int, split_step: int) -> io.NodeOutput:
        expected = RunKey(tuple(like["samples"].shape), seed, steps, split_step)
        try:
            latent = decode_payload(payload_path(payload).read_bytes(), expected, source=f"payload {payload}")
        except PayloadError as exc:
            raise ValueError(f"Import Latent: {exc}") from None
        return io.NodeOutput({"samples": latent})
