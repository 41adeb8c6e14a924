"""Which Wan DiT a checkpoint is, from its tensor names and shapes alone, so the loader and the converter agree.

The released files differ only in layout: a Wan 2.1 I2V DiT has the CLIP-vision branch (``img_emb.*``, ``k_img``);
a Wan 2.2 I2V A14B expert (high or low noise) has Wan 2.1's blocks with ``in_dim`` 36 but no CLIP-vision branch;
a Wan 2.2 TI2V 5B has 48-channel latents (``patch_embedding`` in 48, ``head.head`` out 48 x 4) and needs the
Wan 2.2 VAE. The weights cannot tell a high-noise expert from a low-noise one; only the file name can.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

PATCH_EMBEDDING = "patch_embedding.weight"
HEAD = "head.head.weight"
PATCH_VOLUME = 4            # Wan's (1, 2, 2) patch: head.head rows = out channels x 4
I2V_IN_CHANNELS = 36        # 16 noise + 4 mask + 16 image-latent channels
WAN22_LATENT_CHANNELS = 48  # Wan 2.2 VAE (TI2V 5B)
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
SUPPORTED = "supports Wan 2.1 I2V 14B and Wan 2.2 I2V A14B experts"


@dataclass(frozen=True)
class WanLayout:
    """A Wan DiT's variant (``wan2.1-i2v``, ``wan2.2-i2v-a14b``, ``wan2.2-ti2v-5b`` or ``wan2.1-other``) and
    its input and output channels."""

    variant: str
    in_channels: int
    out_channels: int

    @property
    def supported(self) -> bool:
        """False for the Wan 2.2 TI2V 5B, whose 48-channel latents our paths were never built or tested for."""
        return self.variant != "wan2.2-ti2v-5b"

    @property
    def description(self) -> str:
        return {"wan2.1-i2v": "Wan 2.1 I2V 14B", "wan2.2-i2v-a14b": "Wan 2.2 I2V A14B expert",
                "wan2.2-ti2v-5b": f"Wan 2.2 TI2V 5B model ({WAN22_LATENT_CHANNELS}-channel latents)"}.get(
            self.variant, f"Wan DiT ({self.in_channels} in, {self.out_channels} out channels)")


def _strip(name: str) -> str:
    for prefix in KEY_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def wan_layout(shapes: Mapping[str, Sequence[int]]) -> WanLayout | None:
    """The layout of a Wan DiT whose tensor ``shapes`` (names with or without the host's prefixes) are given;
    None when ``patch_embedding.weight`` or ``head.head.weight`` is missing (not a Wan DiT)."""
    stripped = {_strip(name): tuple(shape) for name, shape in shapes.items()}
    if PATCH_EMBEDDING not in stripped or HEAD not in stripped:
        return None
    in_channels = int(stripped[PATCH_EMBEDDING][1])
    out_channels = int(stripped[HEAD][0]) // PATCH_VOLUME
    clip_branch = any(name.startswith("img_emb.") for name in stripped)
    if out_channels == WAN22_LATENT_CHANNELS:
        variant = "wan2.2-ti2v-5b"
    elif in_channels == I2V_IN_CHANNELS:
        variant = "wan2.1-i2v" if clip_branch else "wan2.2-i2v-a14b"
    else:
        variant = "wan2.1-other"
    return WanLayout(variant, in_channels, out_channels)


def unsupported_reason(file_name: str, layout: WanLayout | None, tool: str = "this loader") -> str | None:
    """The one-line refusal by ``tool`` of a file of ``layout`` (naming the file, what it is and what to use
    instead), or None when the layout is supported or not a Wan DiT at all."""
    if layout is None or layout.supported:
        return None
    return (f"{file_name} is a {layout.description}; {tool} {SUPPORTED}: run the 5B with the host's own "
            f"UNETLoader on its .safetensors file and the Wan 2.2 VAE")
