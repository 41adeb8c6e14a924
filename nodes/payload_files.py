"""Where the split nodes' payload files live: written into the output folder (stage A), read from the input folder
(stage B), with the inputs both writers take, and the queue-time check and cache fingerprint both readers share."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import folder_paths
from comfy_api.latest import io

from ..wan_accel_kernels.latent_payload import FORMATS

PAYLOAD_SUFFIX = ".wlat"


def transfer_input() -> io.Input:
    """The transfer format a payload writer takes."""
    return io.Combo.Input("transfer", options=list(FORMATS), default="fp32",
                          tooltip="fp32: 4 bytes a value, bit-exact; bf16: 2; int8: about 1 (a float32 scale per 64 "
                                  "values); int8-channel: 1 (a scale per channel).")


def prefix_input(default_prefix: str) -> io.Input:
    """Where in the output folder a payload writer writes."""
    return io.String.Input("filename_prefix", default=default_prefix,
                           tooltip="Where in the output folder the payload is written.")


def payload_path(name: str, node: str) -> Path:
    """The file a payload name (relative to the input folder, as an upload returns it) points to; a ``ValueError``
    naming ``node`` when it leaves the input folder."""
    root = Path(folder_paths.get_input_directory()).resolve()
    path = (root / name).resolve()
    if os.path.commonpath((root, path)) != str(root):
        raise ValueError(f"{node}: payload {name!r} is outside the input folder; give the name the upload "
                         f"returned, e.g. wan_accel/latent_00001_{PAYLOAD_SUFFIX}")
    return path


def payload_problem(name: str | None, node: str, writer: str) -> bool | str:
    """True, or why ``name`` cannot be read (missing, or outside the input folder): a node's queue-time check."""
    if name is None:
        return True
    try:
        path = payload_path(name, node)
    except ValueError as exc:
        return str(exc)
    if not path.is_file():
        return f"{node}: payload {name!r} is not in the input folder; upload the file {writer} wrote"
    return True


def payload_fingerprint(name: str, node: str) -> str:
    """The payload's own hash, so a new file under the same name runs the node again."""
    try:
        return hashlib.sha256(payload_path(name, node).read_bytes()).hexdigest()
    except (OSError, ValueError):
        return name


def save_payload(payload: bytes, filename_prefix: str) -> tuple[str, dict[str, Any]]:
    """Writes ``payload`` under ``filename_prefix`` in the output folder, never over an earlier file; returns its
    file name and the UI entry the client downloads it by."""
    output_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
    file_name = f"{name}_{counter:05}_{PAYLOAD_SUFFIX}"
    Path(folder, file_name).write_bytes(payload)
    return file_name, {"latents": [{"filename": file_name, "subfolder": subfolder, "type": "output"}]}
