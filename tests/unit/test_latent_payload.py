"""The split run's payloads (``wan_accel_kernels/latent_payload.py``): exact fp32 round trip, bf16 and int8
within their rounding bounds, the bytes each format puts on the wire, refusal of corrupted payloads and of
payloads of another run (shape, seed, steps, split step, sampling), each by name; the history kind (stage A's
predictions with their sigmas, each tensor with its own int8 scales) and refusal of the other kind."""
from __future__ import annotations

import math
import re

import pytest
import torch

from wan_accel_kernels.latent_payload import (INT8_BLOCK, INT8_LEVELS, MAGIC, PayloadError, RunKey, decode_history,
                                              decode_payload, encode_history, encode_payload, read_header)

SHAPE = (1, 16, 3, 6, 10)   # 2880 values: 45 int8 blocks of 64, 16 channels of 180
KEY = RunKey(SHAPE, seed=7, steps=8, split_step=3)


def leftover_latent(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    """A latent as stage A leaves it: mostly noise, channels of different scales (one 20x the others)."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(shape, generator=generator)
    latent[:, 5] *= 20.0
    return latent


def encode(latent: torch.Tensor, fmt: str, **key) -> bytes:
    fields = {"seed": KEY.seed, "steps": KEY.steps, "split_step": KEY.split_step, **key}
    return encode_payload(latent, fmt, **fields)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp32_round_trip_is_bit_exact_in_the_latents_own_dtype(dtype):
    latent = leftover_latent().to(dtype)
    back = decode_payload(encode(latent, "fp32"), KEY)
    assert back.dtype == dtype and back.shape == SHAPE
    assert torch.equal(back, latent)


def test_bf16_is_the_latent_rounded_to_bf16_within_half_an_ulp():
    latent = leftover_latent()
    back = decode_payload(encode(latent, "bf16"), KEY)
    assert back.dtype == torch.float32
    assert torch.equal(back, latent.to(torch.bfloat16).float())
    assert float(((back - latent).abs() / latent.abs()).max()) <= 2.0 ** -8
    assert 0 < rel_l2(back, latent) < 2.0 ** -8


def test_int8_block_error_is_at_most_half_a_step_of_its_block():
    latent = leftover_latent()
    back = decode_payload(encode(latent, "int8"), KEY)
    flat, error = latent.reshape(-1), (back - latent).reshape(-1).abs()
    blocks = math.ceil(flat.numel() / INT8_BLOCK)
    padded = torch.zeros(blocks * INT8_BLOCK)
    padded[:flat.numel()] = flat
    step = (padded.reshape(blocks, INT8_BLOCK).abs().amax(dim=1) / INT8_LEVELS).repeat_interleave(INT8_BLOCK)
    assert bool((error <= step[:flat.numel()] / 2 * (1 + 1e-6)).all())
    assert 0 < rel_l2(back, latent) < 0.01


def test_int8_channel_error_is_at_most_half_a_step_of_its_channel_and_blocks_beat_channels():
    latent = leftover_latent()
    back = decode_payload(encode(latent, "int8-channel"), KEY)
    step = latent.abs().amax(dim=(2, 3, 4), keepdim=True) / INT8_LEVELS
    assert bool(((back - latent).abs() <= step / 2 * (1 + 1e-6)).all())
    blocks = decode_payload(encode(latent, "int8"), KEY)
    assert rel_l2(blocks, latent) < rel_l2(back, latent) < 0.02


def test_a_zero_channel_decodes_to_zeros():
    latent = leftover_latent()
    latent[:, 2] = 0.0
    for fmt in ("int8", "int8-channel"):
        back = decode_payload(encode(latent, fmt), KEY)
        assert torch.isfinite(back).all() and torch.equal(back[:, 2], latent[:, 2])


def test_bytes_on_the_wire_per_format():
    latent, count = leftover_latent(), math.prod(SHAPE)
    bodies = {fmt: len(read_header(encode(latent, fmt))[1]) for fmt in ("fp32", "bf16", "int8", "int8-channel")}
    assert bodies == {"fp32": 4 * count, "bf16": 2 * count, "int8": count + 4 * math.ceil(count / INT8_BLOCK),
                      "int8-channel": count + 4 * 16}
    assert len(encode(latent, "fp32")) - bodies["fp32"] < 400   # the header is small


def test_encoding_is_deterministic():
    latent = leftover_latent()
    assert encode(latent, "int8") == encode(latent.clone(), "int8")


@pytest.mark.parametrize("where", ["body", "header", "cut"])
def test_a_corrupted_payload_is_refused_by_its_checksum(where):
    payload = bytearray(encode(leftover_latent(), "int8"))
    header_end = len(payload) - len(read_header(bytes(payload))[1])
    if where == "body":
        payload[header_end + 100] ^= 0x01
    elif where == "header":
        seed_at = payload.index(b'"seed": 7')
        payload[seed_at + 8] = ord("9")   # still valid JSON: only the checksum can tell
    else:
        del payload[-1]
    with pytest.raises(PayloadError, match=r"^x\.wlat: checksum mismatch .* export and upload it again"):
        decode_payload(bytes(payload), KEY, source="x.wlat")


def test_a_file_that_is_no_payload_is_refused():
    with pytest.raises(PayloadError, match=r"^img\.png is not a wan-accel latent payload .*" + MAGIC.decode()):
        decode_payload(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, KEY, source="img.png")
    with pytest.raises(PayloadError, match="its header is unreadable"):
        decode_payload(MAGIC + b"\x05\0\0\0{bad}", KEY)


@pytest.mark.parametrize("changed, named", [
    (dict(seed=8), "seed 8 (this run: 7)"),
    (dict(steps=10), "total steps 10 (this run: 8)"),
    (dict(split_step=4), "split step 4 (this run: 3)"),
])
def test_a_payload_of_another_run_is_refused_naming_the_field(changed, named):
    payload = encode(leftover_latent(), "fp32", **changed)
    with pytest.raises(PayloadError, match=r"^p belongs to another run: " + re.escape(named)):
        decode_payload(payload, KEY, source="p")


def test_another_shape_and_several_fields_are_all_named():
    payload = encode(leftover_latent(shape=(1, 16, 3, 6, 12)), "bf16", seed=1)
    with pytest.raises(PayloadError) as refused:
        decode_payload(payload, KEY)
    assert ("latent shape [1, 16, 3, 6, 12] (this run: [1, 16, 3, 6, 10]); seed 1 (this run: 7)"
            in str(refused.value))
    assert "same image size, length, seed, steps, split step, sampler, scheduler and cfg" in str(refused.value)


def test_without_an_expected_run_any_intact_payload_decodes():
    latent = leftover_latent()
    assert torch.equal(decode_payload(encode(latent, "fp32", seed=99)), latent)


def test_nan_unknown_formats_and_empty_latents_are_refused_at_export():
    latent = leftover_latent()
    latent[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(PayloadError, match="NaN or infinite values"):
        encode(latent, "int8")
    with pytest.raises(PayloadError, match="transfer format 'fp8' is unknown; use one of fp32, bf16, int8"):
        encode(leftover_latent(), "fp8")
    with pytest.raises(PayloadError, match="cannot be exported"):
        encode(torch.zeros(1, 16, 0, 4, 4), "fp32")
    with pytest.raises(PayloadError, match="dtype torch.float64 cannot be exported"):
        encode(leftover_latent().double(), "fp32")


HISTORY_KEY = RunKey(SHAPE, seed=7, steps=8, split_step=3, sampling="uni_pc simple cfg 1")
SIGMAS = [1.0, 0.9375, 0.875]


def predictions() -> list[torch.Tensor]:
    """Three predictions of very different scales, as a sampler's first steps give them."""
    return [leftover_latent(seed) * scale for seed, scale in ((1, 1.0), (2, 0.01), (3, 50.0))]


def test_a_history_round_trips_bit_exact_in_fp32_with_its_sigmas():
    outputs = predictions()
    history = decode_history(encode_history(outputs, SIGMAS, "fp32", HISTORY_KEY), HISTORY_KEY)
    assert history.sigmas == tuple(SIGMAS) and len(history.outputs) == 3
    assert all(torch.equal(got, sent) for got, sent in zip(history.outputs, outputs))


def test_each_prediction_of_a_history_has_its_own_int8_scales():
    outputs = predictions()
    payload = encode_history(outputs, SIGMAS, "int8-channel", HISTORY_KEY)
    history = decode_history(payload, HISTORY_KEY)
    for got, sent in zip(history.outputs, outputs):
        step = sent.abs().amax(dim=(2, 3, 4), keepdim=True) / INT8_LEVELS   # its own channel's step, not 50x's
        assert bool(((got - sent).abs() <= step / 2 + 1e-6 * sent.abs().amax()).all())
    assert rel_l2(history.outputs[1], outputs[1]) < 0.01
    assert len(payload) - 3 * (math.prod(SHAPE) + 4 * 16) < 600   # 3 x (1 byte a value + a scale a channel)


def test_the_sampling_of_another_run_is_named():
    payload = encode_history(predictions(), SIGMAS, "fp32", HISTORY_KEY)
    euler = RunKey(SHAPE, seed=7, steps=8, split_step=3, sampling="euler simple cfg 1")
    with pytest.raises(PayloadError, match=r"belongs to another run: sampling 'uni_pc simple cfg 1' \(this run: "
                                           r"'euler simple cfg 1'\)"):
        decode_history(payload, euler)


def test_a_payload_of_the_other_kind_is_refused_naming_both_nodes():
    latent = encode(leftover_latent(), "fp32")
    history = encode_history(predictions(), SIGMAS, "fp32", HISTORY_KEY)
    with pytest.raises(PayloadError, match=r"p is a latent payload \(written by Export Latent\); this node reads a "
                                           r"history payload \(written by Split Sampler \(stage A\)\)"):
        decode_history(latent, source="p")
    with pytest.raises(PayloadError, match="is a history payload"):
        decode_payload(history)


def test_an_empty_or_unpaired_history_is_refused_at_export():
    with pytest.raises(PayloadError, match="stage A made no model call before step 3"):
        encode_history([], [], "fp32", HISTORY_KEY)
    with pytest.raises(PayloadError, match="got 3 predictions, 2 sigmas"):
        encode_history(predictions(), SIGMAS[:2], "fp32", HISTORY_KEY)
    mixed = predictions()
    mixed[2] = mixed[2][..., :4]
    with pytest.raises(PayloadError, match="cannot share one payload"):
        encode_history(mixed, SIGMAS, "fp32", HISTORY_KEY)
