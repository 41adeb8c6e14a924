"""Node "VAE Decode (bounded memory)": exact Wan 2.1 decode one latent frame at a time, fp32 redo on fp16 overflow."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import comfy.ldm.wan.vae
import comfy.model_management
import comfy.sd
import comfy.utils
import torch
from comfy_api.latest import io, ui

from ..wan_accel_kernels.vae.chunked_decode import NonFiniteDecode, decode_frame_by_frame, one_frame_at_a_time
from ..wan_accel_kernels.vae.memory_model import CUDA_SAFETY_FACTOR, WAN21_DECODE, WAN21_DECODE_STREAMED, DecodeMemoryModel
from .stats import NodeStats, report_node_stats
from .vae_loader import precision_name

log = logging.getLogger("wan_accel")
GIB = 1024 ** 3
TILE_OVERLAP_FRACTION = 4  # overlap = tile / 4, as the host's own tiled fallback
MIN_TILE_PX = 32


class WanFrameDecoder:
    """The host's Wan 2.1 VAE (``comfy.ldm.wan.vae.WanVAE``) as a ``wan_accel_kernels.vae.chunked_decode.CausalFrameDecoder``."""

    def __init__(self, model: comfy.ldm.wan.vae.WanVAE, device: torch.device, dtype: torch.dtype):
        self.model, self.device, self.dtype = model, device, dtype

    def prepare(self, latent: torch.Tensor) -> torch.Tensor:
        """``conv2`` of the whole latent, in the order ``WanVAE.decode`` applies it."""
        return self.model.conv2(latent.to(self.dtype).to(self.device))

    def new_cache(self) -> list:
        """One empty slot per cached layer of the decoder, as ``WanVAE.decode`` allocates (the host's own counter:
        ``count_cache_layers`` from ComfyUI 0.33, ``count_conv3d`` before)."""
        counter = getattr(comfy.ldm.wan.vae, "count_cache_layers", None) or comfy.ldm.wan.vae.count_conv3d
        return [None] * counter(self.model.decoder)

    def schedule(self, num_frames: int) -> list[tuple[int, int]]:
        """The latent-frame slices ``WanVAE.decode`` feeds its decoder: the first frame, then pairs, on hosts whose
        decoder returns a list of chunks (ComfyUI 0.33); one frame at a time before."""
        return wan_decode_schedule(num_frames, pairs=decoder_returns_chunks())

    def decode_step(self, frames: torch.Tensor, cache: list) -> torch.Tensor:
        """One call of the decoder on the next latent frames with the shared cache (a list of chunks is joined)."""
        out = self.model.decoder(frames, feat_cache=cache, feat_idx=[0])
        return torch.cat(out, 2) if isinstance(out, list) else out


def decoder_returns_chunks() -> bool:
    """True on hosts whose Wan decoder streams its output as a list of chunks (``Decoder3d.run_up``, ComfyUI 0.33)."""
    return hasattr(comfy.ldm.wan.vae.Decoder3d, "run_up")


def wan_decode_schedule(num_frames: int, pairs: bool) -> list[tuple[int, int]]:
    """``WanVAE.decode``'s slices of ``num_frames`` latent frames: ``[0:1]`` then ``[1:3], [3:5], ...`` with
    ``pairs``, else one frame per call."""
    if not pairs:
        return one_frame_at_a_time(num_frames)
    return [(0, 1)] + [(start, min(start + 2, num_frames)) for start in range(1, num_frames, 2)]


@dataclass(frozen=True)
class DecodePlan:
    """How one decode runs: exact (``tile`` None) or spatially tiled with square tiles of ``tile`` latent pixels."""

    dtype: torch.dtype
    estimated_peak: float
    budget: float
    tile: int | None


def is_wan21_vae(vae: comfy.sd.VAE) -> bool:
    """True for the host's Wan 2.1 VAE, the one this node's frame-by-frame decode drives."""
    return isinstance(vae.first_stage_model, comfy.ldm.wan.vae.WanVAE)


def weight_bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the model's parameters once stored in ``dtype``."""
    return sum(p.numel() for p in model.parameters()) * torch.empty((), dtype=dtype).element_size()


def decode_memory_model(device: torch.device) -> DecodeMemoryModel:
    """The step-memory model of this host's Wan decoder (one frame per step, or the streamed pairs of ComfyUI 0.33),
    times :data:`CUDA_SAFETY_FACTOR` on CUDA, where it was not fitted."""
    model = WAN21_DECODE_STREAMED if decoder_returns_chunks() else WAN21_DECODE
    return model.scaled(CUDA_SAFETY_FACTOR) if device.type == "cuda" else model


def plan_decode(latent_shape: tuple[int, ...], dtype: torch.dtype, weights: int, budget: float,
                min_tile_px: int = MIN_TILE_PX, memory: DecodeMemoryModel = WAN21_DECODE) -> DecodePlan:
    """Exact when ``memory`` says the largest step fits ``budget`` (bytes incl. weights), else tiled with the largest
    square tile that fits."""
    height, width = latent_shape[-2] * 8, latent_shape[-1] * 8
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    exact = memory.peak_bytes(height, width, dtype_bytes, weights)
    if exact <= budget:
        return DecodePlan(dtype, exact, budget, None)
    side = memory.largest_tile(budget - weights, dtype_bytes, min_tile_px)
    if side is None:
        raise MemoryError(f"VAE Decode (bounded memory): even a {min_tile_px} px tile does not fit the budget of "
                          f"{budget / GIB:.2f} GiB ({weights / GIB:.2f} GiB are the VAE weights); raise "
                          "memory_budget_gb or set it to 0 to use the free device memory")
    tile = side // 8
    return DecodePlan(dtype, memory.peak_bytes(side, side, dtype_bytes, weights), budget, tile)


def _decode(vae: comfy.sd.VAE, model: torch.nn.Module, latent: torch.Tensor, plan: DecodePlan) -> torch.Tensor:
    """Float32 pixels [B, 3, T, H, W] in [0, 1] on the host's output device, following ``plan``, with progress."""
    frames = WanFrameDecoder(model, vae.device, plan.dtype)
    chunks = len(frames.schedule(latent.shape[2]))
    pbar = comfy.utils.ProgressBar(chunks * (1 if plan.tile is None else tile_count(tuple(latent.shape), plan.tile)))
    if plan.tile is None:
        return decode_frame_by_frame(frames, latent, output_device=vae.output_device,
                                     postprocess=vae.process_output, on_step=lambda _: pbar.update(1))
    overlap = max(1, plan.tile // TILE_OVERLAP_FRACTION)
    raw = comfy.utils.tiled_scale_multidim(
        latent, lambda tile: decode_frame_by_frame(frames, tile, output_device=vae.output_device),
        tile=(latent.shape[2], plan.tile, plan.tile), overlap=(1, overlap, overlap),
        upscale_amount=vae.upscale_ratio, out_channels=vae.output_channels,
        index_formulas=vae.upscale_index_formula, output_device=vae.output_device, pbar=pbar)
    return vae.process_output(raw)


def tile_count(latent_shape: tuple[int, ...], tile: int) -> int:
    """Tiles ``comfy.utils.tiled_scale_multidim`` visits for a latent of ``latent_shape`` with ``tile`` latent px."""
    overlap = max(1, tile // TILE_OVERLAP_FRACTION)
    return comfy.utils.get_tiled_scale_steps(latent_shape[-1], latent_shape[-2], tile, tile, overlap)


def _attempt(vae: comfy.sd.VAE, model: torch.nn.Module, dtype: torch.dtype, latent: torch.Tensor,
             budget_gb: float, min_tile_px: int, notes: list[str]) -> tuple[torch.Tensor, DecodePlan]:
    """Loads the VAE (asking the host to free what the decode needs), plans and runs one decode with ``model``; a
    decode that runs out of device memory is retried once, tiled within half its estimated peak."""
    weights = weight_bytes(vae.first_stage_model, vae.vae_dtype)
    if model is not vae.first_stage_model:
        weights += weight_bytes(model, dtype)
    memory = decode_memory_model(vae.device)
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    activations = memory.activation_bytes(latent.shape[-2] * 8, latent.shape[-1] * 8, dtype_bytes)
    comfy.model_management.load_models_gpu([vae.patcher], memory_required=activations,
                                           force_full_load=vae.disable_offload)
    budget = budget_gb * GIB if budget_gb > 0 else comfy.model_management.get_free_memory(vae.device) + weights
    plan = plan_decode(tuple(latent.shape), dtype, weights, budget, min_tile_px, memory)
    try:
        return _decode(vae, model, latent, plan), plan
    except torch.OutOfMemoryError:
        comfy.model_management.soft_empty_cache()
        smaller = weights + (plan.estimated_peak - weights) / 2
        retry = plan_decode(tuple(latent.shape), dtype, weights, smaller, min_tile_px, memory)
        log.warning("wan_accel: VAE decode ran out of device memory with a budget of %.2f GiB (estimated peak %.2f "
                    "GiB); retrying tiled within %.2f GiB. Lower memory_budget_gb to plan for this card.",
                    budget / GIB, plan.estimated_peak / GIB, smaller / GIB)
        notes.append(f"out of memory at a {budget / GIB:.2f} GiB budget, retried within {smaller / GIB:.2f} GiB")
        return _decode(vae, model, latent, retry), retry


def _fp32_failure(step: int) -> ValueError:
    return ValueError(f"VAE Decode (bounded memory): the fp32 VAE decode produced NaN/Inf at latent frame {step}; the latent is "
                      "outside what this VAE decodes: check that the VAE is the one of the model (Wan 2.1)")


def decode_bounded(vae: comfy.sd.VAE, latent: torch.Tensor, budget_gb: float = 0.0,
                   min_tile_px: int = MIN_TILE_PX) -> tuple[torch.Tensor, str]:
    """Decodes a Wan 2.1 latent [B, 16, T, h, w] to IMAGE frames [B*T', H, W, 3]; returns them and a summary line.

    ``budget_gb`` bounds the device bytes of the decode, weights included (0: the free device memory). A
    reduced-precision decode whose output turns NaN/Inf is redone in fp32 with a one-line warning; the shared VAE
    object keeps its precision (the redo uses an fp32 copy of its model). A decode that runs out of device memory
    is retried tiled, with one warning naming the budget.
    """
    if not is_wan21_vae(vae):
        raise ValueError("VAE Decode (bounded memory) drives the Wan 2.1 VAE frame by frame; "
                         "this VAE is another kind: decode it with the host's VAEDecode")
    if latent.ndim != 5:
        raise ValueError(f"VAE Decode (bounded memory): expected a video latent [B, C, T, h, w], got shape {tuple(latent.shape)}; "
                         "connect the sampler's output for a Wan video")
    if not bool(torch.isfinite(latent).all()):
        raise ValueError("VAE Decode (bounded memory): the latent already holds NaN/Inf, so no VAE precision can decode it; "
                         "the sampler diverged: check its model, steps and cfg")
    notes: list[str] = []
    dtype = vae.vae_dtype
    try:
        pixels, plan = _attempt(vae, vae.first_stage_model, dtype, latent, budget_gb, min_tile_px, notes)
    except NonFiniteDecode as overflow:
        if dtype == torch.float32:
            raise _fp32_failure(overflow.step) from None
        log.warning("wan_accel: %s VAE decode overflowed (NaN/Inf) at latent frame %d; redoing this decode in fp32",
                    precision_name(dtype), overflow.step)
        notes.append(f"{precision_name(dtype)} overflowed at latent frame {overflow.step}, redone in fp32")
        dtype = torch.float32
        fp32_model = copy.deepcopy(vae.first_stage_model).to(device=vae.device, dtype=dtype)
        try:
            pixels, plan = _attempt(vae, fp32_model, dtype, latent, budget_gb, min_tile_px, notes)
        except NonFiniteDecode as again:
            raise _fp32_failure(again.step) from None
    images = pixels.movedim(1, -1)
    images = images.reshape(-1, *images.shape[-3:])
    how = "exact frame by frame" if plan.tile is None else f"tiled {plan.tile * 8} px (exact path would not fit)"
    summary = (f"{images.shape[0]} frames {images.shape[2]}x{images.shape[1]}, {precision_name(dtype)}, {how}; "
               f"estimated peak {plan.estimated_peak / GIB:.2f} GiB of {plan.budget / GIB:.2f} GiB budget")
    return images, "; ".join([summary, *notes])


class VAEDecodeBounded(io.ComfyNode):
    """Decodes a Wan 2.1 video latent without holding the video on the device, exactly like the host's full decode."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelVAEDecode",
            display_name="VAE Decode (bounded memory)",
            category="wan-accel/latent",
            description="Decodes a Wan 2.1 latent one latent frame at a time, carrying the VAE's causal cache, so "
                        "the frames equal the host's VAEDecode bit for bit while the GPU holds only the weights, "
                        "the cache and one step's activations (the peak does not grow with the frame count). If "
                        "the budget is still too small it tiles spatially. An fp16/bf16 decode that overflows "
                        "(NaN/Inf) is redone in fp32 with a warning.",
            inputs=[
                io.Latent.Input("samples"),
                io.Vae.Input("vae"),
                io.Float.Input("memory_budget_gb", default=0.0, min=0.0, max=1024.0, step=0.25,
                               tooltip="peak device memory for this decode, VAE weights included; 0 = the "
                                       "device's free memory"),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, samples: dict, vae: comfy.sd.VAE, memory_budget_gb: float) -> io.NodeOutput:
        started = time.perf_counter()
        images, summary = decode_bounded(vae, samples["samples"], memory_budget_gb)
        log.info("wan_accel: VAE decode: %s", summary)
        report_node_stats("WanAccelVAEDecode", NodeStats(
            seconds_per_frame=(time.perf_counter() - started) / max(images.shape[0], 1),
            notes=tuple(summary.split("; "))))
        return io.NodeOutput(images, ui=ui.PreviewText(summary))
