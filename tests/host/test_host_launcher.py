"""Host tier of ``wan-accel run --comfyui DIR``: the newcomer's one command starts the real (read-only) ComfyUI tree
itself, with a writable ``--comfyui-base`` for its models, input and output, runs the winner workflow on the tiny
models, writes the video where the command runs (``--out`` relative to the cwd), and stops the server it started.

Tiny stand-ins as in ``test_host_cli.py``: the tiny DiT converted to GGUF, a small umt5, the sparse ViT-H stub and
a random Wan 2.1 VAE; 32x32, 1 frame, 1 step, VAE in fp32.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.clip_vision_stub import write_clip_vision_h_stub
from tests.support.comfy_server import ComfyServer
from tests.support.host_inprocess import import_host
from tests.support.tiny_models import write_random_image, write_tiny_wan_i2v
from tests.support.umt5_files import write_small_umt5
from tests.support.wan_vae_weights import write_wan21_vae
from wan_accel.convert import convert

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--width", "32", "--height", "32", "--length", "1", "--steps", "1", "--set", "9.precision=fp32"]


def _base_with_tiny_models(base: Path) -> list[str]:
    """A --comfyui-base holding our pack (linked) and the tiny models; returns the flags that select them."""
    import_host()   # the VAE writer takes its key layout from the host's own Wan VAE
    layout = ComfyServer(base_dir=base)   # only its folder layout: custom_nodes/wan_accel -> this repository
    write_tiny_wan_i2v(base / "tiny.safetensors")
    (layout.models_dir / "diffusion_models").mkdir()
    convert(base / "tiny.safetensors", layout.models_dir / "diffusion_models" / "tiny_Q6_K.gguf", "Q6_K")
    encoder = layout.add_model("text_encoders", write_small_umt5, "umt5_small.safetensors")
    vision = layout.add_model("clip_vision", write_clip_vision_h_stub, "clip_vision_h_stub.safetensors")
    vae = layout.add_model("vae", write_wan21_vae, "wan21_vae_random.safetensors")
    return ["--dit", "tiny_Q6_K.gguf", "--text-encoder", encoder, "--clip-vision", vision, "--vae", vae]


def test_run_with_comfyui_starts_the_host_writes_here_and_stops_it(tmp_path):
    base, here = tmp_path / "base", tmp_path / "here"
    base.mkdir()
    here.mkdir()
    models = _base_with_tiny_models(base)
    write_random_image(here / "in.png", 64, 64, seed=3)
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "wan_accel", "run", "--comfyui", os.environ["COMFYUI_PATH"],
                           "--comfyui-python", python, "--comfyui-base", str(base), "--image", "in.png",
                           "--prompt", "a cat walks on the beach", "--seed", "7", "--out", "videos", *TINY, *models],
                          cwd=here, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    print(f"\n$ wan-accel run --comfyui ...   [{time.monotonic() - t0:.1f} s, exit {done.returncode}]\n"
          f"{done.stdout}{done.stderr}")
    assert done.returncode == 0
    [video] = sorted((here / "videos").glob("*.mp4"))   # where the command ran, not in the checkout
    assert f"saved {Path('videos') / video.name}" in done.stdout
    started = re.search(r"starting ComfyUI from \S+ on (http://127\.0\.0\.1:\d+) \(CPU only: no GPU\), log (\S+)",
                        done.stderr)
    assert started, "the launcher names its server and log"
    url, log = started.groups()
    assert "KSampler: step 1/1" in done.stderr and "CPU-only server" not in done.stderr   # fp32 VAE: no flag
    try:
        urllib.request.urlopen(url + "/system_stats", timeout=2)
        raise AssertionError(f"the server at {url} still answers after the run")
    except (urllib.error.URLError, OSError):
        pass
    assert not Path(log).exists()   # a clean run leaves no log behind
