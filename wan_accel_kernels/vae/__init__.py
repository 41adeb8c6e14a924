"""Wan VAE numerics without the host: frame-by-frame causal decode, its peak-memory model, live-tensor byte counting."""
from .chunked_decode import CausalFrameDecoder, NonFiniteDecode, decode_frame_by_frame
from ..memory_probe import LiveTensorBytes
from .memory_model import (CUDA_SAFETY_FACTOR, WAN21_DECODE, WAN21_DECODE_STREAMED, DecodeMemoryModel, fit_decode_model, measure_step_peaks,
                           relative_fit_error)

__all__ = ["CUDA_SAFETY_FACTOR", "CausalFrameDecoder", "DecodeMemoryModel", "LiveTensorBytes", "NonFiniteDecode",
           "WAN21_DECODE", "WAN21_DECODE_STREAMED",
           "decode_frame_by_frame", "fit_decode_model", "measure_step_peaks", "relative_fit_error"]
