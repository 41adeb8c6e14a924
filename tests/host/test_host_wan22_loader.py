"""Wan 2.2 I2V A14B, both experts, through "Load Wan DiT (GGUF)" on the real host (``POST /prompt``, CPU).

The graph is the host template's pattern (``tests/support/wan22_graphs.py``): one loader per expert, a
``LoraLoaderModelOnly`` on each (strength 3.0 on the high-noise expert, 1.0 on the low-noise one, as users run the
lightx2v 4-step LoRAs), ``ModelSamplingSD3`` shift 5, two ``KSamplerAdvanced`` switching after step 2 of 4, cfg 1.

* Q6_K / Q8_0 / Q4_K experts (bf16/fp16 path) and int8 / fp8 W8A8 experts equal the host's ``UNETLoader`` graph on the
  unquantised files within each type's bound: half the mean relative RMSE of that type's block weights (measured:
  0.15x to 0.16x for all three types; test_host_gguf_loader.py allows 3x for Wan 2.1), and W8A8 within 2.5x (int8)
  / 6x (fp8) of Q6_K's error.
* With the LoRAs on both experts the GGUF graph equals the float model holding the same (dequantised) weights with
  the same LoRAs through the host's own ``LoraLoaderModelOnly``, to fp32 rounding; W8A8 within its bound.
* Resident bytes of both experts together are the same with and without the LoRAs: no dense copy of either expert.
* A Wan 2.2 TI2V 5B file is refused, naming the file, and the server keeps running.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.support.comfy_server import ExecutionFailed, read_latent
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_gguf_dit import dit_inputs
from tests.support.tiny_wan22 import (EXPERTS, expert_file_name, tiny_wan22_expert_state_dict,
                                      tiny_wan22_lora_state_dict, write_tiny_wan22_expert, write_tiny_wan22_gguf_expert,
                                      write_tiny_wan22_lora, write_tiny_wan22_ti2v_gguf)
from tests.support.wan22_graphs import two_expert_graph
from wan_accel_kernels.gguf import dequantize
from wan_accel_kernels.gguf.reader import read_gguf

STRENGTHS = {"high": 3.0, "low": 1.0}
QTYPES = ("Q6_K", "Q8_0", "Q4_K")
TI2V_NAME = "wan2.2_ti2v_5B-Q8_0.gguf"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _dequantized(path) -> dict[str, torch.Tensor]:
    return {name: (t.to_float_tensor().float() if t.is_float else dequantize(t.data, t.qtype, t.shape)).clone()
            for name, t in read_gguf(path).tensors.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict]:
    """Per expert: the unquantised file, each GGUF type, the dequantised Q6_K weights as safetensors, the LoRA."""
    folder = tmp_path_factory.mktemp("wan22_files")
    out: dict[str, dict] = {}
    for expert in EXPERTS:
        entry = {"source": write_tiny_wan22_expert(folder / expert_file_name(expert, ".safetensors"), expert)}
        entry.update({q: write_tiny_wan22_gguf_expert(folder, expert, q) for q in QTYPES})
        entry["Q6_K float"] = folder / expert_file_name(expert, "-Q6_K-dequantised.safetensors")
        save_file(_dequantized(entry["Q6_K"]), str(entry["Q6_K float"]))
        entry["lora"] = write_tiny_wan22_lora(folder / f"wan22_tiny_lightning_{expert}.safetensors", expert)
        out[expert] = entry
    out["ti2v"] = {"gguf": write_tiny_wan22_ti2v_gguf(folder / TI2V_NAME)}
    return out


@pytest.fixture(scope="module")
def models(wan_pack, files) -> dict[str, dict[str, str]]:
    """The graph names of ``files`` on the host (LoRAs in models/loras, the rest in models/diffusion_models)."""
    return {expert: {kind: wan_pack.add_model("loras" if kind == "lora" else "diffusion_models", path)
                     for kind, path in entry.items()} for expert, entry in files.items()}


def _gguf(name: str, compute: str = "bf16/fp16", dtype: str = "fp32") -> tuple[str, dict]:
    return "WanAccelLoadDiTGGUF", {"unet_name": name, "compute_dtype": dtype, "compute": compute}


def _unet(name: str) -> tuple[str, dict]:
    return "UNETLoader", {"unet_name": name, "weight_dtype": "default"}


def _run(server, models, kind: str, make, prefix: str, loras: bool = False) -> tuple[torch.Tensor, dict]:
    lora_inputs = {e: (models[e]["lora"], STRENGTHS[e]) for e in EXPERTS} if loras else None
    graph = two_expert_graph(make(models["high"][kind]), make(models["low"][kind]), loras=lora_inputs,
                             filename_prefix=f"latents/{prefix}")
    history = server.run(graph)
    return read_latent(server.output_files(history, "latents")[0]), history


def _weight_rmse(files, qtype: str) -> float:
    """Mean relative RMSE of both experts' block weights stored as ``qtype``."""
    errors = []
    for expert in EXPERTS:
        reference = tiny_wan22_expert_state_dict(expert)
        errors += [_rel(dequantize(t.data, t.qtype, t.shape), reference[name])
                   for name, t in read_gguf(files[expert][qtype]).tensors.items() if t.qtype.name == qtype]
    return float(np.mean(errors))


def test_both_experts_match_the_unetloader_graph_within_each_types_bound(wan_pack, models, files):
    reference, _ = _run(wan_pack, models, "source", _unet, "wan22_ref")
    runs = {"Q6_K": ("Q6_K", "bf16/fp16"), "Q8_0": ("Q8_0", "bf16/fp16"), "Q4_K": ("Q4_K", "bf16/fp16"),
            "Q6_K int8 W8A8": ("Q6_K", "int8 W8A8"), "Q6_K fp8 W8A8 (emulated)": ("Q6_K", "fp8 W8A8")}
    errors, texts = {}, {}
    for label, (kind, compute) in runs.items():
        latent, history = _run(wan_pack, models, kind, lambda n, c=compute: _gguf(n, c), f"wan22_{kind}_{compute[:4]}")
        assert latent.shape == reference.shape and torch.isfinite(latent).all(), label
        errors[label] = _rel(latent, reference)
        texts[label] = [history["outputs"][node]["text"][0] for node in ("11", "12")]
    bounds = {q: 0.5 * _weight_rmse(files, q) for q in QTYPES}
    bounds["Q6_K int8 W8A8"], bounds["Q6_K fp8 W8A8 (emulated)"] = 2.5 * errors["Q6_K"], 6 * errors["Q6_K"]
    print("\ntwo-expert output latent, relative L2 vs UNETLoader on the unquantised experts (bound):")
    for label, error in errors.items():
        print(f"  {label:26} {error:.5f}  (< {bounds[label]:.5f})")
    print(f"node outputs: {texts['Q6_K'][0]}\n              {texts['Q6_K int8 W8A8'][1]}")
    assert all(0 < errors[label] < bounds[label] for label in errors), errors
    assert errors["Q8_0"] < errors["Q6_K"] < errors["Q4_K"]
    for expert, text in zip(EXPERTS, texts["Q6_K"]):
        assert text.startswith(f"{expert_file_name(expert, '-Q6_K.gguf')} (Wan 2.2 I2V A14B expert): F32 x49, Q6_K x20")
    assert all("int8 W8A8 block linears x20" in text for text in texts["Q6_K int8 W8A8"])


def test_loras_on_both_experts_equal_the_float_model_with_the_same_loras(wan_pack, models):
    float_plain, _ = _run(wan_pack, models, "Q6_K float", _unet, "wan22_float_plain")
    float_lora, _ = _run(wan_pack, models, "Q6_K float", _unet, "wan22_float_lora", loras=True)
    source_lora, _ = _run(wan_pack, models, "source", _unet, "wan22_source_lora", loras=True)
    gguf_lora, _ = _run(wan_pack, models, "Q6_K", _gguf, "wan22_gguf_lora", loras=True)
    int8_plain, _ = _run(wan_pack, models, "Q6_K", lambda n: _gguf(n, "int8 W8A8"), "wan22_int8_plain")
    int8_lora, _ = _run(wan_pack, models, "Q6_K", lambda n: _gguf(n, "int8 W8A8"), "wan22_int8_lora", loras=True)
    effect = _rel(float_lora, float_plain)
    errors = {"Q6_K + LoRAs vs float + LoRAs": _rel(gguf_lora, float_lora),
              "Q6_K + LoRAs vs unquantised + LoRAs": _rel(gguf_lora, source_lora),
              "int8 W8A8 plain vs float": _rel(int8_plain, float_plain),
              "int8 W8A8 + LoRAs vs float + LoRAs": _rel(int8_lora, float_lora)}
    print(f"\nLoRAs (high x{STRENGTHS['high']}, low x{STRENGTHS['low']}) move the float output by {effect:.4f}; "
          "relative L2:")
    for label, error in errors.items():
        print(f"  {label:38} {error:.2e}")
    assert effect > 0.1
    assert errors["Q6_K + LoRAs vs float + LoRAs"] < 1e-4  # same weights, same LoRAs: fp32 rounding only
    assert errors["Q6_K + LoRAs vs unquantised + LoRAs"] < effect / 5
    assert errors["int8 W8A8 + LoRAs vs float + LoRAs"] < 2.5 * errors["int8 W8A8 plain vs float"]


@pytest.fixture(scope="module")
def host():
    import_host()
    import comfy.lora
    import comfy.sd
    return comfy


def _resident(patchers) -> tuple[int, list[torch.Tensor], tuple[int, int]]:
    """Bytes of every parameter and buffer of the fully loaded ``patchers`` together, one forward of each, and
    (linears holding 8-bit or raw GGUF bytes, those of them applying a LoRA per forward) while loaded."""
    outputs, total, raw, side = [], 0, 0, 0
    for patcher in patchers:
        patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=0)
    try:
        for patcher in patchers:
            total += sum(p.nbytes for p in patcher.model.parameters()) + sum(b.nbytes for b in patcher.model.buffers())
            linears = [m for m in patcher.model.diffusion_model.modules()
                       if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.uint8]
            raw += len(linears)
            side += sum(getattr(m, "gguf_patches", None) is not None for m in linears)
            with torch.no_grad():
                outputs.append(patcher.model.diffusion_model(*dit_inputs(seed=5)))
    finally:
        for patcher in patchers:
            patcher.unpatch_model()
    return total, outputs, (raw, side)


@pytest.mark.parametrize("compute", ["bf16/fp16", "int8 W8A8"])
def test_both_experts_with_loras_keep_their_resident_bytes(host, files, compute):
    gguf_model = import_pack_module("nodes.gguf_model")
    plain = [gguf_model.load_wan_gguf(files[e]["Q6_K"], "fp32", compute).patcher for e in EXPERTS]
    loras = {e: tiny_wan22_lora_state_dict(tiny_wan22_expert_state_dict(e), seed=100 + {"high": 22, "low": 23}[e])
             for e in EXPERTS}
    patched = [host.sd.load_lora_for_models(p, None, loras[e], STRENGTHS[e], 0.0)[0] for p, e in zip(plain, EXPERTS)]
    plain_bytes, plain_out, _ = _resident(plain)
    lora_bytes_resident, lora_out, (raw_layers, side_paths) = _resident(patched)
    lora_bytes = sum(t.nbytes for lora in loras.values() for k, t in lora.items() if not k.endswith(".alpha"))
    sizes = [(p.model_size(), q.model_size()) for p, q in zip(plain, patched)]
    print(f"\n{compute}: both Q6_K experts resident {plain_bytes} B without LoRAs, {lora_bytes_resident} B with "
          f"(LoRA tensors {lora_bytes} B, held by the patchers); host model sizes {sizes}; LoRA effect "
          f"{[round(_rel(a, b), 3) for a, b in zip(lora_out, plain_out)]}")
    assert lora_bytes_resident == plain_bytes  # no dense copy of either expert
    assert sum(q - p for p, q in sizes) >= lora_bytes  # the host budgets the LoRA tensors
    assert all(_rel(a, b) > 0.05 for a, b in zip(lora_out, plain_out))
    assert raw_layers == side_paths == 2 * 20  # every block linear of both experts: 8-bit/raw bytes + LoRA side path


def test_a_wan22_5b_file_is_refused_by_name_and_the_server_keeps_running(wan_pack, models):
    ti2v = models["ti2v"]["gguf"]
    with pytest.raises(ExecutionFailed) as failure:
        _run(wan_pack, {"high": {"x": ti2v}, "low": {"x": ti2v}}, "x", _gguf, "wan22_5b")
    message = str(failure.value)
    print(f"\n{message.splitlines()[0]}")
    assert (f"{TI2V_NAME} is a Wan 2.2 TI2V 5B model (48-channel latents); this loader supports Wan 2.1 I2V 14B "
            "and Wan 2.2 I2V A14B experts") in message
    latent, _ = _run(wan_pack, models, "Q8_0", _gguf, "wan22_after_5b")
    assert torch.isfinite(latent).all()


def test_the_lightning_loras_load_every_key_on_the_expert(host, files):
    """Every key of the lightx2v-style file maps onto the expert: none is dropped as "lora key not loaded"."""
    gguf_model = import_pack_module("nodes.gguf_model")
    patcher = gguf_model.load_wan_gguf(files["low"]["Q6_K"], "fp32").patcher
    lora = tiny_wan22_lora_state_dict(tiny_wan22_expert_state_dict("low"))
    key_map = host.lora.model_lora_keys_unet(patcher.model, {})
    patches = host.lora.load_lora(lora, key_map)
    assert len(patches) == len(lora) // 3 == 2 * 10


@pytest.mark.parametrize("expert", EXPERTS)
def test_each_expert_computes_in_bf16_on_the_16_bit_path(host, files, expert):
    """``compute_dtype`` bf16 (what the host picks on a bf16 GPU), bf16 inputs as the host's ``apply_model`` casts
    them: the forward runs in bf16 and equals the fp32 one to bf16 rounding."""
    gguf_model = import_pack_module("nodes.gguf_model")
    outputs = {}
    for choice, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        patcher = gguf_model.load_wan_gguf(files[expert]["Q6_K"], choice).patcher
        patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=0)
        try:
            with torch.no_grad():
                outputs[dtype] = patcher.model.diffusion_model(*(t.to(dtype) for t in dit_inputs(seed=5)))
        finally:
            patcher.unpatch_model()
    error = _rel(outputs[torch.bfloat16].float(), outputs[torch.float32])
    print(f"\n{expert}-noise expert, Q6_K, bf16 vs fp32 compute: relative L2 {error:.4f}")
    assert outputs[torch.bfloat16].dtype == torch.bfloat16 and 0 < error < 0.02
