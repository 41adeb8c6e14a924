"""The tiny model files a shipped Wan 2.1 workflow runs on, written into a host's ``models/`` folder: the tiny DiT
converted to Q6_K GGUF, a small umt5, the sparse ViT-H stub and a random Wan 2.1 VAE.

The VAE writer takes its key layout from the host's own Wan VAE, so this runs in the host's Python: in-process in the
host tier, or as ``python -m tests.support.tiny_cli_models MODELS_DIR`` (prints the CLI flags as JSON) from a tier
whose Python lacks the host's requirements.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from tests.support.clip_vision_stub import write_clip_vision_h_stub
from tests.support.host_inprocess import import_host
from tests.support.tiny_models import write_tiny_wan_i2v
from tests.support.umt5_files import write_small_umt5
from tests.support.wan_vae_weights import write_wan21_vae

DIT_GGUF = "wan_tiny_i2v_Q6_K.gguf"


def _write(models_dir: Path, folder: str, writer: Callable[[Path], object], name: str) -> str:
    """Writes one file unless an earlier module of the session already did (one host serves many modules)."""
    (models_dir / folder).mkdir(parents=True, exist_ok=True)
    if not (models_dir / folder / name).is_file():
        writer(models_dir / folder / name)
    return name


def install_cli_models(models_dir: Path, dit_source: Path | None = None) -> list[str]:
    """Writes the four files under ``models_dir`` (those not there yet) and returns the flags that select them
    (``--dit ... --vae ...``). ``dit_source``: the tiny DiT safetensors to convert (default: a new one beside the
    GGUF)."""
    from wan_accel.convert import convert

    import_host()
    if dit_source is None:
        dit_source = models_dir / "diffusion_models" / "wan_tiny_i2v.safetensors"
        _write(models_dir, "diffusion_models", write_tiny_wan_i2v, dit_source.name)
    if not (models_dir / "diffusion_models" / DIT_GGUF).is_file():
        convert(dit_source, models_dir / "diffusion_models" / DIT_GGUF, "Q6_K")
    encoder = _write(models_dir, "text_encoders", write_small_umt5, "umt5_small.safetensors")
    vision = _write(models_dir, "clip_vision", write_clip_vision_h_stub, "clip_vision_h_stub.safetensors")
    vae = _write(models_dir, "vae", write_wan21_vae, "wan21_vae_random.safetensors")
    return ["--dit", DIT_GGUF, "--text-encoder", encoder, "--clip-vision", vision, "--vae", vae]


if __name__ == "__main__":
    print(json.dumps(install_cli_models(Path(sys.argv[1]))))
