"""tiny DiT -> safetensors -> our converter -> GGUF -> "Load Wan DiT (GGUF)" -> KSampler, through POST /prompt.

The output latent is compared with the same graph run by the host's UNETLoader on the unquantised file. The
loader's badge shows the dequant path a run observed, also in a second host forced to the PyTorch path.
"""
from __future__ import annotations

import os

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wan_accel_kernels.gguf import dequantize
from wan_accel_kernels.gguf.reader import read_gguf
from tests.support import graphs
from tests.support.comfy_server import ComfyServer, ExecutionFailed, read_latent
from tests.support.gguf_files import write_gguf
from tests.support.tiny_models import tiny_wan_i2v_state_dict, write_tiny_wan_i2v, write_tiny_wan_lora, write_umt5_stub
from wan_accel.convert import convert

DIT_SHAPE = dict(dim=256, layers=2, ffn=512)
SOURCE_NAME = "wan_tiny256.safetensors"


@pytest.fixture(scope="module")
def models(wan_pack, tmp_path_factory):
    """The dim-256 tiny DiT (every block weight Q6_K-able) as safetensors, Q6_K and Q8_0 GGUF."""
    folder = tmp_path_factory.mktemp("gguf_files")
    source = write_tiny_wan_i2v(folder / SOURCE_NAME, **DIT_SHAPE)
    names = {"source": wan_pack.add_model("diffusion_models", source)}
    for qtype in ("Q6_K", "Q8_0"):
        written = convert(source, folder / f"wan_tiny256-{qtype}.gguf", qtype, progress=False)
        names[qtype] = wan_pack.add_model("diffusion_models", written)
    return names


def _gguf_loader(name: str) -> tuple[str, dict]:
    return "WanAccelLoadDiTGGUF", {"unet_name": name, "compute_dtype": "fp32"}


def _run_latent(server, loader, prefix: str, **kw) -> tuple[torch.Tensor, dict]:
    history = server.run(graphs.tiny_i2v_graph(loader=loader, filename_prefix=f"latents/{prefix}", **kw))
    return read_latent(server.output_files(history, "latents")[0]), history


def _weight_rmse(path, qtype: gguf.GGMLQuantizationType) -> float:
    reference = tiny_wan_i2v_state_dict(**DIT_SHAPE)
    errors = [float((dequantize(t.data, t.qtype, t.shape) - reference[name]).norm() / reference[name].norm())
              for name, t in read_gguf(path).tensors.items() if t.qtype == qtype]
    return float(np.mean(errors))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_gguf_graph_matches_the_unquantised_graph_within_the_q6k_bound(wan_pack, models):
    reference, _ = _run_latent(wan_pack, graphs.unet_loader(models["source"]), "ref")
    q6k, history = _run_latent(wan_pack, _gguf_loader(models["Q6_K"]), "q6k")
    q8, _ = _run_latent(wan_pack, _gguf_loader(models["Q8_0"]), "q8")
    weight_rmse = _weight_rmse(wan_pack.models_dir / "diffusion_models" / models["Q6_K"], gguf.GGMLQuantizationType.Q6_K)
    errors = {"Q6_K": _rel(q6k, reference), "Q8_0": _rel(q8, reference)}
    print(f"\nQ6_K weights: relative RMSE {weight_rmse:.5f}; output latent relative L2 vs UNETLoader: "
          f"Q6_K {errors['Q6_K']:.5f}, Q8_0 {errors['Q8_0']:.5f}")
    summary = history["outputs"][graphs.NODE["model"]]["text"][0]
    print(f"node output: {summary}")
    assert q6k.shape == reference.shape and torch.isfinite(q6k).all()
    assert 0 < errors["Q6_K"] < 3 * weight_rmse
    assert errors["Q8_0"] < errors["Q6_K"]
    assert "Q6_K x24" in summary


def test_lora_applies_on_the_gguf_model(wan_pack, models):
    base_sd = tiny_wan_i2v_state_dict(**DIT_SHAPE)
    lora = wan_pack.add_model("loras", lambda path: write_tiny_wan_lora(path, base_sd), "wan_tiny256_lora.safetensors")
    reference, _ = _run_latent(wan_pack, graphs.unet_loader(models["source"]), "ref_lora", lora_name=lora)
    plain, _ = _run_latent(wan_pack, _gguf_loader(models["Q6_K"]), "q6k_plain")
    patched, _ = _run_latent(wan_pack, _gguf_loader(models["Q6_K"]), "q6k_lora", lora_name=lora)
    lora_effect, error = _rel(patched, plain), _rel(patched, reference)
    print(f"\nLoRA moves the GGUF output by {lora_effect:.4f}; GGUF+LoRA vs UNETLoader+LoRA: {error:.5f}")
    assert lora_effect > 5 * error


def _bad_file(wan_pack, name: str, writer) -> str:
    return wan_pack.add_model("diffusion_models", writer, name)


def _expect_node_error(wan_pack, name: str) -> str:
    with pytest.raises(ExecutionFailed) as failure:
        wan_pack.run(graphs.tiny_i2v_graph(loader=_gguf_loader(name), filename_prefix="latents/bad"))
    message = str(failure.value)
    print(f"\n{name}: {message.splitlines()[0]}")
    return message


def test_bad_files_give_named_errors_and_the_server_keeps_running(wan_pack, models):
    flux = _bad_file(wan_pack, "flux_tiny.gguf", lambda p: write_gguf(p, "flux", {
        "double_blocks.0.img_attn.qkv.weight": (np.zeros((8, 8), np.float32), gguf.GGMLQuantizationType.F32)}))
    q2k = _bad_file(wan_pack, "wan_q2k.gguf", lambda p: write_gguf(p, "wan", {
        "blocks.0.ffn.0.weight": (np.zeros((4, 84), np.uint8), gguf.GGMLQuantizationType.Q2_K)}))
    good_bytes = (wan_pack.models_dir / "diffusion_models" / models["Q6_K"]).read_bytes()
    truncated = _bad_file(wan_pack, "wan_truncated.gguf", lambda p: p.write_bytes(good_bytes[: len(good_bytes) // 2]))
    corrupt = _bad_file(wan_pack, "wan_corrupt.gguf", lambda p: p.write_bytes(good_bytes[:8] + b"\xff" * 64 + good_bytes[72:]))

    assert "flux_tiny.gguf is a flux model; this loader expects Wan 2.1" in _expect_node_error(wan_pack, flux)
    assert "wan_q2k.gguf holds GGUF types Q2_K" in _expect_node_error(wan_pack, q2k)
    assert "wan_truncated.gguf" in (message := _expect_node_error(wan_pack, truncated))
    assert "truncated or corrupt" in message
    assert "wan_corrupt.gguf is truncated or corrupt" in _expect_node_error(wan_pack, corrupt)

    latent, _ = _run_latent(wan_pack, _gguf_loader(models["Q6_K"]), "after_errors")
    assert torch.isfinite(latent).all()


def _observed_dequant(server, model_name: str, prefix: str) -> dict:
    """The GGUF loader's kept stats after one sampling run of the tiny graph."""
    server.run(graphs.tiny_i2v_graph(loader=_gguf_loader(model_name), filename_prefix=f"latents/{prefix}"))
    return server.get_json("/wan_accel/stats")["nodes"][graphs.NODE["model"]]


def test_the_badge_shows_the_dequant_path_the_run_observed_also_a_forced_fallback(
        wan_pack, models, comfy_models, tmp_path_factory):
    default = _observed_dequant(wan_pack, models["Q6_K"], "badge_auto")
    assert default["stats"]["dequant_path"] == ("torch per layer → float32 on cpu "
                                                "(data on cpu; the Triton kernels run on CUDA)")
    server = ComfyServer(base_dir=tmp_path_factory.mktemp("forced_torch"),
                         env={**os.environ, "WAN_ACCEL_GGUF_DEQUANT": "torch"})
    try:
        server.add_model("diffusion_models", wan_pack.models_dir / "diffusion_models" / models["Q6_K"])
        server.add_model("text_encoders", write_umt5_stub, comfy_models["umt5"])
        server.start()
        forced = _observed_dequant(server, models["Q6_K"], "badge_forced")
    finally:
        server.stop()
    print(f"\nbadge, auto: {default['lines']}\nbadge, WAN_ACCEL_GGUF_DEQUANT=torch: {forced['lines']}")
    assert forced["stats"]["dequant_path"] == "torch per layer → float32 on cpu (WAN_ACCEL_GGUF_DEQUANT=torch)"
    assert forced["lines"][0] == f"dequant: {forced['stats']['dequant_path']}"


def test_a_tensor_one_row_short_is_refused_at_load_with_its_name(wan_pack, tmp_path):
    """The host sizes the model from block 0; block 1's FFN one row short used to fail in the first matmul."""
    state = tiny_wan_i2v_state_dict(**DIT_SHAPE)
    state["blocks.1.ffn.0.weight"] = state["blocks.1.ffn.0.weight"][:-1].contiguous()
    source = tmp_path / "wan_short_row.safetensors"
    save_file(state, str(source))
    name = wan_pack.add_model("diffusion_models", convert(source, tmp_path / "wan_short_row.gguf", "Q8_0",
                                                           progress=False))
    message = _expect_node_error(wan_pack, name)
    assert "wan_short_row.gguf: tensor blocks.1.ffn.0.weight is Q8_0 [511, 256]" in message
    assert "needs [512, 256]" in message and "re-convert it" in message
