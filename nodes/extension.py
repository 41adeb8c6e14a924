"""The pack's ``ComfyExtension``: the list of every node the host registers."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .gguf_loader import LoadWanDiTGGUF
from .postprocess import TextureColourEnhance


class WanAccelExtension(ComfyExtension):
    """Registers the wan-accel nodes with the host (V3 node API)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [LoadWanDiTGGUF, TextureColourEnhance]


async def comfy_entrypoint() -> WanAccelExtension:
    """Entry point the host calls when it loads the pack."""
    return WanAccelExtension()
