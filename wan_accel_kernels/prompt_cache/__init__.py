"""Prompt-embedding cache: keyed safetensors store, cache keys and conditioning (de)serialisation. Never imports ``comfy``."""
from .conditioning import UncacheableConditioning, decode_conditioning, encode_conditioning
from .keys import FileIdentityError, file_identity, payload_key, prompt_key, safetensors_header
from .store import CacheEntry, CorruptEntry, PromptCacheStore

__all__ = [
    "CacheEntry",
    "CorruptEntry",
    "FileIdentityError",
    "PromptCacheStore",
    "UncacheableConditioning",
    "decode_conditioning",
    "encode_conditioning",
    "file_identity",
    "payload_key",
    "prompt_key",
    "safetensors_header",
]
