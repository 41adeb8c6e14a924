"""The pack's ``ComfyExtension``: the list of every node the host registers, and what the pack adds to the host."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .attention_patch import PatchAttention
from .cfg_schedule import CFGSchedule, CFGScheduleGuider
from .expert_sampler import WanExpertSampler
from .gguf_loader import LoadWanDiTGGUF
from .image_encoder_cache import CLIPVisionEncodeCached, WanImageToVideoCached
from .latent_transfer import ExportLatent, ImportLatent
from .postprocess import TextureColourEnhance
from .prompt_cache_encode import EncodePromptCached
from .split_sampler import SplitSamplerStageA, SplitSamplerStageB
from .stats import register_routes
from .step_cache import WanMagCache, WanTeaCache, register_profile_folder
from .step_cache_calibrate import WanStepCacheCalibrate
from .text_encoder_fp8 import LoadTextEncoderFP8
from .vae_decode import VAEDecodeBounded
from .vae_loader import LoadVAEPrecision


class WanAccelExtension(ComfyExtension):
    """Registers the wan-accel nodes with the host (V3 node API)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [LoadWanDiTGGUF, TextureColourEnhance, PatchAttention,
                WanTeaCache, WanMagCache, WanStepCacheCalibrate, CFGSchedule, CFGScheduleGuider,
                LoadVAEPrecision, VAEDecodeBounded, CLIPVisionEncodeCached, WanImageToVideoCached,
                LoadTextEncoderFP8, EncodePromptCached, WanExpertSampler, ExportLatent, ImportLatent,
                SplitSamplerStageA, SplitSamplerStageB]


def register_with_host() -> None:
    """Everything the pack adds to the host besides its nodes: the step-cache profile folder and the stats route.
    Only the entry point calls it, so importing a module of the pack registers nothing."""
    register_profile_folder()
    register_routes()


async def comfy_entrypoint() -> WanAccelExtension:
    """Entry point the host calls when it loads the pack."""
    register_with_host()
    return WanAccelExtension()
