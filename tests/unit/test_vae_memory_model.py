"""wan_accel_kernels.memory_probe and wan_accel_kernels.vae.memory_model: exact live-byte counts, the fit, the tile choice, the budget."""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.memory_probe import LiveTensorBytes
from wan_accel_kernels.vae.memory_model import (
    WAN21_DECODE,
    DecodeMemoryModel,
    fit_decode_model,
    measure_step_peaks,
    relative_fit_error,
)
from tests.support.toy_causal_decoder import ToyCausalDecoder

GIB = 1024 ** 3
WAN21_VAE_FP16_BYTES = 126_892_531 * 2  # parameters of the host's Wan 2.1 VAE (dim 96), stored fp16


def test_live_bytes_counts_storages_until_their_last_view_dies():
    weights = torch.ones(1000)
    with torch.inference_mode(), LiveTensorBytes() as live:
        a = torch.empty(1000)            # 4000 B
        b = a * 2                        # 8000 B live
        del a                            # 4000
        c = b + 1                        # 8000
        view = b[:10]
        del b                            # the view keeps b's storage: still 8000
        c.add_(1)                        # in place: no new storage
        reshaped = weights.view(10, 100)  # a view of a storage made before the mode: not counted
        after_views = live.live
        del view, c, reshaped
        assert live.live == 0
    assert after_views == 8000
    assert live.peak == 8000


def test_live_bytes_peak_restarts_from_the_live_bytes():
    with torch.inference_mode(), LiveTensorBytes() as live:
        kept = torch.zeros(256)
        transient = torch.zeros(1024)
        del transient
        live.reset_peak()
        other = torch.zeros(128)
        assert live.peak == 256 * 4 + 128 * 4
        del kept, other


def test_fit_recovers_a_linear_model_with_the_attention_term():
    truth = DecodeMemoryModel(per_pixel=4000.0, fixed=50000.0)
    sizes = [(16, 16), (32, 32), (32, 64), (64, 64)]
    samples = [(h, w, truth.activation_bytes(h, w, 1)) for h, w in sizes]
    fitted = fit_decode_model(samples)
    assert fitted.per_pixel == pytest.approx(4000.0, rel=1e-9)
    assert fitted.fixed == pytest.approx(50000.0, rel=1e-6)
    assert relative_fit_error(fitted, samples) < 1e-9
    with pytest.raises(ValueError, match="two or more output sizes"):
        fit_decode_model([(16, 16, 1.0), (16, 16, 2.0)])


def test_toy_decoder_steps_are_linear_in_pixels():
    samples = []
    for height, width in [(2, 2), (4, 4), (4, 8), (8, 8)]:
        latent = torch.randn(1, 4, 4, height, width, dtype=torch.float64)
        with torch.inference_mode():
            peaks = measure_step_peaks(ToyCausalDecoder(), latent)
        assert peaks[2] == peaks[3]  # the cache is full from the third step: steady state
        samples.append((height * 2, width * 2, max(peaks) / 8))
    model = fit_decode_model(samples, spatial_scale=2, score_matrices=0)
    print(f"\ntoy decoder: {model.per_pixel:.2f} elements per output pixel, fit error "
          f"{relative_fit_error(model, samples):.2%}")
    assert relative_fit_error(model, samples) < 0.02


def test_largest_tile_fits_the_budget_and_the_next_size_does_not():
    budget = 1.0 * GIB
    side = WAN21_DECODE.largest_tile(budget, dtype_bytes=2)
    assert side is not None and side % 32 == 0
    assert WAN21_DECODE.activation_bytes(side, side, 2) <= budget
    assert WAN21_DECODE.activation_bytes(side + 32, side + 32, 2) > budget
    assert WAN21_DECODE.largest_tile(1024.0, dtype_bytes=2) is None


def test_wan21_decode_budget_at_832x480_fp16_is_frame_count_independent():
    peak = WAN21_DECODE.peak_bytes(480, 832, dtype_bytes=2, weight_bytes=WAN21_VAE_FP16_BYTES)
    print(f"\nWan 2.1 VAE, 832x480, fp16: estimated decode peak {peak / GIB:.2f} GiB for any frame count "
          f"(host's own estimate for the same decode: {7000 * 60 * 104 * 64 * 2 / GIB:.2f} GiB)")
    assert 3.0 * GIB < peak < 3.75 * GIB
    assert WAN21_DECODE.peak_bytes(480, 832, dtype_bytes=4, weight_bytes=2 * WAN21_VAE_FP16_BYTES) < 7.5 * GIB
