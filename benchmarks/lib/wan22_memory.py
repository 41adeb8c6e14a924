"""Peak RAM and VRAM of Wan 2.2 I2V A14B with two Q6_K experts at 832x480x81, computed from shapes: an estimate.

Each expert: 40 blocks of Q6_K linears (``wan22_expert.expert_q6_k_bytes``), the rest (embeddings, time
projection, modulation, norms, biases, head) kept in 16 bits as the converter keeps them. VRAM holds one expert, the
largest dequantised layer (the FFN's 13824 x 5120 in bf16) and the activations of one block at 32,760 tokens. Host
RAM holds the other expert, and at load time both (the GGUF loader copies each file out of its memory map before the
host moves one to the GPU), plus umt5-xxl stored fp8 (6.27 GiB) and the VAE.
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmarks.lib.wan22_expert import BLOCKS, DIM, FFN, expert_q6_k_bytes

GIB = 2**30
TEXT_DIM, FREQ_DIM, IN_DIM, OUT_DIM, HEADS = 4096, 256, 36, 16, 40
UMT5_FP8_GIB = 6.27    # README: the whole umt5-xxl stored fp8
VAE_GIB = 0.24         # wan_2.1_vae.safetensors in fp16
BF16 = 2


def tokens(width: int = 832, height: int = 480, frames: int = 81) -> int:
    """DiT tokens of a video: latent frames x (height/16) x (width/16) (VAE /8, patch 2x2)."""
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def expert_float_parameters() -> int:
    """Parameters of one expert outside its block linears (kept in 16 bits)."""
    per_block = 6 * DIM + 4 * DIM + 2 * DIM + 8 * DIM + FFN + DIM  # modulation, q/k norms, block norm, biases
    embeddings = (IN_DIM * DIM * 4 + DIM) + (TEXT_DIM * DIM + DIM + DIM * DIM + DIM) + (FREQ_DIM * DIM + DIM
                  + DIM * DIM + DIM) + (6 * DIM * DIM + 6 * DIM)
    head = DIM * OUT_DIM * 4 + OUT_DIM * 4 + 2 * DIM
    return BLOCKS * per_block + embeddings + head


@dataclass(frozen=True)
class Wan22Memory:
    """The estimate's parts in bytes."""

    expert_bytes: int
    dequant_bytes: int
    activation_bytes: int

    @property
    def peak_vram_gib(self) -> float:
        return (self.expert_bytes + self.dequant_bytes + self.activation_bytes) / GIB

    @property
    def peak_ram_gib(self) -> float:
        return 2 * self.expert_bytes / GIB + UMT5_FP8_GIB + VAE_GIB

    def lines(self) -> list[str]:
        """The estimate as printed, labelled as one."""
        return [f"estimate from shapes, not a measurement: one Q6_K expert {self.expert_bytes / GIB:.2f} GiB; "
                f"peak VRAM {self.peak_vram_gib:.1f} GiB (one expert + {self.dequant_bytes / 2**20:.0f} MiB largest "
                f"dequantised layer + {self.activation_bytes / GIB:.2f} GiB activations of one block); peak RAM "
                f"{self.peak_ram_gib:.1f} GiB (both experts at load + umt5 fp8 {UMT5_FP8_GIB} GiB + VAE), "
                f"{(self.expert_bytes / GIB + UMT5_FP8_GIB + VAE_GIB):.1f} GiB once one expert is on the GPU"]


def two_q6_k_experts(width: int = 832, height: int = 480, frames: int = 81) -> Wan22Memory:
    """The estimate at ``width`` x ``height`` x ``frames``: x, its modulated copy, q, k, v, attention output and the
    FFN hidden state of one block in bf16, plus the latent-sized input and output."""
    n = tokens(width, height, frames)
    activations = n * BF16 * (6 * DIM + FFN) + 4 * n * OUT_DIM * 4 * 4
    return Wan22Memory(expert_q6_k_bytes() + expert_float_parameters() * BF16, FFN * DIM * BF16, activations)
