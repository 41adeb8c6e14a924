"""Our GGUF model inside the host's ModelPatcher: resident memory, low-VRAM partial loading, LoRA after dequant.

Drives the real host objects in-process (``comfy.model_patcher``, ``comfy.lora``), on CPU.
"""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.gguf import dequantize
from wan_accel_kernels.gguf.reader import read_gguf
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_gguf_dit import dit_inputs, loaded_forward, write_tiny_gguf_dit
from tests.support.tiny_models import tiny_wan_i2v_state_dict, tiny_wan_lora_state_dict

DIT_SHAPE = dict(dim=256, layers=2, ffn=512)


@pytest.fixture(scope="module")
def q6k_file(tmp_path_factory):
    return write_tiny_gguf_dit(tmp_path_factory.mktemp("gguf_patcher"), **DIT_SHAPE)


@pytest.fixture(scope="module")
def host():
    import_host()
    import comfy.lora
    import comfy.model_patcher
    import comfy.sd
    return comfy


def _with_lora(host, patcher, strength: float = 1.0):
    lora = {k: v for k, v in tiny_wan_lora_state_dict(tiny_wan_i2v_state_dict(**DIT_SHAPE)).items()}
    patched, _ = host.sd.load_lora_for_models(patcher, None, lora, strength, 0.0)
    return patched


def _dequantized_state_dict(path) -> dict[str, torch.Tensor]:
    return {name: (t.to_float_tensor().float() if t.is_float else dequantize(t.data, t.qtype, t.shape)).clone()
            for name, t in read_gguf(path).tensors.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_resident_weight_bytes_match_the_file(host, q6k_file):
    loaded = import_pack_module("nodes.gguf_model").load_wan_gguf(q6k_file, "fp32")
    file_size = q6k_file.stat().st_size
    quantised_in_file = [t for t in read_gguf(q6k_file).tensors.values() if not t.is_float]
    quantised = [m for m in loaded.patcher.model.diffusion_model.modules() if getattr(m, "gguf_qtype", None)]
    print(f"resident {loaded.resident_weight_bytes} B, file {file_size} B, ratio "
          f"{loaded.resident_weight_bytes / file_size:.4f}; {len(quantised)} quantised layers")
    assert len(quantised) == len(quantised_in_file) == 2 * 12
    assert all(m.weight.dtype == torch.uint8 for m in quantised)
    assert 0.97 < loaded.resident_weight_bytes / file_size <= 1.0


def test_full_and_partial_loads_apply_lora_after_dequantisation(host, q6k_file):
    gguf_model = import_pack_module("nodes.gguf_model")
    reference = host.sd.load_diffusion_model_state_dict(_dequantized_state_dict(q6k_file),
                                                        model_options={"dtype": torch.float32})
    expected_plain = loaded_forward(reference, 0)
    expected_lora = loaded_forward(_with_lora(host, reference), 0)

    loaded = gguf_model.load_wan_gguf(q6k_file, "fp32").patcher
    plain = loaded_forward(loaded, 0)
    full_lora = loaded_forward(_with_lora(host, loaded), 0)
    partial_lora = loaded_forward(_with_lora(host, loaded), 1)

    lora_effect = _rel(expected_lora, expected_plain)
    errors = {"plain": _rel(plain, expected_plain), "full load + LoRA": _rel(full_lora, expected_lora),
              "partial load + LoRA": _rel(partial_lora, expected_lora)}
    print(f"LoRA changes the output by {lora_effect:.4f}; relative error vs the float model: {errors}")
    assert lora_effect > 0.05
    for name, error in errors.items():
        assert error < 1e-5, name
    quantised = [m for m in loaded.model.diffusion_model.modules() if getattr(m, "gguf_qtype", None)]
    assert all(m.weight.dtype == torch.uint8 for m in quantised), "unpatch must restore the raw blocks"


def test_memory_estimate_reserves_the_measured_dequant_peak(host, q6k_file):
    from wan_accel_kernels.memory_probe import LiveTensorBytes

    loaded = import_pack_module("nodes.gguf_model").load_wan_gguf(q6k_file, "bf16")
    model = loaded.patcher.model
    peaks = {}
    for name, module in model.diffusion_model.named_modules():
        if getattr(module, "gguf_qtype", None) is not None:
            with LiveTensorBytes() as counter:  # the PyTorch path the layer takes on CPU, seen op by op
                weight = dequantize(module.weight, module.gguf_qtype, module.gguf_shape, torch.bfloat16)
            peaks[name] = (counter.peak, weight.nbytes)
            del weight
    largest = max(peaks, key=lambda name: peaks[name][0])
    noise_shape = [2, 16, 2, 8, 8]
    host_estimate = type(model).memory_required(model, noise_shape)
    reserve = model.memory_required(noise_shape) - host_estimate
    x, timestep, context = dit_inputs()
    with torch.no_grad(), LiveTensorBytes() as forward:
        model.diffusion_model(x.to(torch.bfloat16), timestep, context.to(torch.bfloat16))
    print(f"\nlargest layer {largest}: dequant peak measured {peaks[largest][0]} B (output {peaks[largest][1]} B); "
          f"reserved {reserve:.0f} B on top of the host's {host_estimate:.0f} B; whole forward peak {forward.peak} B")
    assert reserve == model.wan_accel_dequant_reserve == peaks[largest][0]
    assert peaks[largest][0] > peaks[largest][1]  # the PyTorch path's scratch is counted, not only the output
    assert forward.peak >= reserve


def test_each_loaded_model_keeps_its_own_triton_failures(host, q6k_file, monkeypatch):
    gguf_model, gguf_ops = import_pack_module("nodes.gguf_model"), import_pack_module("nodes.gguf_ops")
    backend = import_pack_module("wan_accel_kernels.gguf.backend")
    first, second = (gguf_model.load_wan_gguf(q6k_file, "bf16").patcher.model for _ in range(2))

    def layers(model) -> list:
        return [m for m in model.diffusion_model.modules() if getattr(m, "gguf_qtype", None) is not None]

    owners = [{id(layer.gguf_failures) for layer in layers(model)} for model in (first, second)]
    assert len(owners[0]) == len(owners[1]) == 1 and owners[0] != owners[1]
    seen = []
    real = gguf_ops.dequantize_on_device

    def spy(*args, failures=None, **kwargs):
        seen.append(failures)
        return real(*args, failures=failures, **kwargs)

    monkeypatch.setattr(gguf_ops, "dequantize_on_device", spy)
    layer = layers(first)[0]
    layer.dequantized_weight(torch.bfloat16, torch.device("cpu"))
    assert seen == [layer.gguf_failures]
    cuda = torch.device("cuda")
    layer.gguf_failures.record(cuda, layer.gguf_qtype, torch.bfloat16, "the Triton kernel failed (test)")
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    after_failure = backend.choose_path_on(cuda, layer.gguf_qtype, torch.bfloat16, layer.gguf_failures)
    other_model = backend.choose_path_on(cuda, layer.gguf_qtype, torch.bfloat16, layers(second)[0].gguf_failures)
    print(f"\nafter a failure in model 1: {after_failure}; model 2: {other_model}")
    assert after_failure == ("torch", "the Triton kernel failed (test)")
    assert other_model[1] != "the Triton kernel failed (test)"
