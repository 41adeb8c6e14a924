"""Host tier of ``wan-accel run --workflow wan22_i2v_a14b_4step`` on the tiny Wan 2.2 I2V expert pair, end to end.

Tiny stand-ins: both experts as Q6_K GGUF (``tests/support/tiny_wan22.py``), one lightx2v-style LoRA per expert set by
``--set`` on the workflow's two LoRA nodes, the small umt5 and a random Wan 2.1 VAE. The CLI shrinks the job to
32x32, 5 frames and 2 steps (the boundary 0.900 then gives one step to each expert) and puts the VAE in fp32.
"""
from __future__ import annotations

import pytest

from tests.host.test_host_cli import _decode, wan_accel
from tests.support.comfy_server import ComfyServer
from tests.support.host_inprocess import import_host
from tests.support.tiny_models import write_random_image
from tests.support.tiny_wan22 import expert_file_name, write_tiny_wan22_gguf_expert, write_tiny_wan22_lora
from tests.support.umt5_files import write_small_umt5
from tests.support.wan_vae_weights import write_wan21_vae
from wan_accel.graph_experts import sampler_nodes
from wan_accel.graph_fill import load_api_workflow
from wan_accel.workflow_catalog import WORKFLOWS

FOUR_STEP = load_api_workflow(WORKFLOWS["wan22_4step"].api_path)
LORA_NODES = [nid for nid, node in FOUR_STEP.items() if node["class_type"] == "LoraLoaderModelOnly"]
VAE_NODE = next(nid for nid, node in FOUR_STEP.items() if node["class_type"] == "WanAccelLoadVAE")
[SAMPLER_NODE] = sampler_nodes(FOUR_STEP)


@pytest.fixture(scope="module")
def wan22_flags(wan_pack: ComfyServer) -> list[str]:
    """Installs the tiny Q6_K experts, their LoRAs, umt5 and VAE; returns the CLI flags that select them."""
    import_host()
    folder = wan_pack.models_dir / "diffusion_models"
    high, low = (write_tiny_wan22_gguf_expert(folder, expert, "Q6_K").name for expert in ("high", "low"))
    loras = [wan_pack.add_model("loras", lambda p, e=expert: write_tiny_wan22_lora(p, e),
                                expert_file_name(expert, "_lora.safetensors")) for expert in ("high", "low")]
    encoder = wan_pack.add_model("text_encoders", write_small_umt5, "umt5_small.safetensors")
    vae = wan_pack.add_model("vae", write_wan21_vae, "wan21_vae_random.safetensors")
    return ["--dit-high", high, "--dit-low", low, "--text-encoder", encoder, "--vae", vae,
            "--set", f"{LORA_NODES[0]}.lora_name={loras[0]}", "--set", f"{LORA_NODES[1]}.lora_name={loras[1]}",
            "--set", f"{VAE_NODE}.precision=fp32", "--width", "32", "--height", "32", "--length", "5",
            "--steps", "2"]


def test_run_wan22_4step_end_to_end_produces_a_video(wan_pack, wan22_flags, tmp_path):
    image = write_random_image(tmp_path / "start.png", 64, 64, seed=3)
    out = tmp_path / "out"
    done = wan_accel("run", "--server", wan_pack.url, "--workflow", "wan22_i2v_a14b_4step", "--image", str(image),
                     "--prompt", "a cat walks on the beach", "--seed", "7", "--out", str(out), *wan22_flags)
    assert done.returncode == 0
    [video] = sorted(out.glob("*.mp4"))
    assert _decode(video) == (5, 32, 32, 16.0)
    assert "high-noise expert steps 0-0, low-noise expert steps 1-1" in done.stdout
    assert "high-noise expert: 1 computed, 0 skipped of 1" in done.stdout


def test_one_dit_flag_on_the_two_expert_workflow_is_a_usage_error(wan_pack, wan22_flags, tmp_path):
    image = write_random_image(tmp_path / "start.png", 64, 64, seed=3)
    done = wan_accel("run", "--server", wan_pack.url, "--workflow", "wan22_i2v_a14b_4step", "--image", str(image),
                     "--prompt", "x", "--out", str(tmp_path), "--dit", "any.gguf")
    assert done.returncode == 2
    assert "two experts: give their files with --dit-high and --dit-low" in done.stderr
