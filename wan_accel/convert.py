"""Converts a Wan DiT safetensors checkpoint (Wan 2.1 I2V 14B, a Wan 2.2 I2V A14B expert) to GGUF with bounded memory.

Usage: ``python -m wan_accel.convert in.safetensors out.gguf --type Q6_K [--force]``
Exit status: 0 written, 2 refused or failed (one line says why and the fix), 130 interrupted (Ctrl-C).

Tensors are read, quantised and written one at a time, so memory stays near the largest tensor.
The output is written to ``out.gguf.part`` and renamed when complete; the 5-D ``patch_embedding``
is stored as 2-D with its true shape in ``comfy.gguf.orig_shape.*`` metadata, which both our loader
and ComfyUI-GGUF read.

Wan 2.2 policy: each I2V A14B expert (high noise, low noise) is converted on its own, one file per expert, with the
same per-tensor types as Wan 2.1 (:mod:`wan_accel.gguf_policy`). Its layout has no CLIP-vision branch
(no ``img_emb.*``, no ``cross_attn.k_img/v_img/norm_k_img``): nothing is added or synthesised, the file holds exactly
the source's tensors, and ``wan_accel.model_family`` records ``wan2.2-i2v-a14b`` (``wan2.1`` for Wan 2.1). The host
then builds it as Wan 2.1 T2V with ``in_dim`` 36, as it does the released files. Refused, naming the file: the Wan
2.2 TI2V 5B (48-channel latents, see :mod:`wan_accel_kernels.wan_layout`), and fp8_scaled checkpoints (their fp8
weights need per-tensor scales; converting the raw fp8 values would silently rescale every layer): convert the
fp16/bf16 file instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm
from wan_accel_kernels.gguf import quantize
from wan_accel_kernels.gguf.reader import ORIG_SHAPE_KEY
from wan_accel_kernels.wan_layout import WanLayout, unsupported_reason, wan_layout

from .gguf_policy import choose_type

ARCHITECTURE = "wan"
GGML_QUANTIZATION_VERSION = 2
SOURCE_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
TARGET_TYPES = ("Q6_K", "Q8_0", "F16", "BF16", "F32")
SCALED_FP8_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
SCALED_FP8_MARKER = "scaled_fp8"
FAMILY_OF_VARIANT = {"wan2.2-i2v-a14b": "wan2.2-i2v-a14b"}
"""``wan_accel.model_family`` of a variant; every other supported layout stays ``wan2.1``."""


class ConversionError(RuntimeError):
    """The input cannot be converted; the message names the file and the fix."""


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output: its source key, output name, logical shape and ggml type."""

    source_key: str
    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """GGUF holds at most 4 dims: higher-rank tensors are stored as [shape[0], rest]."""
        if len(self.shape) <= 4:
            return self.shape
        return (self.shape[0], int(np.prod(self.shape[1:])))

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """``stored_shape`` with the last dim in bytes, as the GGUF writer takes raw blocks."""
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        return (*self.stored_shape[:-1], self.stored_shape[-1] // block_size * type_size)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.byte_shape))


def _strip_prefix(key: str) -> str:
    for prefix in SOURCE_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _unreadable(source: Path, exc: Exception) -> ConversionError:
    """The error for a source that is not a complete safetensors file (text, truncated download, other format)."""
    reason = str(exc).replace("Error while deserializing header: ", "")
    return ConversionError(f"{source}: not a readable .safetensors file ({reason}); pass a Wan 2.1 DiT "
                           f".safetensors checkpoint, and download it again if the download was cut short")


def plan_conversion(source: Path, target: gguf.GGMLQuantizationType) -> list[PlannedTensor]:
    """Reads only the header of ``source``, refuses the layouts stated in the module docstring, and decides every
    tensor's output type."""
    plan = []
    try:
        with safe_open(source, framework="pt") as handle:
            for key in handle.keys():
                name = _strip_prefix(key)
                tensor_slice = handle.get_slice(key)
                shape = tuple(tensor_slice.get_shape())
                _refuse_integer(source, key, tensor_slice.get_dtype())
                dtype = _safetensors_dtype(tensor_slice.get_dtype())
                plan.append(PlannedTensor(key, name, shape, choose_type(name, shape, dtype, target)))
    except (SafetensorError, OSError) as exc:
        raise _unreadable(source, exc) from None
    names = {planned.name for planned in plan}
    if "head.modulation" not in names or "patch_embedding.weight" not in names:
        raise ConversionError(f"{source.name} is not a Wan 2.1 DiT checkpoint (no head.modulation / "
                              "patch_embedding.weight); pass the diffusion model file, e.g. "
                              "wan2.1_i2v_480p_14B_bf16.safetensors or wan2.2_i2v_high_noise_14B_fp16.safetensors")
    _refuse_scaled_fp8(source, names)
    refusal = unsupported_reason(source.name, plan_layout(plan), tool="wan-accel")
    if refusal:
        raise ConversionError(refusal)
    return plan


def plan_layout(plan: list[PlannedTensor]) -> WanLayout | None:
    """The Wan variant of the planned tensors (:func:`wan_accel_kernels.wan_layout.wan_layout`)."""
    return wan_layout({planned.name: planned.shape for planned in plan})


def _refuse_scaled_fp8(source: Path, names: set[str]) -> None:
    """An fp8_scaled checkpoint stores each weight as fp8 times a per-tensor scale; its raw fp8 values are not the
    weights, so it is refused rather than converted into a silently rescaled model."""
    scaled = sorted(name for name in names if name == SCALED_FP8_MARKER or name.endswith(SCALED_FP8_SUFFIXES))
    if scaled:
        raise ConversionError(f"{source.name} is an fp8_scaled checkpoint ({scaled[0]} and {len(scaled) - 1} more "
                              f"scale tensors): its fp8 weights need their scales, which GGUF does not keep; convert "
                              f"the fp16 or bf16 file of the same model instead (e.g. "
                              f"wan2.2_i2v_high_noise_14B_fp16.safetensors)")


INTEGER_DTYPES = ("BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64")


def _safetensors_dtype(name: str) -> torch.dtype:
    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}.get(name, torch.float32)


def _refuse_integer(source: Path, key: str, dtype: str) -> None:
    """Every Wan DiT weight is a float: an integer dtype means a relabelled or foreign tensor, whose integers would be
    quantised as if they were weights (a silently broken model), so it is refused rather than converted."""
    if dtype in INTEGER_DTYPES:
        raise ConversionError(f"{source.name}: tensor {key} is {dtype}, but every Wan 2.1 DiT weight is a float "
                              f"(F32, F16, BF16); the file is mislabelled or not a Wan DiT: re-save it with float "
                              f"dtypes or download it again")


def _encode(tensor: torch.Tensor, planned: PlannedTensor) -> np.ndarray:
    """Raw ggml bytes of one tensor, shaped [rows of stored_shape..., bytes per row]."""
    blocks = quantize(tensor.reshape(planned.stored_shape).float(), planned.qtype)
    return blocks.reshape(planned.byte_shape).numpy()


def _write_metadata(writer: gguf.GGUFWriter, plan: list[PlannedTensor], source: Path,
                    target: gguf.GGMLQuantizationType) -> None:
    writer.add_quantization_version(GGML_QUANTIZATION_VERSION)
    writer.add_name(source.stem)
    layout = plan_layout(plan)
    writer.add_string("wan_accel.model_family", FAMILY_OF_VARIANT.get(layout.variant if layout else "", "wan2.1"))
    writer.add_string("wan_accel.target_type", target.name)
    for planned in plan:
        if planned.stored_shape != planned.shape:
            writer.add_array(ORIG_SHAPE_KEY + planned.name, list(planned.shape))


def convert(source: str | os.PathLike, destination: str | os.PathLike, target: str = "Q6_K",
            force: bool = False, progress: bool = True) -> Path:
    """Converts ``source`` to ``destination``; returns the written path."""
    source, destination = Path(source), Path(destination)
    if target not in TARGET_TYPES:
        raise ConversionError(f"--type {target} is not supported; choose one of {', '.join(TARGET_TYPES)}")
    if not source.is_file():
        raise ConversionError(f"{source}: file not found")
    check_destination(source, destination, force)
    qtype = gguf.GGMLQuantizationType[target]
    plan = plan_conversion(source, qtype)
    partial = destination.with_name(destination.name + ".part")
    try:
        writer = gguf.GGUFWriter(partial, ARCHITECTURE)
    except OSError as exc:
        raise ConversionError(f"cannot write {partial} ({exc.strerror or exc}); choose a folder you can write "
                              f"to") from None
    try:
        _write_metadata(writer, plan, source, qtype)
        for planned in plan:
            writer.add_tensor_info(planned.name, planned.byte_shape, np.dtype(np.uint8), planned.nbytes,
                                   raw_dtype=planned.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with safe_open(source, framework="pt") as handle:
            for planned in tqdm(plan, desc=f"{source.name} -> {target}", unit="tensor", disable=not progress):
                writer.write_tensor_data(_encode(handle.get_tensor(planned.source_key), planned))
        writer.close()
        os.replace(partial, destination)
    except SafetensorError as exc:
        raise _unreadable(source, exc) from None
    except OSError as exc:   # a full disk (ENOSPC), a quota, a folder gone meanwhile
        raise ConversionError(f"cannot write {destination} ({exc.strerror or exc}); free space on its disk or "
                              f"choose another folder, then convert again") from None
    finally:   # also on Ctrl-C: never leave a .part behind
        try:
            writer.close()
        except OSError:
            pass
        partial.unlink(missing_ok=True)
    return destination


def check_destination(source: Path, destination: Path, force: bool) -> None:
    """Refuses, before any work, a destination that cannot or must not be written: a missing folder, a folder,
    anything but a regular file (a device node, a pipe) even with ``force``, and the source itself (also through a
    link), even with ``force``."""
    folder = destination.parent
    if not folder.is_dir():
        raise ConversionError(f"the folder {folder} of {destination.name} does not exist; create it (mkdir -p "
                              f"{folder}) or choose another destination")
    if destination.is_dir():
        raise ConversionError(f"{destination} is a folder; give a file path, e.g. {destination / 'model-Q6_K.gguf'}")
    if not (destination.exists() or destination.is_symlink()):
        return
    if destination.exists() and os.path.samefile(source, destination):
        raise ConversionError(f"{destination} is the source checkpoint itself; give another output path "
                              f"(--force never overwrites the source)")
    if not destination.is_file() or destination.is_symlink():
        raise ConversionError(f"{destination} exists and is not a regular file (a device, pipe, socket or link); "
                              f"give another output path (--force replaces only regular files)")
    if not force:
        raise ConversionError(f"{destination} exists; pass --force to overwrite it")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wan_accel.convert", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="Wan 2.1 I2V or Wan 2.2 I2V A14B expert DiT checkpoint (.safetensors)")
    parser.add_argument("destination", help="output .gguf path")
    parser.add_argument("--type", default="Q6_K", choices=TARGET_TYPES, help="type of the large weights")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)
    try:
        written = convert(args.source, args.destination, args.type, force=args.force)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {args.destination} was not written and no .part is left; run the same command to "
              f"convert again", file=sys.stderr)
        return 130
    print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
