"""A CLIP-vision ViT-H/14 file (the host's ``clip_vision_h``) that costs no disk: the big matrices are sparse zeros.

The host always builds ViT-H at full size (632 M parameters, 1.26 GB in fp16). This writer lays out a complete
safetensors file in the key layout ``comfy.clip_vision.load`` detects as ViT-H, but writes only the small tensors
(patch and position embeddings, class token, every norm and bias, the visual projection: random); the 192 big
attention and MLP matrices are left as holes in a sparse file, which read back as zeros. Every weight the host
loads is therefore defined (no uninitialised memory), the image still reaches the output through the patch
embedding and the residual stream, and writing the file takes milliseconds. One encode on a 2-core CPU runs the
full-size matmuls (about 0.3 TFLOP).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

HIDDEN, MLP, LAYERS, POSITIONS, PATCH, PROJECTION = 1280, 5120, 32, 257, 14, 1024


def _layout() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (HIDDEN,),
        "vision_model.embeddings.patch_embedding.weight": (HIDDEN, 3, PATCH, PATCH),
        "vision_model.embeddings.position_embedding.weight": (POSITIONS, HIDDEN),
        "vision_model.pre_layrnorm.weight": (HIDDEN,),
        "vision_model.pre_layrnorm.bias": (HIDDEN,),
    }
    for i in range(LAYERS):
        layer = f"vision_model.encoder.layers.{i}"
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}.{norm}.weight"] = (HIDDEN,)
            shapes[f"{layer}.{norm}.bias"] = (HIDDEN,)
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}.self_attn.{projection}.weight"] = (HIDDEN, HIDDEN)
            shapes[f"{layer}.self_attn.{projection}.bias"] = (HIDDEN,)
        shapes[f"{layer}.mlp.fc1.weight"] = (MLP, HIDDEN)
        shapes[f"{layer}.mlp.fc1.bias"] = (MLP,)
        shapes[f"{layer}.mlp.fc2.weight"] = (HIDDEN, MLP)
        shapes[f"{layer}.mlp.fc2.bias"] = (HIDDEN,)
    shapes["vision_model.post_layernorm.weight"] = (HIDDEN,)
    shapes["vision_model.post_layernorm.bias"] = (HIDDEN,)
    shapes["visual_projection.weight"] = (PROJECTION, HIDDEN)
    return shapes


def _is_big(name: str) -> bool:
    return ".encoder.layers." in name and name.endswith(".weight") and ("_proj." in name or ".mlp." in name)


def _small_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if "norm" in name and name.endswith(".weight"):
        return 1.0 + 0.05 * torch.randn(shape, generator=generator)
    if name.endswith(".bias"):
        return 0.02 * torch.randn(shape, generator=generator)
    fan_in = shape[1] * (PATCH * PATCH if len(shape) == 4 else 1) if len(shape) > 1 else 1
    return torch.randn(shape, generator=generator) / fan_in ** 0.5


def write_clip_vision_h_stub(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the sparse fp16 ViT-H file described above; returns its path."""
    generator = torch.Generator().manual_seed(seed)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    small: list[tuple[int, bytes]] = []
    offset = 0
    for name, shape in _layout().items():
        nbytes = 2 * torch.Size(shape).numel()
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        if not _is_big(name):
            data = _small_tensor(name, shape, generator).to(torch.float16).contiguous()
            small.append((offset, data.view(torch.uint8).numpy().tobytes()))
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    start = 8 + len(encoded)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for position, data in small:
            handle.seek(start + position)
            handle.write(data)
        handle.truncate(start + offset)
    return path
