"""Node "Encode Prompt (cached)": umt5 prompt embeddings from a disk cache; the fp8 encoder loads only on a miss.

The key is the prompt, the encoder file's identity (size, mtime, header hash), the storage/compute dtypes and
the tokenizer options (``wan_accel_kernels/prompt_cache/keys.py``); the value is the CONDITIONING as safetensors under
the host's user directory (``user/wan_accel/prompt_cache``), which survives restarts (the host empties its
temp directory at every start). When every prompt of a graph is cached, no encoder weights are read at all.
On a miss the encoder is loaded by ``load_umt5_fp8`` and kept (one at a time) for the next miss for as long as
the host's model management keeps it loaded (``nodes/kept_model.py``): a host unload or "free memory" releases it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import folder_paths
from comfy_api.latest import io, ui

from ..wan_accel_kernels.fp8 import GRANULARITIES, compute_dtype_for
from ..wan_accel_kernels.prompt_cache import (
    PromptCacheStore,
    UncacheableConditioning,
    decode_conditioning,
    encode_conditioning,
    file_identity,
    prompt_key,
)
from .kept_model import KeptModel
from .stats import NodeStats, report_node_stats
from .text_encoder_fp8 import (
    DEVICES,
    TEXT_ENCODER_FILE,
    LoadedTextEncoder,
    dtype_name,
    encoder_devices,
    load_umt5_fp8,
    storage_for_devices,
)

log = logging.getLogger("wan_accel")

CACHE_FOLDER = ("wan_accel", "prompt_cache")
TOKENIZER_OPTION_PREFIX = "umt5xxl_"
DEFAULT_LIMIT_MB = 1024


def cache_directory() -> Path:
    """``<user directory>/wan_accel/prompt_cache``."""
    return Path(folder_paths.get_user_directory(), *CACHE_FOLDER)


_kept: KeptModel[LoadedTextEncoder] = KeptModel("text encoder", lambda encoder: encoder.clip.patcher)


def _encoder(path: Path, identity: dict, device: str, granularity: str) -> tuple[LoadedTextEncoder, bool]:
    """``(encoder, freshly_loaded)``; replaces the kept encoder when file or options differ."""
    key = json.dumps([identity, device, granularity], sort_keys=True)
    return _kept.get(key, lambda: load_umt5_fp8(str(path), device, granularity))


@dataclass(frozen=True)
class CachedEncode:
    """A conditioning and how it was obtained."""

    conditioning: list
    hit: bool
    seconds: float
    detail: str

    def summary(self) -> str:
        return f"{'cache hit' if self.hit else 'cache miss'}: {self.detail} ({self.seconds:.3f} s)"


def encode_prompt_cached(clip_name: str, text: str, device: str = "gpu", granularity: str = "per_row",
                         min_length: int = 512, min_padding: int = 0,
                         limit_mb: int = DEFAULT_LIMIT_MB) -> CachedEncode:
    """The umt5 CONDITIONING of ``text``: from the cache, or encoded with the fp8 encoder and stored."""
    started = time.perf_counter()
    if granularity not in GRANULARITIES:
        raise ValueError(f"scaling must be one of {GRANULARITIES}, got {granularity!r}")
    path = Path(TEXT_ENCODER_FILE.resolve(clip_name))
    identity = file_identity(path)
    load_device, offload_device = encoder_devices(device)
    options = {"encoder": "umt5xxl", "granularity": granularity,
               "storage": dtype_name(storage_for_devices(load_device, offload_device).storage_dtype),
               "compute": dtype_name(compute_dtype_for(load_device)),
               "min_length": int(min_length), "min_padding": int(min_padding)}
    key = prompt_key(text, identity, options)
    store = PromptCacheStore(cache_directory(), limit_mb * 2**20)
    entry = store.get(key)
    if entry is not None:
        try:
            conditioning = decode_conditioning(entry.tensors, entry.metadata,
                                               comfy.model_management.intermediate_device())
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            store.discard(key, f"{type(error).__name__}: {error}")
        else:
            result = CachedEncode(conditioning, True, time.perf_counter() - started,
                                  f"{path.name}, key {key[:12]}, encoder not loaded")
            log.info("wan-accel: prompt cache hit for %r (%s)", text[:60], result.summary())
            return result
    encoder, fresh = _encoder(path, identity, device, granularity)
    clip = encoder.clip.clone()
    clip.set_tokenizer_option(f"{TOKENIZER_OPTION_PREFIX}min_length", int(min_length))
    clip.set_tokenizer_option(f"{TOKENIZER_OPTION_PREFIX}min_padding", int(min_padding))
    conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    stored = _store(store, key, conditioning)
    loaded = f"encoder loaded in {encoder.seconds:.1f} s" if fresh else "kept encoder reused"
    result = CachedEncode(conditioning, False, time.perf_counter() - started,
                          f"{path.name}, {loaded}, {stored}")
    log.info("wan-accel: prompt cache miss for %r (%s)", text[:60], result.summary())
    return result


def _store(store: PromptCacheStore, key: str, conditioning: list) -> str:
    try:
        tensors, metadata = encode_conditioning(conditioning)
    except UncacheableConditioning as error:
        log.warning("wan-accel: this conditioning cannot be cached (%s); it is used but not stored", error)
        return f"not stored ({error})"
    if store.put(key, tensors, metadata) is None:
        return "not stored (larger than the cache limit, or the cache folder failed; see the log)"
    return f"stored; cache {len(store.entries())} entries, {store.total_bytes() / 2**20:.1f} MiB"


class EncodePromptCached(io.ComfyNode):
    """Encodes a prompt with Wan's umt5-xxl (fp8 weights), served from a disk cache when seen before."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelEncodePromptCached",
            display_name="Encode Prompt (cached)",
            category="wan-accel/conditioning",
            description="Text -> CONDITIONING with Wan's umt5-xxl, cached on disk (user/wan_accel/prompt_cache) "
                        "by prompt, encoder file (size, mtime, header hash), dtypes and tokenizer options. On a "
                        "hit the encoder is not loaded at all; on a miss it is loaded as by 'Load Text Encoder "
                        "(fp8)' and kept for the next miss. Oldest entries are evicted beyond the size limit.",
            inputs=[
                TEXT_ENCODER_FILE.combo_input("umt5-xxl file, e.g. umt5_xxl_fp16.safetensors"),
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="the prompt"),
                io.Combo.Input("device", options=list(DEVICES), default="gpu",
                               tooltip="where the encoder runs on a miss"),
                io.Combo.Input("scaling", options=list(GRANULARITIES), default="per_row",
                               tooltip="fp8 scale per output row or one per weight"),
                io.Int.Input("min_length", default=512, min=0, max=10000,
                             tooltip="pad the tokens to this length (the host pads umt5 prompts to 512)"),
                io.Int.Input("min_padding", default=0, min=0, max=10000,
                             tooltip="at least this many padding tokens (T5TokenizerOptions' option)"),
                io.Int.Input("cache_limit_mb", default=DEFAULT_LIMIT_MB, min=1, max=1 << 20,
                             tooltip="size limit of the cache folder; oldest entries are evicted first"),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def validate_inputs(cls, clip_name: str | None = None) -> bool | str:
        """Refuses, at queue time, a file name that is not in the dropdown (see nodes/model_files.py)."""
        return TEXT_ENCODER_FILE.validate(clip_name)

    @classmethod
    def execute(cls, clip_name: str, text: str, device: str, scaling: str, min_length: int, min_padding: int,
                cache_limit_mb: int) -> io.NodeOutput:
        result = encode_prompt_cached(clip_name, text, device, scaling, min_length, min_padding, cache_limit_mb)
        report_node_stats("WanAccelEncodePromptCached", NodeStats(text_encoder_cache="hit" if result.hit else "miss",
                                                                  notes=(f"took {result.seconds:.2f} s",)))
        return io.NodeOutput(result.conditioning, ui=ui.PreviewText(result.summary()))
