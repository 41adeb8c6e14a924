"""Reads a text-encoder safetensors header and decides whether it is Wan's umt5-xxl, without loading weights.

Gives the encoder shape the host should build (from the tensors actually in the file, umt5-xxl defaults for
what is absent), the Linear weights the fp8 loader will quantise, and errors that name the file and what it
holds when it is something else (a DiT, CLIP, T5 v1.1, a LoRA, ...) or lacks its tokenizer.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

UMT5_XXL = {"num_layers": 24, "d_model": 4096, "d_ff": 10240, "num_heads": 64, "d_kv": 64, "vocab_size": 256384}
"""umt5-xxl's shape (the host's umt5_config_xxl.json); what Wan 2.1 was trained with."""
WAN_TEXT_WIDTH = 4096
TOKENIZER_KEY = "spiece_model"
LINEAR_WEIGHT = re.compile(r"^encoder\.block\.(\d+)\.layer\.(?:0\.SelfAttention\.[qkvo]|1\.DenseReluDense\.(?:wi_0|wi_1|wo))"
                           r"\.weight$")
BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
RELATIVE_BIAS = "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"

FAMILIES = (
    (("head.modulation", "patch_embedding.weight", "model.diffusion_model."), "a diffusion model (DiT)"),
    (("lora_up.weight", "lora_down.weight", "lora_A.weight", "lora_B.weight"), "a LoRA"),
    (("text_model.encoder.layers.",), "a CLIP text encoder"),
    (("vision_model.", "visual.", "clip_vision"), "a CLIP vision model"),
    (("decoder.conv_in", "decoder.middle", "encoder.conv1", "decoder.head"), "a VAE"),
    (("model.layers.0.",), "a decoder-only LLM text encoder (Llama/Qwen/Gemma)"),
)


class TextEncoderFileError(ValueError):
    """The file is not a umt5-xxl text encoder this loader can use; the message says what it is instead."""


@dataclass(frozen=True)
class UMT5File:
    """What a umt5 safetensors file holds: shape to build, Linear weights, dtypes, sizes."""

    path: Path
    config: dict[str, int]
    linear_weights: tuple[str, ...]
    linear_dtypes: dict[str, int]
    linear_parameters: int
    other_parameters: int
    scaled_fp8: bool
    tensor_count: int

    @property
    def weight_dtype(self) -> str:
        """safetensors dtype name of most Linear weights ("BF16", "F16", "F32", "F8_E4M3", ...)."""
        return max(self.linear_dtypes, key=self.linear_dtypes.get) if self.linear_dtypes else "none"

    @property
    def sixteen_bit(self) -> str:
        """The 16-bit dtype for embeddings, norms and biases: the file's own if 16-bit, else bf16."""
        return self.weight_dtype if self.weight_dtype in ("F16", "BF16") else "BF16"


def _describe(keys: list[str]) -> str:
    sample = ", ".join(repr(k) for k in keys[:3])
    for markers, family in FAMILIES:
        if any(marker in key for key in keys for marker in markers):
            return f"{family} ({len(keys)} tensors, e.g. {sample})"
    return f"{len(keys)} tensors, e.g. {sample}" if keys else "no tensors"


def _shape_config(shapes: dict[str, list[int]], name: str) -> dict[str, int]:
    blocks = {int(m.group(1)) for key in shapes if (m := BLOCK.match(key))}
    config = dict(UMT5_XXL, num_layers=max(blocks) + 1)
    for key, shape in shapes.items():
        if key.endswith("layer_norm.weight"):
            config["d_model"] = shape[0]
        elif key.endswith(("DenseReluDense.wi_0.weight", "DenseReluDense.wi_1.weight")):
            config["d_ff"], config["d_model"] = shape
        elif key.endswith("relative_attention_bias.weight"):
            config["num_heads"] = shape[1]
    if "shared.weight" in shapes:
        config["vocab_size"] = shapes["shared.weight"][0]
    inner = next((shape[0] for key, shape in shapes.items() if key.endswith("SelfAttention.q.weight")), None)
    if inner is not None:
        config["d_kv"] = inner // config["num_heads"]
    if config["d_model"] != WAN_TEXT_WIDTH:
        raise TextEncoderFileError(
            f"{name} is a T5-family encoder of width {config['d_model']}; Wan 2.1 needs umt5-xxl (width "
            f"{WAN_TEXT_WIDTH}): use umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    return config


def _check_umt5(shapes: dict[str, list[int]], name: str) -> None:
    if not any(BLOCK.match(key) for key in shapes):
        raise TextEncoderFileError(
            f"{name} is not a umt5/T5 text encoder: it holds {_describe(sorted(shapes))}. Put Wan's umt5-xxl "
            "(umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors) in models/text_encoders")
    blocks = sorted({int(m.group(1)) for key in shapes if (m := BLOCK.match(key))})
    per_layer_bias = any(RELATIVE_BIAS.format(i) in shapes for i in blocks if i > 0)
    vocab = shapes.get("shared.weight", [UMT5_XXL["vocab_size"]])[0]
    if vocab == 32128 or (RELATIVE_BIAS.format(0) in shapes and len(blocks) > 1 and not per_layer_bias):
        raise TextEncoderFileError(
            f"{name} is a T5 v1.1 encoder (vocabulary {vocab}, relative attention bias in block 0 only: the "
            "Flux/SD3 t5xxl), not umt5-xxl; Wan 2.1 needs umt5_xxl_fp16.safetensors or "
            "umt5_xxl_fp8_e4m3fn_scaled.safetensors")


def _tokenizer_pieces(handle, name: str) -> int:
    if TOKENIZER_KEY not in handle.keys():
        raise TextEncoderFileError(
            f"{name} has no tokenizer: the '{TOKENIZER_KEY}' tensor (umt5's SentencePiece model) is missing. "
            "Use a file that embeds it, e.g. Comfy-Org's umt5_xxl_fp16.safetensors or "
            "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    import sentencepiece  # a host dependency; only needed once a file is being checked

    proto = handle.get_tensor(TOKENIZER_KEY).numpy().tobytes()
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()
    except Exception as error:  # sentencepiece raises RuntimeError/OSError variants for a bad proto
        raise TextEncoderFileError(f"{name}: its '{TOKENIZER_KEY}' tensor is not a valid SentencePiece model "
                                   f"({error}); the file is damaged, download it again") from error


def inspect_umt5_file(path: str | Path) -> UMT5File:
    """Header facts of a umt5-xxl safetensors file; raises :class:`TextEncoderFileError` for anything else."""
    path = Path(path)
    try:
        handle_context = safe_open(str(path), framework="pt")
    except Exception as error:  # safetensors raises SafetensorError or OSError for a bad file
        raise TextEncoderFileError(f"{path.name} could not be read as safetensors ({error}); this loader takes "
                                   ".safetensors text encoders such as umt5_xxl_fp16.safetensors") from error
    with handle_context as handle:
        shapes, dtypes = {}, {}
        for key in handle.keys():
            view = handle.get_slice(key)
            shapes[key], dtypes[key] = list(view.get_shape()), view.get_dtype()
        _check_umt5(shapes, path.name)
        config = _shape_config(shapes, path.name)
        pieces = _tokenizer_pieces(handle, path.name)
    if pieces > config["vocab_size"]:
        raise TextEncoderFileError(f"{path.name}: its tokenizer has {pieces} pieces but the embedding table only "
                                   f"{config['vocab_size']} rows; tokenizer and weights do not belong together")
    linear = tuple(sorted(key for key in shapes if LINEAR_WEIGHT.match(key)))
    numel = {key: _numel(shape) for key, shape in shapes.items() if key != TOKENIZER_KEY}
    linear_parameters = sum(numel[key] for key in linear)
    return UMT5File(path=path, config=config, linear_weights=linear,
                    linear_dtypes=dict(Counter(dtypes[key] for key in linear)),
                    linear_parameters=linear_parameters,
                    other_parameters=sum(numel.values()) - linear_parameters - _scale_parameters(numel),
                    scaled_fp8="scaled_fp8" in shapes, tensor_count=len(shapes))


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _scale_parameters(numel: dict[str, int]) -> int:
    return sum(n for key, n in numel.items() if key.endswith((".scale_weight", ".scale_input")) or key == "scaled_fp8")
