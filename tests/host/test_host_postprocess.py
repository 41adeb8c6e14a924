"""APNG -> LoadImage -> "Texture & Colour Enhance" -> SaveImage, mask -> MaskToImage -> SaveImage, via POST /prompt.

The saved 8-bit frames and mask must equal ``enhance_video`` run here on the same pixels, to one level of 255.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageSequence

from wan_accel_kernels.postprocess import EnhanceParams, enhance_video_with_mask

FRAMES, HEIGHT, WIDTH = 6, 48, 64
PARAMS = EnhanceParams(detail_gain=1.6, grain_strength=0.02, seed=11, saturation=1.1)
CHUNK_FRAMES = 4  # fewer than the clip: the host run goes through the chunked path


def _clip() -> np.ndarray:
    """uint8 [FRAMES, H, W, 3]: cool textured background panning 1 px/frame and a skin-toned disc moving 2 px/frame."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((1, 3, HEIGHT // 8 + 1, (WIDTH + FRAMES) // 8 + 1), generator=generator)
    canvas = F.interpolate(coarse, size=(HEIGHT, WIDTH + FRAMES), mode="bicubic", align_corners=False)[0]
    canvas = canvas * torch.tensor([0.3, 0.5, 0.5]).view(3, 1, 1) + torch.tensor([0.15, 0.25, 0.3]).view(3, 1, 1)
    canvas = canvas + 0.04 * torch.randn(canvas.shape, generator=generator)
    rows = torch.arange(HEIGHT, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(WIDTH, dtype=torch.float32).view(1, -1)
    skin = torch.tensor([0.86, 0.62, 0.52]).view(3, 1, 1) + 0.03 * torch.randn((3, HEIGHT, WIDTH), generator=generator)
    frames = []
    for t in range(FRAMES):
        disc = (rows - HEIGHT / 2) ** 2 + (cols - WIDTH / 3 - 2 * t) ** 2 <= (HEIGHT / 3) ** 2
        frame = torch.where(disc, skin, canvas[:, :, t : t + WIDTH]).clamp(0, 1)
        frames.append((frame.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    return np.stack(frames)


def _write_apng(frames: np.ndarray, path: Path) -> None:
    """Lossless animated PNG that LoadImage reads as a batch of ``len(frames)`` images."""
    first, *rest = (Image.fromarray(frame) for frame in frames)
    first.save(path, save_all=True, append_images=rest, duration=40, loop=0)


def _read_apng(path: Path) -> np.ndarray:
    """The frames as LoadImage sees them (PIL's ImageSequence, converted to RGB)."""
    with Image.open(path) as image:
        return np.stack([np.array(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])


def _save_image_bytes(values: torch.Tensor) -> np.ndarray:
    """SaveImage's 8-bit conversion of float images [B, H, W, C]: clip(255 x) truncated to uint8."""
    return np.clip(255.0 * values.numpy(), 0, 255).astype(np.uint8)


def _graph(image_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "WanAccelTextureColourEnhance",
              "inputs": {"images": ["1", 0], "chunk_frames": CHUNK_FRAMES, **asdict(PARAMS)}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "postprocess/frames"}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "postprocess/mask"}},
    }


@pytest.fixture(scope="module")
def host_run(wan_pack, tmp_path_factory):
    """(input frames as loaded, saved enhanced frames, saved mask images), all uint8 [B, H, W, 3]."""
    clip_path = tmp_path_factory.mktemp("postprocess") / "clip.png"
    frames = _clip()
    _write_apng(frames, clip_path)
    loaded = _read_apng(clip_path)
    assert np.array_equal(loaded, frames)  # the APNG round trip is lossless
    history = wan_pack.run(_graph(wan_pack.add_input(clip_path)), timeout=300)
    saved = [np.stack([np.array(Image.open(p).convert("RGB")) for p in wan_pack.output_files(history, "images", node)])
             for node in ("3", "5")]
    return loaded, saved[0], saved[1]


def test_node_is_registered_with_every_parameter(wan_pack):
    info = wan_pack.object_info("WanAccelTextureColourEnhance")["WanAccelTextureColourEnhance"]
    assert info["category"] == "wan-accel/postprocess"
    assert info["output"] == ["IMAGE", "MASK"]
    required = info["input"]["required"]
    assert set(required) == {"images", "chunk_frames", *asdict(PARAMS)}
    assert all(spec[1].get("tooltip") for name, spec in required.items())
    device = info["input"]["optional"]["device"]  # optional: API graphs saved before it existed still run
    assert (device[1]["options"], device[1]["default"]) == (["auto", "cpu"], "auto") and device[1]["tooltip"]


def test_host_output_matches_local_enhance_video_within_one_level(host_run):
    loaded, saved_frames, saved_mask = host_run
    frames = torch.from_numpy(loaded).float() / 255.0
    expected, mask = enhance_video_with_mask(frames, PARAMS, chunk_frames=CHUNK_FRAMES)
    assert saved_frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    frame_error = np.abs(saved_frames.astype(int) - _save_image_bytes(expected).astype(int))
    mask_bytes = _save_image_bytes(mask.unsqueeze(-1).expand(-1, -1, -1, 3))
    mask_error = np.abs(saved_mask.astype(int) - mask_bytes.astype(int))
    print(f"\n[host] enhanced frames: max |host - local| {frame_error.max()} levels, "
          f"{(frame_error > 0).mean():.2%} pixels differ; mask max {mask_error.max()} levels; "
          f"mean change vs input {np.abs(saved_frames.astype(int) - loaded.astype(int)).mean():.2f} levels")
    assert frame_error.max() <= 1
    assert mask_error.max() <= 1
    assert np.abs(saved_frames.astype(int) - loaded.astype(int)).mean() > 0.5  # the node did change the frames
    assert 0.1 < (saved_mask[..., 0] > 127).mean() < 0.6  # the disc is found as skin, the background is not
