""""Load VAE (precision)" and "VAE Decode (bounded memory)" on the host's Wan 2.1 VAE with random weights.

In-process (host objects driven directly): the precision reaches the parameters, the frame-by-frame decode equals
the host's full decode bit for bit, an injected fp16 overflow is redone in fp32, the tiled path equals the host's
own tiler and its error is measured, the stored memory model matches a fresh measurement. Through POST /prompt:
both nodes in a graph, against the host's VAEDecode. Sizes are tiny (16-32 px): the random VAE is slow on CPU,
and fp16 convolutions on CPU are about 15x slower than fp32.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_models import write_random_image
from tests.support.wan_vae_weights import wan21_vae_state_dict, write_wan21_vae

VAE_NAME = "wan21_vae_random.safetensors"
OVERFLOW_VAE_NAME = "wan21_vae_random_overflow.safetensors"


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    """The random VAE (fp16 file) and a copy whose last decoder conv is 1e5x larger (overflows fp16 only)."""
    import_host()
    import folder_paths

    folder = tmp_path_factory.mktemp("vae")
    state_dict = wan21_vae_state_dict()
    write_wan21_vae(folder / VAE_NAME, state_dict)
    write_wan21_vae(folder / OVERFLOW_VAE_NAME, state_dict, overflow_scale=1e5)
    folder_paths.add_model_folder_path("vae", str(folder))
    return folder


@pytest.fixture(scope="module")
def loader():
    return import_pack_module("nodes.vae_loader")


@pytest.fixture(scope="module")
def decode():
    return import_pack_module("nodes.vae_decode")


def _latent(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _host_frames(vae, latent: torch.Tensor) -> torch.Tensor:
    images = vae.decode(latent)
    return images.reshape(-1, *images.shape[-3:])


def _errors(approx: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """Relative RMSE and PSNR (dB, peak 1) of ``approx`` against ``exact``."""
    mse = float((approx - exact).pow(2).mean())
    return (mse / float(exact.pow(2).mean())) ** 0.5, 10 * np.log10(1.0 / mse)


def test_precision_is_applied_to_the_parameters(vae_folder, loader):
    import comfy.model_management

    for precision, expected in [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32),
                                ("auto", None)]:
        result = loader.LoadVAEPrecision.execute(vae_name=VAE_NAME, precision=precision)
        vae = result.args[0]
        if expected is None:
            expected = comfy.model_management.vae_dtype(vae.device, vae.working_dtypes)
        dtypes = {p.dtype for p in vae.first_stage_model.parameters()}
        text = result.ui.as_dict()["text"][0]
        print(f"\n{precision}: parameter dtypes {sorted(map(str, dtypes))}; node says: {text}")
        assert dtypes == {expected} and vae.vae_dtype == expected
        assert f"weights {loader.precision_name(expected)} (asked {precision})" in text


def test_frame_by_frame_decode_equals_the_host_full_decode(vae_folder, loader, decode):
    latent = _latent(frames=3, size=2)  # three latent frames: the third step runs with a full causal cache
    with torch.inference_mode():
        for precision in ("fp32", "bf16"):
            vae = loader.load_vae(str(vae_folder / VAE_NAME), precision)
            ours, summary = decode.decode_bounded(vae, latent)
            reference = _host_frames(vae, latent)
            print(f"\n{precision}: {summary}; max |ours - host| = {float((ours - reference).abs().max())}")
            assert ours.shape == (9, 16, 16, 3)
            assert torch.equal(ours, reference)
            assert "exact frame by frame" in summary


def test_fp16_overflow_is_redone_in_fp32_with_one_warning(vae_folder, loader, decode, caplog):
    latent = _latent(frames=2, size=2, seed=1)
    path = str(vae_folder / OVERFLOW_VAE_NAME)
    with torch.inference_mode():
        vae_fp16 = loader.load_vae(path, "fp16")
        with caplog.at_level(logging.WARNING, logger="wan_accel"):
            images, summary = decode.decode_bounded(vae_fp16, latent)
        reference = _host_frames(loader.load_vae(path, "fp32"), latent)
    warnings = [r.getMessage() for r in caplog.records if r.name == "wan_accel" and r.levelno == logging.WARNING]
    print(f"\n{summary}\nwarning: {warnings}")
    assert warnings == ["wan_accel: fp16 VAE decode overflowed (NaN/Inf) at latent frame 0; redoing this decode "
                        "in fp32"]
    assert "fp16 overflowed at latent frame 0, redone in fp32" in summary
    assert torch.isfinite(images).all()
    assert torch.equal(images, reference)
    assert vae_fp16.vae_dtype == torch.float16  # the shared VAE object is left as it was
    assert next(vae_fp16.first_stage_model.parameters()).dtype == torch.float16


def test_tiled_path_equals_the_host_tiler_and_reports_its_error(vae_folder, loader, decode):
    latent = _latent(frames=2, size=3, seed=2)
    with torch.inference_mode():
        vae = loader.load_vae(str(vae_folder / VAE_NAME), "fp32")
        weights = decode.weight_bytes(vae.first_stage_model, torch.float32)
        budget = weights + decode.decode_memory_model(vae.device).activation_bytes(16, 16, 4) * 1.001
        tiled, summary = decode.decode_bounded(vae, latent, budget_gb=budget / decode.GIB, min_tile_px=16)
        exact = _host_frames(vae, latent)
        host_tiled = vae.decode_tiled(latent, tile_x=2, tile_y=2, overlap=1)
    host_tiled = host_tiled.reshape(-1, *host_tiled.shape[-3:])
    rmse, psnr = _errors(tiled, exact)
    print(f"\n{summary}\ntiling error vs exact decode (random weights, 16 px tiles, 8 px overlap, 24x24 px): "
          f"relative RMSE {rmse:.4f}, PSNR {psnr:.1f} dB")
    assert "tiled 16 px" in summary
    assert torch.equal(tiled, host_tiled)
    # The error against the exact decode is reported, not bounded: with random weights it is 13 dB PSNR, no closer
    # than a constant grey image (12.4 dB). It is not zero: the tiled path really ran.
    assert rmse > 0


def test_stored_memory_model_matches_a_fresh_measurement(vae_folder, loader, decode):
    from wan_accel_kernels.vae.memory_model import measure_step_peaks

    with torch.inference_mode():
        vae = loader.load_vae(str(vae_folder / VAE_NAME), "fp32")
        frames = decode.WanFrameDecoder(vae.first_stage_model, vae.device, torch.float32)
        for size in (2, 4):
            peaks = measure_step_peaks(frames, _latent(frames=3, size=size))
            measured = max(peaks) / 4
            modelled = decode.decode_memory_model(torch.device("cpu")).activation_bytes(size * 8, size * 8, 1)
            print(f"\n{size * 8}x{size * 8} px: measured {measured:.0f} elements at the largest step, model "
                  f"{modelled:.0f} ({modelled / measured - 1:+.2%})")
            assert abs(modelled / measured - 1) < 0.03


def test_cuda_plans_with_the_safety_factor_and_this_hosts_decoder_model(decode):
    """On CUDA the CPU-fitted model is lifted by its safety factor, enough to turn a plan that fits the CPU model
    into a tiled one; the model follows the host's decoder layout."""
    import comfy.ldm.wan.vae

    cpu, cuda = decode.decode_memory_model(torch.device("cpu")), decode.decode_memory_model(torch.device("cuda"))
    streamed = hasattr(comfy.ldm.wan.vae.Decoder3d, "run_up")
    assert cpu == (decode.WAN21_DECODE_STREAMED if streamed else decode.WAN21_DECODE)
    factor = decode.CUDA_SAFETY_FACTOR
    assert factor > 1
    assert cuda.activation_bytes(480, 832, 2) == pytest.approx(factor * cpu.activation_bytes(480, 832, 2))
    weights = 254 * 2 ** 20
    budget = weights + cpu.activation_bytes(480, 832, 2) * (1 + factor) / 2  # fits the CPU model, not the CUDA one
    assert decode.plan_decode((1, 16, 21, 60, 104), torch.float16, weights, budget, memory=cpu).tile is None
    assert decode.plan_decode((1, 16, 21, 60, 104), torch.float16, weights, budget, memory=cuda).tile is not None


def test_out_of_memory_is_retried_tiled_with_one_warning(vae_folder, loader, decode, monkeypatch, caplog):
    latent = _latent(frames=2, size=3, seed=4)
    real = decode.decode_frame_by_frame
    calls = []

    def exact_path_runs_out_of_memory(frames, tile, **kwargs):
        calls.append(tuple(tile.shape))
        if tile.shape[-1] == latent.shape[-1]:  # the untiled decode
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(frames, tile, **kwargs)

    monkeypatch.setattr(decode, "decode_frame_by_frame", exact_path_runs_out_of_memory)
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="wan_accel"):
        vae = loader.load_vae(str(vae_folder / VAE_NAME), "fp32")
        images, summary = decode.decode_bounded(vae, latent, budget_gb=4.0, min_tile_px=16)
        host_tiled = vae.decode_tiled(latent, tile_x=2, tile_y=2, overlap=1)  # 16 px tiles, overlap tile / 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "wan_accel" and r.levelno == logging.WARNING]
    print(f"\n{summary}\n{warnings}")
    assert len(warnings) == 1 and "ran out of device memory with a budget of 4.00 GiB" in warnings[0]
    assert "out of memory at a 4.00 GiB budget, retried within" in summary and "tiled 16 px" in summary
    assert calls[0] == tuple(latent.shape) and len(calls) > 1
    # The retry is the host's own tiled decode, bit for bit. No bound against the exact decode would mean much here:
    # with random weights, 16 px tiles of a 24 px image are 13 dB PSNR from it, a constant grey image 12.4 dB.
    assert torch.equal(images, host_tiled.reshape(-1, *host_tiled.shape[-3:]))


def _decode_graph(image: str) -> dict:
    """LoadImage x5 frames -> VAEEncode with "Load VAE (precision)" -> host VAEDecode and ours -> SaveImage each."""
    return {
        "1": {"class_type": "WanAccelLoadVAE", "inputs": {"vae_name": VAE_NAME, "precision": "fp32"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": image}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 5}},
        "4": {"class_type": "VAEEncode", "inputs": {"pixels": ["3", 0], "vae": ["1", 0]}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 0]}},
        "6": {"class_type": "WanAccelVAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 0],
                                                             "memory_budget_gb": 0.0}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "vae/host"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "vae/ours"}},
    }


def test_graph_decode_matches_the_host_vae_decode(wan_pack, vae_folder, tmp_path):
    wan_pack.add_model("vae", vae_folder / VAE_NAME)
    image = wan_pack.add_input(write_random_image(tmp_path / "start.png", 32, 32, seed=3))
    history = wan_pack.run(_decode_graph(image))
    host_files, our_files = wan_pack.output_files(history, "images", "7"), wan_pack.output_files(history, "images", "8")
    print(f"\nloader: {history['outputs']['1']['text'][0]}\ndecode: {history['outputs']['6']['text'][0]}")
    assert len(host_files) == len(our_files) == 5
    for host_file, our_file in zip(host_files, our_files):
        assert np.array_equal(np.asarray(Image.open(host_file)), np.asarray(Image.open(our_file)))
    assert "weights fp32 (asked fp32)" in history["outputs"]["1"]["text"][0]
    assert "5 frames 32x32, fp32, exact frame by frame" in history["outputs"]["6"]["text"][0]
