"""wan_accel_kernels.vae.chunked_decode on a toy causal decoder: streamed steps equal the whole video, overflow stops early."""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.vae.chunked_decode import NonFiniteDecode, decode_frame_by_frame
from tests.support.toy_causal_decoder import ToyCausalDecoder


def _latent(frames: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 4, frames, 3, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_frame_by_frame_equals_the_whole_video_forward():
    decoder, latent = ToyCausalDecoder(), _latent()
    steps_seen = []
    streamed = decode_frame_by_frame(decoder, latent, on_step=steps_seen.append)
    reference = decoder.full(latent).float()
    error = float((streamed - reference).norm() / reference.norm())
    print(f"\ntoy causal decoder, 6 frames: relative L2 {error:.2e} vs whole-video forward")
    assert streamed.dtype == torch.float32 and streamed.shape == (2, 3, 6, 6, 10)
    assert error < 1e-7
    assert steps_seen == list(range(6))


def first_then_pairs(num_frames: int) -> list[tuple[int, int]]:
    """The schedule of ComfyUI 0.33's ``WanVAE.decode``: the first latent frame, then two at a time."""
    return [(0, 1)] + [(start, min(start + 2, num_frames)) for start in range(1, num_frames, 2)]


@pytest.mark.parametrize("frames", [5, 6])
def test_a_decoders_own_schedule_is_followed_and_equals_the_whole_video(frames):
    decoder, latent = ToyCausalDecoder(schedule=first_then_pairs), _latent(frames=frames)
    starts = []
    streamed = decode_frame_by_frame(decoder, latent, on_step=starts.append)
    assert starts == [start for start, _ in first_then_pairs(frames)] and decoder.steps == len(starts)
    assert float((streamed - decoder.full(latent).float()).norm() / streamed.norm()) < 1e-7


def test_postprocess_runs_on_every_step_output_on_the_output_device():
    decoder, latent = ToyCausalDecoder(), _latent(frames=3)
    clamped = decode_frame_by_frame(decoder, latent, output_device="cpu", postprocess=lambda x: x.clamp(0, 1))
    raw = decode_frame_by_frame(ToyCausalDecoder(), latent)
    assert clamped.device.type == "cpu"
    assert torch.equal(clamped, raw.clamp(0, 1))
    assert 0 < float((raw < 0).float().mean()) < 1


def test_overflow_stops_at_the_first_non_finite_step():
    decoder = ToyCausalDecoder(dtype=torch.float16, gain=1.0)
    latent = _latent(frames=6).float()
    latent[:, :, 3] *= 1e5  # frame 3 overflows fp16 (max 65504), frames 0-2 do not
    with pytest.raises(NonFiniteDecode) as failure:
        decode_frame_by_frame(decoder, latent)
    assert failure.value.step == 3
    assert decoder.steps == 4  # frames 4 and 5 were never decoded
    assert "latent frame 3" in str(failure.value)
