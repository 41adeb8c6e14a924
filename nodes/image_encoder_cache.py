"""Nodes "CLIP Vision Encode (cached)" and "WanImageToVideo (cached)": exact on-disk caches of the image-side encodes.

A re-run with the same start image (new seed, new prompt, or a restarted server) reads the CLIP-vision output and
the VAE-encoded conditioning clip from disk instead of encoding again; the tensors are stored bit-exact, so the
outputs equal an uncached run. Keys: the image's bytes, the sizes and options, and the encoder's identity (the
CLIP-vision file's name, size, mtime and header hash; the VAE's weights digest), its dtype and device, and the
torch and host versions.
"""
from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfy.clip_vision
import comfy.model_management
import comfy.sd
import comfyui_version
import folder_paths
import nodes as host_nodes
import torch
from comfy_api.latest import io, ui
from comfy_extras.nodes_wan import WanImageToVideo

from ..wan_accel_kernels.encoder_cache import encoder_key, pack_fields, tensor_digest, unpack_fields, weights_digest
from ..wan_accel_kernels.prompt_cache import CorruptEntry, PromptCacheStore, file_identity
from .kept_model import KeptModel
from .model_files import ModelFileInput
from .stats import NodeStats, report_node_stats

log = logging.getLogger("wan_accel")
CACHE_LIMIT_BYTES = 1024 ** 3
CLIP_VISION_EXTENSIONS = {".safetensors"}  # no pickle: the host loads clip_vision files without safe_load
CLIP_VISION_FILE = ModelFileInput("clip_name", "clip_vision", frozenset(CLIP_VISION_EXTENSIONS))

_vae_digests: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_kept_clip_vision: KeptModel[comfy.clip_vision.ClipVisionModel] = KeptModel("CLIP-vision model", lambda m: m.patcher)


def encoder_cache_store() -> PromptCacheStore:
    """The store under the host's user directory (kept across restarts, unlike its temp directory), 1 GiB at most."""
    return PromptCacheStore(Path(folder_paths.get_user_directory()) / "wan_accel" / "encoder_cache", CACHE_LIMIT_BYTES)


def runtime_identity(device: torch.device) -> dict[str, str]:
    """What besides the weights changes an encoder's bits: device kind and model, torch and host versions."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": name, "torch": torch.__version__, "comfyui": comfyui_version.__version__}


def vae_identity(vae: comfy.sd.VAE) -> dict[str, str]:
    """The VAE's weights digest (computed once per VAE object), its dtype and the runtime."""
    if vae not in _vae_digests:
        _vae_digests[vae] = weights_digest(vae.first_stage_model.state_dict().items())
    return {"weights": _vae_digests[vae], "dtype": str(vae.vae_dtype), **runtime_identity(vae.device)}


def cached_encode(store: PromptCacheStore, key: str, encode: Callable[[], dict[str, torch.Tensor | None]],
                  device: torch.device | str) -> tuple[dict[str, torch.Tensor | None], bool]:
    """The fields stored under ``key`` (hit) or ``encode()``'s, then stored (miss); returns them and whether it hit."""
    entry = store.get(key)
    if entry is not None:
        try:
            return unpack_fields(entry.tensors, entry.metadata, device), True
        except CorruptEntry as error:
            store.discard(key, error)
    fields = encode()
    store.put(key, *pack_fields(fields))
    return fields, False


def _load_clip_vision_file(path: str) -> comfy.clip_vision.ClipVisionModel:
    model = comfy.clip_vision.load(path)
    if model is None:
        raise ValueError(f"clip_name {Path(path).name} holds no CLIP-vision model the host "
                         "recognises; put clip_vision_h.safetensors (or another CLIP-vision file) in "
                         "models/clip_vision")
    return model


def load_clip_vision(path: str, identity: str) -> comfy.clip_vision.ClipVisionModel:
    """The CLIP-vision model of ``path``, loaded on a miss and kept (one file at a time) for later misses while the
    host keeps it loaded (``nodes/kept_model.py``)."""
    return _kept_clip_vision.get(identity, lambda: _load_clip_vision_file(path))[0]


def encode_clip_vision_cached(store: PromptCacheStore, path: str, image: torch.Tensor, crop: str,
                              load: Callable[[str, str], Any] = load_clip_vision
                              ) -> tuple[comfy.clip_vision.Output, bool]:
    """CLIPVisionEncode's output for ``image`` with the model file ``path``, from ``store`` when there; ``load(path,
    identity)`` gives the model on a miss. Returns the output and whether it was a hit."""
    device = comfy.model_management.text_encoder_device()
    identity = {**file_identity(path), "dtype": str(comfy.model_management.text_encoder_dtype(device)),
                **runtime_identity(device)}
    key = encoder_key("clip_vision_output", {"image": tensor_digest(image), "crop": crop}, identity)

    def encode() -> dict[str, torch.Tensor | None]:
        model = load(path, json.dumps(identity, sort_keys=True))
        return dict(vars(model.encode_image(image, crop=crop == "center")))

    fields, hit = cached_encode(store, key, encode, comfy.model_management.intermediate_device())
    output = comfy.clip_vision.Output()
    for name, value in fields.items():
        output[name] = value
    return output, hit


def _hit_text(hit: bool) -> str:
    return "cache hit" if hit else "cache miss (encoded and stored)"


class CLIPVisionEncodeCached(io.ComfyNode):
    """CLIPVisionEncode with an exact disk cache; on a hit the CLIP-vision file is not even loaded."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelCLIPVisionEncodeCached",
            display_name="CLIP Vision Encode (cached)",
            category="wan-accel/conditioning",
            description="Encodes an image with a CLIP-vision model like CLIPVisionEncode, keeping the output on "
                        "disk keyed by the image's pixels, the crop and the model file. A re-run with the same "
                        "image reads it back bit-exact without loading the model.",
            inputs=[
                CLIP_VISION_FILE.combo_input("CLIP-vision file in models/clip_vision, e.g. clip_vision_h.safetensors"),
                io.Image.Input("image"),
                io.Combo.Input("crop", options=["center", "none"], default="center"),
            ],
            outputs=[io.ClipVisionOutput.Output()],
        )

    @classmethod
    def validate_inputs(cls, clip_name: str | None = None) -> bool | str:
        """Refuses, at queue time, a file name that is not in the dropdown (see nodes/model_files.py)."""
        return CLIP_VISION_FILE.validate(clip_name)

    @classmethod
    def execute(cls, clip_name: str, image: torch.Tensor, crop: str) -> io.NodeOutput:
        output, hit = encode_clip_vision_cached(encoder_cache_store(), CLIP_VISION_FILE.resolve(clip_name),
                                                image, crop)
        text = f"CLIP vision {clip_name}: {_hit_text(hit)}"
        report_node_stats("WanAccelCLIPVisionEncodeCached", NodeStats(image_encoder_cache="hit" if hit else "miss"))
        log.info("wan_accel: %s", text)
        return io.NodeOutput(output, ui=ui.PreviewText(text))


class CachedEncodeVAE:
    """What the host's WanImageToVideo uses of its VAE (only ``encode``, in 0.3.64 and 0.33), answered from the
    encoder cache under a key fixed by the caller; ``hit`` says how the last encode was served."""

    def __init__(self, vae: comfy.sd.VAE, store: PromptCacheStore, key: str):
        self._vae, self._store, self._key = vae, store, key
        self.hit: bool | None = None

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE latent of ``pixels`` from the cache, or the host VAE's ``encode`` stored for the next run."""
        fields, self.hit = cached_encode(self._store, self._key, lambda: {"latent": self._vae.encode(pixels)},
                                         self._vae.output_device)
        return fields["latent"]


class WanImageToVideoCached(io.ComfyNode):
    """The host's WanImageToVideo, run as is, with its VAE encode of the conditioning clip cached on disk."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelImageToVideoCached",
            display_name="WanImageToVideo (cached)",
            category="wan-accel/conditioning",
            description="Drop-in for WanImageToVideo (same inputs and outputs; it runs the host's node). The VAE "
                        "encode of the conditioning clip (start image + gray frames) is kept on disk, keyed by the "
                        "start image's pixels, width, height, length and the VAE's weights, so a re-run with the "
                        "same start image skips the encode and gives bit-identical outputs.",
            inputs=[
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Vae.Input("vae"),
                io.Int.Input("width", default=832, min=16, max=host_nodes.MAX_RESOLUTION, step=16),
                io.Int.Input("height", default=480, min=16, max=host_nodes.MAX_RESOLUTION, step=16),
                io.Int.Input("length", default=81, min=1, max=host_nodes.MAX_RESOLUTION, step=4),
                io.Int.Input("batch_size", default=1, min=1, max=4096),
                io.ClipVisionOutput.Input("clip_vision_output", optional=True),
                io.Image.Input("start_image", optional=True),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
                io.Latent.Output(display_name="latent"),
            ],
        )

    @classmethod
    def execute(cls, positive: list, negative: list, vae: comfy.sd.VAE, width: int, height: int, length: int,
                batch_size: int, clip_vision_output: Any = None, start_image: torch.Tensor | None = None
                ) -> io.NodeOutput:
        cached_vae = vae
        if start_image is not None:
            inputs = {"start_image": tensor_digest(start_image[:length]), "width": width, "height": height,
                      "length": length}
            cached_vae = CachedEncodeVAE(vae, encoder_cache_store(),
                                          encoder_key("wan_i2v_concat_latent", inputs, vae_identity(vae)))
        result = WanImageToVideo.execute(positive=positive, negative=negative, vae=cached_vae, width=width,
                                         height=height, length=length, batch_size=batch_size,
                                         clip_vision_output=clip_vision_output, start_image=start_image)
        text = ("no start image: nothing to encode" if cached_vae is vae
                else f"conditioning latent: {_hit_text(cached_vae.hit)}")
        log.info("wan_accel: WanImageToVideo (cached): %s", text)
        report_node_stats("WanAccelImageToVideoCached", NodeStats(notes=(text,)) if cached_vae is vae
                          else NodeStats(image_encoder_cache="hit" if cached_vae.hit else "miss"))
        return io.NodeOutput(*result.args, ui=ui.PreviewText(text))
