"""Random-weight files of the five quality metrics, each in its library's own format, in one ``--weights`` folder:
what ``score_speed.py`` times the metrics with, and what the score tests load through the real code paths.

Random weights cost what real ones do; nothing here downloads.
"""
from __future__ import annotations

from pathlib import Path

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


def random_raft_state(seed: int) -> dict:
    """A random ``raft_large`` state dict whose batch norms have non-trivial statistics (so a misnamed norm shows)."""
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(seed)
    state = raft_large(weights=None, progress=False).state_dict()
    for norm in {key.rsplit(".", 1)[0] for key in state if key.endswith("running_var")}:
        shape = state[f"{norm}.running_var"].shape
        state[f"{norm}.weight"] = 1.0 + 0.1 * torch.randn(shape)
        state[f"{norm}.bias"] = 0.1 * torch.randn(shape)
        state[f"{norm}.running_mean"] = 0.1 * torch.randn(shape)
        state[f"{norm}.running_var"] = 0.5 + torch.rand(shape)
    return state


def write_amt_checkpoint(path: Path, seed: int) -> dict:
    """A random AMT-S saved as AMT's trainer saves it (``epoch`` and ``state_dict``); returns the state dict."""
    from omegaconf import OmegaConf
    from vbench.third_party.amt.utils.build_utils import build_from_cfg

    from wan_accel.quality.smoothness import amt_config_path

    torch.manual_seed(seed)
    state = build_from_cfg(OmegaConf.load(amt_config_path()).network).state_dict()
    torch.save({"epoch": 300, "state_dict": state}, path)
    return state


def write_raft_checkpoint(path: Path, seed: int) -> dict:
    """A random torchvision ``raft_large`` saved as torchvision's own checkpoint (a bare state dict); returns it."""
    state = random_raft_state(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def write_random_weights(folder: Path, seed: int = 0) -> Path:
    """Every file ``wan-accel score --weights folder`` looks for, with random weights; returns ``folder``."""
    from wan_accel.quality import dynamic, imaging, smoothness, subject

    folder.mkdir(parents=True, exist_ok=True)
    write_dino_backbone(folder / subject.WEIGHTS[0].file, seed)
    write_dreamsim_cache(folder, seed + 1)
    write_musiq_checkpoint(folder / imaging.WEIGHTS[0].file, seed + 2)
    write_amt_checkpoint(folder / smoothness.WEIGHTS[0].file, seed + 3)
    write_raft_checkpoint(folder / dynamic.WEIGHTS[0].file, seed + 4)
    return folder
