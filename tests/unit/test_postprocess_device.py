"""The post-process device choice: how ``auto``/``cpu`` resolve, results on CPU against the OpenCV reference, and
the chunk-by-chunk moving logic checked through a fake device mapping (a recording ``_to``), since CI has no second
device."""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.postprocess import EnhanceParams, compute_device_for, enhance_video_with_mask
from wan_accel_kernels.postprocess import enhance as enhance_module
from tests.support.reference_cv2 import enhance_video_naive_cv2, skin_mask_cv2
from wan_accel_kernels.postprocess.temporal import temporal_radius

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # a device object only: nothing is allocated on it
FAKE_COMPUTE = torch.device("cpu", 0)  # compares unequal to the frames' torch.device("cpu"): a second "device"
PARAMS = EnhanceParams(detail_gain=1.5, grain_strength=0.02, seed=3, temporal_sigma=1.2, motion_threshold=0.05)


def _frames(count: int = 9, height: int = 24, width: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand((count, height, width, 3), generator=generator) * 0.6 + 0.2
    frames[:, 6:18, 8:20] = torch.tensor([0.85, 0.6, 0.5])  # a skin-toned patch, so the mask is not empty
    return frames


def test_cpu_choice_is_always_the_cpu():
    assert compute_device_for("cpu", CPU, CUDA) == CPU
    assert compute_device_for("cpu", CUDA, CUDA) == CPU


def test_auto_picks_the_host_gpu_and_else_stays_where_the_frames_are():
    assert compute_device_for("auto", CPU, CUDA) == CUDA
    assert compute_device_for("auto", CPU, CPU) == CPU
    assert compute_device_for("auto", CUDA, CPU) == CUDA


def test_unknown_choice_names_the_choices():
    with pytest.raises(ValueError, match="auto, cpu"):
        compute_device_for("gpu", CPU, CPU)


def test_on_cpu_auto_and_cpu_run_in_place_and_match_the_opencv_reference():
    """Both choices resolve to the frames' own CPU, and what runs there matches the independent OpenCV pipeline
    (``reference_cv2``): frames within 1e-4, the skin mask within one 8-bit level (as ``test_postprocess.py``)."""
    frames = _frames()
    expected = torch.from_numpy(enhance_video_naive_cv2(frames.numpy(), PARAMS))
    expected_mask = torch.stack([torch.from_numpy(skin_mask_cv2(
        frame.numpy(), (PARAMS.cr_min, PARAMS.cr_max), (PARAMS.cb_min, PARAMS.cb_max), PARAMS.mask_morph_size,
        PARAMS.mask_feather_sigma)) for frame in frames])
    assert float(expected_mask.mean()) > 0.05  # the skin patch is in the mask: the mask comparison checks something
    for choice in ("auto", "cpu"):
        device = compute_device_for(choice, frames.device, CPU)
        assert device == CPU
        out, mask = enhance_video_with_mask(frames, PARAMS, chunk_frames=4, compute_device=device)
        assert float((out - expected).abs().max()) < 1e-4, choice
        assert float((mask - expected_mask).abs().max()) < 1.0 / 255, choice


@pytest.mark.parametrize("chunk", [1, 2, 4, 5])
def test_moving_chunks_to_a_compute_device_changes_nothing(chunk):
    """Moved chunk by chunk: bit-exact with the same chunks in place, and within the chunked path's own 1e-6 of
    the unchunked result (the temporal GEMM sums per segment), masks identical."""
    frames = _frames()
    whole = enhance_video_with_mask(frames, PARAMS, chunk_frames=len(frames))
    in_place = enhance_video_with_mask(frames, PARAMS, chunk_frames=chunk)
    moved = enhance_video_with_mask(frames, PARAMS, chunk_frames=chunk, compute_device=FAKE_COMPUTE)
    assert torch.equal(moved[0], in_place[0]) and torch.equal(moved[1], in_place[1])
    assert float((moved[0] - whole[0]).abs().max()) < 1e-6
    assert torch.equal(moved[1], whole[1])


def test_each_frame_moves_to_the_compute_device_once_and_results_come_home_per_chunk(monkeypatch):
    frames = _frames(count=11)
    chunk = 3
    moves: list[tuple[str, int]] = []

    def recording_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        moves.append(("to compute" if device == FAKE_COMPUTE else "home", tensor.shape[0]))
        return tensor.clone()  # a copy, as a move to another device makes

    expected = enhance_video_with_mask(frames, PARAMS, chunk_frames=chunk)
    monkeypatch.setattr(enhance_module, "_to", recording_to)
    out, mask = enhance_video_with_mask(frames, PARAMS, chunk_frames=chunk, compute_device=FAKE_COMPUTE)
    inbound = [n for kind, n in moves if kind == "to compute"]
    home = [n for kind, n in moves if kind == "home"]
    radius = temporal_radius(PARAMS.temporal_sigma, len(frames))
    sizes = [min(chunk, len(frames) - start) for start in range(0, len(frames), chunk)]
    assert radius > 0 and sum(inbound) == len(frames)  # every input frame crosses over exactly once
    assert max(inbound) <= chunk + radius  # never more than a chunk and its look-ahead halo at a time
    assert home == [n for size in sizes for n in (size, size)]  # per chunk: its frames, then its mask
    assert torch.equal(out, expected[0]) and torch.equal(mask, expected[1])
    assert out.device == frames.device and mask.device == frames.device


def test_without_a_second_device_nothing_moves(monkeypatch):
    frames = _frames()
    moves = []
    monkeypatch.setattr(enhance_module, "_to", lambda tensor, device: moves.append(device) or tensor)
    enhance_video_with_mask(frames, PARAMS, chunk_frames=4, compute_device=compute_device_for("auto", CPU, CPU))
    assert moves == []
