"""Texture & colour post-process (wan_accel_kernels/postprocess): OpenCV agreement, quality figures, determinism, edge cases."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wan_accel_kernels.postprocess import EnhanceParams, enhance_video, enhance_video_with_mask, gaussian_blur, skin_mask
from wan_accel_kernels.postprocess.filters import morph_open_close
from wan_accel_kernels.postprocess.metrics import flicker, luma_ssim
from tests.support.reference_cv2 import enhance_video_naive_cv2, gaussian_blur_cv2, skin_mask_cv2
from wan_accel_kernels.postprocess.skin_mask import skin_binary

SKIN_RGB = (0.86, 0.62, 0.52)  # 8-bit YCrCb (173, 161, 105): inside the default Cr/Cb box
DEFAULT = EnhanceParams()
CR, CB = (DEFAULT.cr_min, DEFAULT.cr_max), (DEFAULT.cb_min, DEFAULT.cb_max)


def _texture(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """[1, H, W] zero-mean fine texture (3x3-averaged uniform noise)."""
    return F.avg_pool2d(torch.rand((1, 1, height, width), generator=generator), 3, 1, 1)[0] - 0.5


def make_scene(frames: int = 16, height: int = 64, width: int = 96, motion: int = 1, seed: int = 0) -> torch.Tensor:
    """[frames, H, W, 3]: cool textured background panning ``motion`` px/frame, textured skin ellipse twice as fast."""
    generator = torch.Generator().manual_seed(seed)
    pad = 2 * motion * frames
    coarse = torch.rand((1, 3, height // 8 + 1, (width + pad) // 8 + 1), generator=generator)
    canvas = F.interpolate(coarse, size=(height, width + pad), mode="bicubic", align_corners=False)[0]
    canvas = canvas * torch.tensor([0.35, 0.5, 0.5]).view(3, 1, 1) + torch.tensor([0.15, 0.25, 0.3]).view(3, 1, 1)
    canvas = canvas + 0.15 * _texture(generator, height, width + pad)
    face = torch.tensor(SKIN_RGB).view(3, 1, 1) + 0.06 * _texture(generator, height, width + pad)
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, -1)
    video = torch.empty((frames, height, width, 3))
    for t in range(frames):
        shift = 2 * motion * t
        across = (cols - 0.35 * width - shift) / (0.2 * width)
        inside = ((rows - height / 2) / (0.3 * height)) ** 2 + across**2 <= 1
        skin = face[:, :, pad - shift : pad - shift + width]  # the skin texture moves with the ellipse
        frame = torch.where(inside, skin, canvas[:, :, motion * t : motion * t + width])
        video[t] = frame.clamp(0.0, 1.0).permute(1, 2, 0)
    return video


def add_noise(video: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    """``video`` plus independent per-pixel, per-frame Gaussian noise, clamped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return (video + std * torch.randn(video.shape, generator=generator)).clamp(0.0, 1.0)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread for this module: its 64x96 clips gain nothing from threads and a busy 2-core box slows them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scene() -> torch.Tensor:
    """The default 16-frame 64x96 moving scene."""
    return make_scene()


def _planar(video: torch.Tensor) -> torch.Tensor:
    """Channels-last [B, H, W, C] -> planar RGB [B, 3, H, W]."""
    return video[..., :3].permute(0, 3, 1, 2).contiguous()


def _all_colours() -> tuple[np.ndarray, torch.Tensor]:
    """Every 8-bit RGB colour once: uint8 BGR [4096, 4096, 3] for OpenCV and planar RGB [1, 3, 4096, 4096] in [0, 1]."""
    code = np.arange(1 << 24, dtype=np.uint32)
    rgb8 = np.stack([(code >> 16) & 255, (code >> 8) & 255, code & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
    return np.ascontiguousarray(rgb8[..., ::-1]), torch.from_numpy(rgb8).permute(2, 0, 1)[None].float() / 255.0


# --- OpenCV agreement -------------------------------------------------------------------------------------------


def test_skin_thresholds_match_opencv_ycrcb_inrange_on_every_8bit_colour():
    bgr8, rgb = _all_colours()
    ycrcb = cv2.cvtColor(bgr8, cv2.COLOR_BGR2YCrCb)
    expected = cv2.inRange(ycrcb, (0, CR[0], CB[0]), (255, CR[1], CB[1])) > 0
    got = skin_binary(rgb, CR, CB)[0].numpy()
    assert int((got != expected).sum()) == 0
    assert int(expected.sum()) == 1_530_922  # skin colours in the default box
    every_7th = (slice(None), slice(None), slice(None, None, 7), slice(None, None, 7))
    for cr, cb in [((0, 255), (0, 255)), ((128, 128), (128, 128)), ((1, 254), (1, 254)), ((150, 255), (0, 100))]:
        expected = cv2.inRange(ycrcb[::7, ::7], (0, cr[0], cb[0]), (255, cr[1], cb[1])) > 0
        assert int((skin_binary(rgb[every_7th], cr, cb)[0].numpy() != expected).sum()) == 0, (cr, cb)


@pytest.mark.parametrize("shape,sigma",
                         [((64, 96), 1.5), ((37, 53), 3.0), ((5, 7), 2.0), ((1, 9), 1.0), ((48, 40), 0.6)])
def test_gaussian_blur_matches_cv2_gaussianblur(shape, sigma):
    planes = torch.rand((3, *shape), generator=torch.Generator().manual_seed(3))
    expected = np.stack([gaussian_blur_cv2(p.numpy(), sigma) for p in planes])
    assert float((gaussian_blur(planes, sigma) - torch.from_numpy(expected)).abs().max()) < 1e-6


def test_gaussian_blur_of_frames_matches_cv2_on_rgb_frames(scene):
    expected = np.stack([gaussian_blur_cv2(frame.numpy(), 1.5) for frame in scene[:4]])  # cv2 blurs HWC directly
    got = gaussian_blur(_planar(scene[:4]), 1.5).permute(0, 2, 3, 1)
    assert float((got - torch.from_numpy(expected)).abs().max()) < 1.0 / 255


@pytest.mark.parametrize("size", [3, 5, 7])
def test_open_close_matches_cv2_morphologyex(size):
    masks = torch.rand((3, 41, 57), generator=torch.Generator().manual_seed(size)) > 0.55
    kernel = np.ones((size, size), np.uint8)
    for mask, got in zip(masks, morph_open_close(masks, size)):
        opened = cv2.morphologyEx(mask.numpy().astype(np.uint8), cv2.MORPH_OPEN, kernel)
        expected = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, kernel).astype(bool)
        assert int((got.numpy() != expected).sum()) == 0


def test_skin_mask_matches_opencv_reference_within_one_level(scene):
    noisy = add_noise(scene, 0.03)
    got = skin_mask(_planar(noisy), CR, CB, DEFAULT.mask_morph_size, DEFAULT.mask_feather_sigma)
    for frame, mask in zip(noisy, got):
        expected = skin_mask_cv2(frame.numpy(), CR, CB, DEFAULT.mask_morph_size, DEFAULT.mask_feather_sigma)
        assert float((mask - torch.from_numpy(expected)).abs().max()) < 1.0 / 255
    ellipse_share = np.pi * (0.3 * 64) * (0.2 * 96) / (64 * 96)  # 0.188 of the frame is skin
    assert abs(float(got.mean()) - ellipse_share) < 0.01


def test_torch_pipeline_matches_naive_opencv_pipeline(scene):
    noisy = add_noise(scene, 0.02)
    expected = enhance_video_naive_cv2(noisy.numpy())
    assert float((enhance_video(noisy) - torch.from_numpy(expected)).abs().max()) < 1e-4


# --- quality figures at the defaults ----------------------------------------------------------------------------


def test_defaults_keep_luma_ssim_above_0_9_on_clean_and_noisy_video(scene):
    noisy = add_noise(scene, 0.02)
    clean_ssim = luma_ssim(enhance_video(scene), scene)
    noisy_ssim = luma_ssim(enhance_video(noisy), scene)
    print(f"\nluma SSIM vs clean source: clean {clean_ssim:.4f}, noisy {noisy_ssim:.4f} "
          f"(noisy input itself {luma_ssim(noisy, scene):.4f})")
    assert clean_ssim >= 0.9
    assert noisy_ssim >= 0.9
    assert noisy_ssim > luma_ssim(noisy, scene)  # the temporal step removes more noise than detail/grain add


def test_defaults_halve_flicker_on_a_static_scene_with_per_frame_noise(scene):
    static = add_noise(scene[:1].expand(16, -1, -1, -1), 0.02)
    before, after = flicker(static), flicker(enhance_video(static))
    print(f"\nflicker (mean |luma change| per frame): {before:.5f} -> {after:.5f} ({1 - after / before:.0%} less)")
    assert after <= 0.5 * before


def test_motion_gate_reduces_ghosting_on_moving_content():
    moving = make_scene(motion=2)
    gated = luma_ssim(enhance_video(moving), moving)
    ungated = luma_ssim(enhance_video(moving, motion_threshold=0.0), moving)
    assert gated > ungated + 0.02


def test_temporal_coherent_grain_flickers_less_than_per_frame_grain(scene):
    static = scene[:1].expand(8, -1, -1, -1).contiguous()
    grain_only = dict(detail_gain=1.0, detail_gain_global=1.0, saturation=1.0, contrast=1.0, temporal_sigma=0.0,
                      grain_strength=0.03)
    coherent = flicker(enhance_video(static, grain_mode="temporal_coherent", **grain_only))
    per_frame = flicker(enhance_video(static, grain_mode="per_frame", **grain_only))
    assert per_frame > 0.0
    assert coherent < 0.5 * per_frame


# --- semantics ----------------------------------------------------------------------------------------------------


def test_skin_only_leaves_everything_outside_the_mask_untouched(scene):
    out, mask = enhance_video_with_mask(scene, skin_only=True, saturation=1.0, contrast=1.0, temporal_sigma=0.0,
                                        detail_gain_global=2.0, grain_strength_global=0.05)
    outside = (mask == 0).unsqueeze(-1).expand_as(scene)
    inside = (mask > 0.99).unsqueeze(-1).expand_as(scene)
    assert float(outside.float().mean()) > 0.5
    assert torch.equal(out[outside], scene[outside])
    assert float((out[inside] - scene[inside]).abs().mean()) > 0.005


def test_global_detail_gain_acts_outside_skin_when_skin_only_is_off(scene):
    out, mask = enhance_video_with_mask(scene, saturation=1.0, contrast=1.0, temporal_sigma=0.0, grain_strength=0.0,
                                        detail_gain_global=2.0)
    outside = (mask == 0).unsqueeze(-1).expand_as(scene)
    assert float((out[outside] - scene[outside]).abs().mean()) > 0.005


def test_neutral_parameters_return_the_input():
    video = make_scene(frames=4)
    out = enhance_video(video, detail_gain=1.0, detail_gain_global=1.0, grain_strength=0.0, saturation=1.0,
                        contrast=1.0, temporal_sigma=0.0)
    assert float((out - video).abs().max()) < 1e-6


def test_saturation_and_contrast_follow_their_definitions():
    video = torch.rand((2, 8, 8, 3), generator=torch.Generator().manual_seed(5)) * 0.5 + 0.25
    out = enhance_video(video, detail_gain=1.0, detail_gain_global=1.0, grain_strength=0.0, temporal_sigma=0.0,
                        saturation=1.2, contrast=0.9)
    y = (video @ torch.tensor([0.299, 0.587, 0.114])).unsqueeze(-1)
    expected = 0.5 + 0.9 * (y + 1.2 * (video - y) - 0.5)
    assert float((out - expected.clamp(0, 1)).abs().max()) < 1e-6


def test_same_seed_is_identical_and_another_seed_differs(scene):
    first, again, other = (enhance_video(scene[:6], seed=s) for s in (7, 7, 8))
    assert torch.equal(first, again)
    assert float((first - other).abs().mean()) > 1e-4


@pytest.mark.parametrize("chunk", [1, 2, 5, 7])
def test_chunked_result_equals_the_unchunked_result(scene, chunk):
    whole, whole_mask = enhance_video_with_mask(scene, chunk_frames=len(scene))
    chunked, chunked_mask = enhance_video_with_mask(scene, chunk_frames=chunk)
    assert float((chunked - whole).abs().max()) < 1e-6
    assert torch.equal(chunked_mask, whole_mask)


def test_progress_is_reported_per_chunk(scene):
    seen = []
    enhance_video_with_mask(scene, chunk_frames=6, on_chunk=lambda done, total: seen.append((done, total)))
    assert seen == [(6, 16), (12, 16), (16, 16)]


def test_params_object_and_keyword_overrides_agree(scene):
    params = EnhanceParams(detail_gain=1.5, seed=3)
    assert torch.equal(enhance_video(scene[:3], params), enhance_video(scene[:3], detail_gain=1.5, seed=3))
    assert torch.equal(enhance_video(scene[:3], params, seed=4), enhance_video(scene[:3], detail_gain=1.5, seed=4))


# --- bad input ----------------------------------------------------------------------------------------------------


def test_empty_batch_is_returned_unchanged():
    empty = torch.empty((0, 16, 24, 3))
    out, mask = enhance_video_with_mask(empty)
    assert out is empty
    assert mask.shape == (0, 16, 24)


def test_single_frame_skips_the_temporal_step(scene):
    one = scene[3:4]
    assert torch.equal(enhance_video(one), enhance_video(one, temporal_sigma=0.0))
    assert float((enhance_video(one) - one).abs().mean()) > 1e-3


def test_rgba_keeps_alpha_and_processes_rgb_like_rgb(scene):
    alpha = torch.rand(scene.shape[:-1] + (1,), generator=torch.Generator().manual_seed(9))
    rgba = torch.cat([scene, alpha], -1)
    out = enhance_video(rgba)
    assert out.shape == rgba.shape
    assert torch.equal(out[..., 3], rgba[..., 3])
    assert torch.equal(out[..., :3], enhance_video(scene))


def test_out_of_range_and_non_finite_values_are_clamped_without_nan(scene):
    wild = scene[:4].clone() * 3.0 - 1.0
    wild[0, 0, 0] = torch.tensor([float("nan"), float("inf"), float("-inf")])
    out = enhance_video(wild)
    assert torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    tame = torch.nan_to_num(wild, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    assert torch.equal(out, enhance_video(tame))


def test_half_precision_is_computed_in_float32_and_returned_as_half(scene):
    half = scene[:6].half()
    out = enhance_video(half)
    assert out.dtype == torch.float16
    assert float((out.float() - enhance_video(half.float())).abs().max()) <= 1e-3


@pytest.mark.parametrize("bad", [torch.zeros((4, 8, 3)), torch.zeros((2, 8, 8, 2)), torch.zeros((2, 8, 8, 5))])
def test_wrong_shapes_are_rejected(bad):
    with pytest.raises(ValueError):
        enhance_video(bad)


def test_integer_frames_and_unknown_or_invalid_parameters_are_rejected(scene):
    with pytest.raises(TypeError):
        enhance_video(torch.zeros((2, 8, 8, 3), dtype=torch.uint8))
    with pytest.raises(TypeError):
        enhance_video(scene[:2], sharpness=2.0)
    with pytest.raises(ValueError):
        enhance_video(scene[:2], grain_mode="sometimes")
    with pytest.raises(ValueError):
        enhance_video(scene[:2], cr_min=200, cr_max=100)
    with pytest.raises(ValueError):
        enhance_video(scene[:2], mask_morph_size=4)
    with pytest.raises(ValueError):
        enhance_video(scene[:2], chunk_frames=0)
