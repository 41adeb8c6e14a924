"""fp8 Linear weights in a real T5-family encoder: ``transformers``' ``UMT5EncoderModel``, tiny config, random weights.

Every ``nn.Linear`` (q, k, v, o, wi_0, wi_1, wo of every block) is replaced by :class:`Fp8Linear`; embeddings,
norms and the relative-attention bias stay in full precision. The output token embeddings are compared with
the unquantised model's (fp32), per token: worst cosine, which token, mean relative error. The same model with
all weights in bf16 is measured alongside as the yardstick of "bf16 quality".
"""
from __future__ import annotations

import copy
import sys

import pytest
import torch

from wan_accel_kernels.fp8 import quantize_linears


def _import_umt5():
    """``transformers``' UMT5 classes; a torchaudio whose compiled part cannot load is hidden from it first.

    Called at collection, before any in-process host test imports ``comfy`` (which changes how a broken
    torchaudio looks to ``transformers``)."""
    try:
        import torchaudio  # noqa: F401  (transformers imports it when installed)
    except Exception:
        sys.modules["torchaudio"] = None
    transformers = pytest.importorskip("transformers")
    return transformers.UMT5Config, transformers.UMT5EncoderModel


UMT5_CLASSES = _import_umt5()


class _FloatWeightView(torch.nn.Module):
    """Shows ``transformers``' T5 FFN a float ``wo.weight``: it casts the FFN input to that dtype (an int8 workaround)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.weight = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _tiny_umt5(layers: int, seed: int = 0):
    config_cls, model_cls = UMT5_CLASSES
    torch.manual_seed(seed)
    config = config_cls(vocab_size=512, d_model=256, d_kv=32, d_ff=512, num_layers=layers, num_heads=8,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0)
    return model_cls(config).eval()


def _fp8_copy(model, granularity: str, compute_dtype: torch.dtype | None = None):
    quantized = copy.deepcopy(model)
    replaced = quantize_linears(quantized, granularity, compute_dtype=compute_dtype)
    for block in quantized.encoder.block:
        ffn = block.layer[-1].DenseReluDense
        ffn.wo = _FloatWeightView(ffn.wo)
    return quantized, replaced


def _compare(output: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    cosine = torch.nn.functional.cosine_similarity(output, reference, dim=-1).flatten()
    relative = ((output - reference).norm(dim=-1) / reference.norm(dim=-1)).flatten()
    worst = int(cosine.argmin())
    return {"worst_cos": float(cosine[worst]), "worst_token": worst, "mean_cos": float(cosine.mean()),
            "mean_rel": float(relative.mean()), "max_rel": float(relative.max())}


def _measure(layers: int) -> dict[str, dict[str, float]]:
    model = _tiny_umt5(layers)
    ids = torch.randint(2, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(input_ids=ids).last_hidden_state
        results = {}
        for name, granularity, compute in (("fp8 per_row", "per_row", None), ("fp8 per_tensor", "per_tensor", None),
                                           ("fp8 per_row, bf16 compute", "per_row", torch.bfloat16)):
            quantized, replaced = _fp8_copy(model, granularity, compute)
            assert replaced == 7 * layers
            results[name] = _compare(quantized(input_ids=ids).last_hidden_state, reference)
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        results["all weights bf16"] = _compare(bf16(input_ids=ids).last_hidden_state.float(), reference)
    print(f"\ntiny UMT5EncoderModel, {layers} block(s), 48 tokens, vs fp32:")
    for name, r in results.items():
        print(f"  {name:27s} worst cos {r['worst_cos']:.6f} (token {r['worst_token']}), mean cos "
              f"{r['mean_cos']:.6f}, mean rel err {r['mean_rel']:.5f}, max rel err {r['max_rel']:.5f}")
    return results


def test_one_block_meets_cosine_0999_on_every_token():
    results = _measure(layers=1)
    assert results["fp8 per_row"]["worst_cos"] >= 0.999
    assert results["fp8 per_row"]["mean_rel"] < 0.035
    assert results["fp8 per_row, bf16 compute"]["worst_cos"] >= 0.999


def test_four_blocks_error_grows_with_depth_and_stays_bounded():
    results = _measure(layers=4)
    fp8, bf16 = results["fp8 per_row"], results["all weights bf16"]
    assert fp8["worst_cos"] >= 0.996 and fp8["mean_cos"] >= 0.998
    assert fp8["mean_rel"] < 0.06
    assert bf16["mean_rel"] < fp8["mean_rel"] / 4
    assert results["fp8 per_row, bf16 compute"]["worst_cos"] >= 0.996
