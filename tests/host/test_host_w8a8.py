"""W8A8 block linears on "Load Wan DiT (GGUF)": fidelity through ``POST /prompt`` beside Q6_K's, resident bytes,
low-VRAM partial loading and LoRA in the host's ModelPatcher, and the 16-bit fallback on a GPU without 8-bit units.

End to end: tiny dim-256 DiT -> our converter -> Q6_K / Q8_0 GGUF -> the loader with each ``compute`` -> KSampler,
output latent compared with the host's UNETLoader on the unquantised file (as test_host_gguf_loader.py does).
"""
from __future__ import annotations

import logging

import pytest
import torch

from tests.support import graphs
from tests.support.comfy_server import read_latent
from tests.support.fake_cuda import fake_cuda_device
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_gguf_dit import loaded_forward
from tests.support.tiny_models import (tiny_wan_i2v_state_dict, tiny_wan_lora_state_dict, write_tiny_wan_i2v,
                                       write_tiny_wan_lora)
from wan_accel.convert import convert

DIT_SHAPE = dict(dim=256, layers=2, ffn=512)
BLOCK_LINEARS = 2 * 12  # per block: self q/k/v/o, cross q/k/v/o/k_img/v_img, ffn.0, ffn.2


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w8a8_files")
    source = write_tiny_wan_i2v(folder / "wan_tiny256_w8a8.safetensors", **DIT_SHAPE)
    return {"source": source, **{q: convert(source, folder / f"wan_tiny256_w8a8-{q}.gguf", q, progress=False)
                                 for q in ("Q6_K", "Q8_0")}}


@pytest.fixture(scope="module")
def models(wan_pack, files):
    return {name: wan_pack.add_model("diffusion_models", path) for name, path in files.items()}


def _loader(name: str, compute: str) -> tuple[str, dict]:
    return "WanAccelLoadDiTGGUF", {"unet_name": name, "compute_dtype": "fp32", "compute": compute}


def _run(server, loader, prefix: str, **kw) -> tuple[torch.Tensor, dict]:
    history = server.run(graphs.tiny_i2v_graph(loader=loader, filename_prefix=f"latents/{prefix}", **kw))
    return read_latent(server.output_files(history, "latents")[0]), history


def test_w8a8_graphs_against_the_unquantised_graph_beside_q6k(wan_pack, models):
    reference, _ = _run(wan_pack, graphs.unet_loader(models["source"]), "w8a8_ref")
    runs = {"Q6_K, bf16/fp16 (winner)": (models["Q6_K"], "bf16/fp16"),
            "Q6_K, int8 W8A8": (models["Q6_K"], "int8 W8A8"),
            "Q8_0, int8 W8A8": (models["Q8_0"], "int8 W8A8"),
            "Q6_K, fp8 W8A8 (emulated on CPU)": (models["Q6_K"], "fp8 W8A8")}
    errors, summaries = {}, {}
    for label, (name, compute) in runs.items():
        latent, history = _run(wan_pack, _loader(name, compute), label.split(",")[0] + compute.split()[0])
        assert latent.shape == reference.shape and torch.isfinite(latent).all(), label
        errors[label] = _rel(latent, reference)
        summaries[label] = history["outputs"][graphs.NODE["model"]]["text"][0]
    print("\noutput latent relative L2 vs UNETLoader (unquantised):")
    for label, error in errors.items():
        print(f"  {label:34} {error:.5f}")
    print(f"node output: {summaries['Q6_K, int8 W8A8']}")
    q6k = errors["Q6_K, bf16/fp16 (winner)"]
    assert 0 < q6k < errors["Q6_K, int8 W8A8"] < 2.5 * q6k
    assert errors["Q8_0, int8 W8A8"] < errors["Q6_K, int8 W8A8"]
    assert errors["Q6_K, fp8 W8A8 (emulated on CPU)"] < 6 * q6k
    assert f"int8 W8A8 block linears x{BLOCK_LINEARS}" in summaries["Q6_K, int8 W8A8"]
    assert "emulated" in summaries["Q6_K, fp8 W8A8 (emulated on CPU)"]
    assert "W8A8" not in summaries["Q6_K, bf16/fp16 (winner)"]


def test_a_loras_effect_on_w8a8_matches_the_unquantised_graphs(wan_pack, models):
    base_sd = tiny_wan_i2v_state_dict(**DIT_SHAPE)
    lora = wan_pack.add_model("loras", lambda path: write_tiny_wan_lora(path, base_sd), "wan_tiny256_w8a8_lora.safetensors")
    reference, _ = _run(wan_pack, graphs.unet_loader(models["source"]), "w8a8_ref_plain")
    reference_lora, _ = _run(wan_pack, graphs.unet_loader(models["source"]), "w8a8_ref_lora", lora_name=lora)
    q6k_plain, _ = _run(wan_pack, _loader(models["Q6_K"], "bf16/fp16"), "w8a8_q6k_plain")
    q6k_lora, _ = _run(wan_pack, _loader(models["Q6_K"], "bf16/fp16"), "w8a8_q6k_lora", lora_name=lora)
    plain, _ = _run(wan_pack, _loader(models["Q6_K"], "int8 W8A8"), "w8a8_plain")
    patched, _ = _run(wan_pack, _loader(models["Q6_K"], "int8 W8A8"), "w8a8_lora", lora_name=lora)
    effect = reference_lora - reference
    errors = {"Q6_K bf16": (_rel(q6k_plain, reference), _rel(q6k_lora, reference_lora),
                            _rel(q6k_lora - q6k_plain, effect)),
              "Q6_K int8 W8A8": (_rel(plain, reference), _rel(patched, reference_lora), _rel(patched - plain, effect))}
    print(f"\nLoRA moves the unquantised output by {_rel(reference_lora, reference):.4f}; relative L2 vs the "
          "unquantised graph (plain, with LoRA) and of the LoRA's effect (patched - plain):")
    for label, (plain_error, lora_error, effect_error) in errors.items():
        print(f"  {label:15} plain {plain_error:.5f}  with LoRA {lora_error:.5f}  effect {effect_error:.4f}")
    w8a8_plain, w8a8_lora, w8a8_effect = errors["Q6_K int8 W8A8"]
    q6k_plain_error, q6k_lora_error, q6k_effect = errors["Q6_K bf16"]
    assert _rel(reference_lora, reference) > 5 * w8a8_lora
    assert w8a8_lora / q6k_lora_error < 2.5 * w8a8_plain / q6k_plain_error
    assert w8a8_effect < 3 * q6k_effect


@pytest.fixture(scope="module")
def host():
    import_host()
    import comfy.model_patcher
    import comfy.sd
    return comfy


def _forward(patcher, lowvram_bytes: int) -> torch.Tensor:
    return loaded_forward(patcher, lowvram_bytes)


def _with_lora(host, patcher):
    lora = tiny_wan_lora_state_dict(tiny_wan_i2v_state_dict(**DIT_SHAPE))
    return host.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)[0]


def _w8a8_layers(patcher) -> dict[str, torch.nn.Module]:
    is_w8a8 = import_pack_module("nodes.w8a8_ops").is_w8a8
    return {name: m for name, m in patcher.model.diffusion_model.named_modules() if is_w8a8(m)}


def test_resident_bytes_of_8_bit_weights_and_of_gguf_blocks(host, files):
    gguf_model = import_pack_module("nodes.gguf_model")
    gguf = gguf_model.load_wan_gguf(files["Q6_K"], "fp32")
    int8 = gguf_model.load_wan_gguf(files["Q6_K"], "fp32", "int8 W8A8")
    layers = _w8a8_layers(int8.patcher)
    block_int8 = sum(m.weight.nbytes for m in layers.values())
    block_q6k = sum(m.weight.nbytes for name, m in gguf.patcher.model.diffusion_model.named_modules()
                    if name in layers)
    print(f"\nresident weights: GGUF Q6_K {gguf.resident_weight_bytes} B (block linears {block_q6k} B), "
          f"int8 W8A8 {int8.resident_weight_bytes} B (block linears {block_int8} B, {block_int8 / block_q6k:.3f}x)")
    assert len(layers) == BLOCK_LINEARS and all(m.weight.dtype == torch.uint8 for m in layers.values())
    assert block_int8 == sum(m.out_features * (m.in_features + 8) for m in layers.values())
    assert int8.resident_weight_bytes - gguf.resident_weight_bytes == block_int8 - block_q6k


def test_partial_loading_and_lora_on_w8a8_match_the_full_load(host, files):
    gguf_model = import_pack_module("nodes.gguf_model")
    loaded = gguf_model.load_wan_gguf(files["Q6_K"], "fp32", "int8 W8A8").patcher
    before = {name: m.weight.clone() for name, m in _w8a8_layers(loaded).items()}
    full, partial = _forward(loaded, 0), _forward(loaded, 1)
    full_lora, partial_lora = _forward(_with_lora(host, loaded), 0), _forward(_with_lora(host, loaded), 1)
    errors = {"partial vs full": _rel(partial, full), "partial + LoRA vs full + LoRA": _rel(partial_lora, full_lora)}
    print(f"\nLoRA changes the W8A8 output by {_rel(full_lora, full):.4f}; {errors}")
    assert _rel(full_lora, full) > 0.05
    for name, error in errors.items():
        assert error < 1e-5, name
    after = _w8a8_layers(loaded)
    assert all(torch.equal(after[name].weight, weight) for name, weight in before.items()), \
        "unpatch must restore the original 8-bit bytes"


def test_a_gpu_without_8_bit_tensor_cores_falls_back_to_16_bits_once(host, caplog, monkeypatch):
    """torch reports a GTX 1080 (sm61); the pack's own capability check in ``w8a8/support.py`` turns it down."""
    gguf_model = import_pack_module("nodes.gguf_model")
    support = import_pack_module("wan_accel_kernels.w8a8.support")
    reason = "NVIDIA GeForce GTX 1080 (sm61) has no int8 tensor cores (needs sm75+)"
    monkeypatch.setattr(gguf_model, "_fallbacks_logged", set())
    with fake_cuda_device(support, (6, 1), "NVIDIA GeForce GTX 1080"), caplog.at_level(logging.WARNING,
                                                                                        logger="wan_accel"):
        first = gguf_model.choose_w8a8("int8 W8A8", torch.device("cuda"))
        second = gguf_model.choose_w8a8("int8 W8A8", torch.device("cuda"))
        bf16 = gguf_model.choose_w8a8("bf16/fp16", torch.device("cuda"))
    print(f"\n{first[1]}")
    assert gguf_model.matmul_support is support.matmul_support  # the real check, not a stand-in
    assert first == second == (None, f"int8 W8A8 unavailable, block linears compute in 16 bits: {reason}")
    assert sum(reason in record.getMessage() for record in caplog.records) == 1
    assert bf16 == (None, "")
