"""Lossless synthetic videos, random-weight DINO / DreamSim / MUSIQ files in each library's own format, and a fixture
under which nothing can reach the network, for the subject, background and imaging tests."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"

#: Stand-in for facebookresearch/dino's hub entry point: DINO's ViT-B/16 (DreamSim ships a copy of DINO's
#: ``vision_transformer.py``) with the backbone file from the hub's checkpoints folder, as the real one loads it.
HUBCONF = f'''import torch
from vision_transformer import vit_base

dependencies = ["torch"]


def dino_vitb16(pretrained=True, **kwargs):
    model = vit_base(patch_size=16, num_classes=0, **kwargs)
    if pretrained:
        model.load_state_dict(torch.hub.load_state_dict_from_url(url="{DINO_URL}", map_location="cpu"))
    return model
'''
VISION_TRANSFORMER = "from dreamsim.feature_extraction.vision_transformer import vit_base  # noqa: F401\n"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No socket can connect, Hugging Face is offline, and torch / HF / XDG caches and ``~`` point at empty folders."""
    def refuse(*args, **kwargs):
        raise OSError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HOME", "TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        folder = tmp_path / "empty" / name
        folder.mkdir(parents=True)
        monkeypatch.setenv(name, str(folder))
    return tmp_path / "empty"


def write_video(path: Path, frames: np.ndarray, fps: int = 16) -> Path:
    """``frames`` (T, H, W, 3) uint8 RGB as a lossless .mp4 (H.264 RGB, crf 0): PyAV and decord read back the same
    bytes."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, image: np.ndarray) -> Path:
    """An RGB PNG (VBench opens it without ``convert('RGB')``, so it must already be RGB)."""
    from PIL import Image

    Image.fromarray(image).save(path)
    return path


def smooth_frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random texture drifting one pixel per frame, (count, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (3, height // 8 + 2, (width + count) // 8 + 2)).astype(np.float32))
    texture = torch.nn.functional.interpolate(coarse[None], scale_factor=8, mode="bilinear")[0].permute(1, 2, 0)
    frames = [texture[:height, i:i + width].numpy() for i in range(count)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def noise_frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Independent uniform noise frames, (count, H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def random_dino_vit(seed: int):
    """DINO's ViT-B/16 (DreamSim's copy of DINO's ``vision_transformer.py``) with random weights."""
    from dreamsim.feature_extraction.vision_transformer import vit_base

    torch.manual_seed(seed)
    return vit_base(patch_size=16, num_classes=0).eval()


def write_dino_backbone(path: Path, seed: int):
    """A random DINO ViT-B/16 saved as ``dino_vitbase16_pretrain.pth`` is (a bare state dict); returns the model."""
    model = random_dino_vit(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def write_musiq_checkpoint(path: Path, seed: int) -> dict:
    """A random MUSIQ (pyiqa's arch, one score output as the SPAQ model) saved as pyiqa's files are; returns it."""
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(seed)
    state = MUSIQ(pretrained=False).state_dict()
    state["head.weight"] = 50.0 * state["head.weight"]       # spread the scores so frames differ by whole points
    state["head.bias"] = torch.tensor([50.0])
    torch.save(state, path)
    return state


def _write_clip_like(path: Path) -> None:
    """A CLIP / OpenCLIP ViT-B/16 as DreamSim stores it: DINO layout, a LayerNorm as ``pos_drop``, and ``proj``."""
    from dreamsim.feature_extraction.vision_transformer import vit_base

    vit = vit_base(patch_size=16)
    vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
    state = vit.state_dict()
    state["proj"] = 0.05 * torch.randn(vit.embed_dim, 512)
    torch.save({"state_dict": state}, path)


def write_dreamsim_cache(folder: Path, seed: int) -> None:
    """Every file ``dreamsim(pretrained=True, cache_dir=folder)`` reads for its ensemble, with random weights and a
    random (non-zero) LoRA, saved by DreamSim's and peft's own code."""
    from dreamsim import dreamsim
    from dreamsim.feature_extraction.vision_transformer import DINOHead
    from peft import LoraConfig

    write_dino_backbone(folder / "checkpoints" / "dino_vitbase16_pretrain.pth", seed)
    head = DINOHead(768, 2048)
    student = {f"module.head.{key}": value for key, value in head.state_dict().items() if key.startswith("mlp.")}
    student["module.head.last_layer.weight"] = head.last_layer.weight.detach().clone()
    torch.save({"student": student}, folder / "dino_vitb16_pretrain.pth")
    _write_clip_like(folder / "clip_vitb16_pretrain.pth.tar")
    _write_clip_like(folder / "open_clip_vitb16_pretrain.pth.tar")
    repo = folder / "facebookresearch_dino_main"
    repo.mkdir()
    (repo / "hubconf.py").write_text(HUBCONF)
    (repo / "vision_transformer.py").write_text(VISION_TRANSFORMER)
    (repo / "utils.py").write_text('"""Stand-in for DINO\'s utils.py."""\n')
    LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", target_modules=["qkv"]).save_pretrained(
        str(folder / "ensemble_lora"))
    hub_dir = torch.hub.get_dir()
    try:
        model, _ = dreamsim(pretrained=False, device="cpu", cache_dir=str(folder))
    finally:
        torch.hub.set_dir(hub_dir)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.02)
    model.save_pretrained(str(folder / "ensemble_lora"))
